"""While no broker answers: /ready is 503 and names the cause; the outage is logged once, not per retry."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from streamscore.embedded import TansuBroker
from tests.helpers.api import api_settings, running_api
from tests.helpers.faults import kill_broker, report, service_env, service_process
from tests.kafka_clients.test_services_on_apache_kafka import three_address_list

pytestmark = [pytest.mark.engines, pytest.mark.slow]
OUTAGE_S = 10


async def ready_until(client: httpx.AsyncClient, done: Callable[[httpx.Response], bool],
                      within_s: float) -> httpx.Response:
    deadline = time.monotonic() + within_s
    while True:
        answer = await client.get("/ready")
        if done(answer) or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.2)


async def test_ready_is_503_naming_the_cause_while_no_broker_answers_and_the_outage_is_logged_once(
    database_url: str, redis_url: str, inference_engine: InferenceEngine, caplog: pytest.LogCaptureFixture
) -> None:
    broker = TansuBroker().start()
    try:
        kafka = KafkaSettings(kafka_bootstrap=three_address_list(broker.bootstrap), kafka_partitions=1,
                              kafka_idempotent=False, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
        async with running_api(api_settings(kafka, database_url, redis_url), inference_engine) as api:
            up = await ready_until(api.client, lambda a: a.status_code == 200, 30)
            assert up.status_code == 200, up.text
            with caplog.at_level(logging.INFO, logger="infra.kafka"):
                kill_broker(broker)
                down = await ready_until(api.client, lambda a: "no Kafka broker answers" in a.text, 15)
                assert down.status_code == 503, down.text
                broker_status = down.json()["dependencies"]["broker"]
                assert broker_status["ok"] is False and broker.bootstrap in broker_status["error"]
                await asyncio.sleep(5)  # five more failed checks of the topic guard
                assert (await api.client.get("/ready")).status_code == 503
                broker.start()  # on the same port
                back = await ready_until(api.client, lambda a: a.status_code == 200, 30)
                assert back.status_code == 200, back.text
            outage = [(r.levelname, r.getMessage()) for r in caplog.records
                      if getattr(r, "dependency", None) == "Kafka"]
    finally:
        broker.stop()
    assert [level for level, _ in outage] == ["ERROR", "INFO"], outage
    assert outage[0][1].startswith("Kafka unavailable: no Kafka broker answers at")
    recovered = next(r for r in caplog.records if r.getMessage() == "Kafka available again")
    assert recovered.failures >= 5 and recovered.down_s >= 5  # type: ignore[attr-defined]


async def test_a_consumer_logs_a_broker_outage_in_a_few_lines_not_one_per_retry(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    broker = TansuBroker().start()
    log = tmp_path / "sink.log"
    settings = KafkaSettings(kafka_bootstrap=three_address_list(broker.bootstrap), kafka_partitions=1,
                             kafka_idempotent=False, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    sink = service_process("sink", service_env(settings, database_url, redis_url), log)
    try:
        await _until(lambda: '"sink starting"' in log.read_text(), 60, sink, log)
        await asyncio.sleep(2)
        before = len(log.read_text().splitlines())
        kill_broker(broker)
        await asyncio.sleep(OUTAGE_S)
        broker.start()
        await _until(lambda: "Kafka available again" in log.read_text(), 30, sink, log)
        await asyncio.sleep(2)
    finally:
        sink.terminate()
        sink.wait(30)
        broker.stop()
    during = [orjson.loads(line) for line in log.read_text().splitlines()[before:] if line.startswith("{")]
    outage = [(line["level"], line["msg"]) for line in during if line.get("dependency") == "Kafka"]
    assert [level for level, _ in outage] == ["error", "info"], outage
    assert outage[0][1].startswith("Kafka unavailable: no Kafka broker answers at"), outage
    assert next(line for line in during if line.get("dependency") == "Kafka" and line["level"] == "info")[
        "failures"] >= OUTAGE_S - 2
    report("consumer log during a broker outage", outage_s=OUTAGE_S, lines=len(during))
    # Without the collapsing filter (infra.logging.RepeatFilter) this outage logged 454 lines.
    assert len(during) <= 40, "\n".join(str(line) for line in during)


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


async def _until(
    done: Callable[[], bool], within_s: float, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + within_s
    while not done():
        assert process.poll() is None, _text(log)
        assert time.monotonic() < deadline, _text(log)
        await asyncio.sleep(0.2)
