"""While no broker answers: /ready is 503 and names the cause; the outage is logged once, not per retry."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from streamscore.embedded import TansuBroker
from tests.helpers.api import api_settings, running_api
from tests.helpers.faults import kill_broker
from tests.kafka_clients.test_services_on_apache_kafka import three_address_list

pytestmark = [pytest.mark.engines, pytest.mark.slow]


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
