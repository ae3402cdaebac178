"""`streamscore tail predictions` starts at the real end of the topic, even where the broker's end trails."""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Any

import orjson
import pytest

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from schemas import topics
from streamscore.demo import segment_text
from streamscore.tail import _show_prediction
from tests.helpers.pipeline import produce
from tests.helpers.stack import CLI, LineReader


def test_tail_prints_only_what_is_published_after_it_started(kafka_settings: KafkaSettings) -> None:
    asyncio.run(ensure_topics(kafka_settings))
    topic = topic_name(kafka_settings, topics.PREDICTIONS)
    old = [(f"c{i}".encode(), orjson.dumps({"customer_id": f"old-{i}"})) for i in range(100)]
    asyncio.run(produce(kafka_settings, topic, old))  # one batched send: on Tansu the listed end trails these
    env = {**os.environ, "STREAMSCORE_KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap,
           "STREAMSCORE_TOPIC_PREFIX": kafka_settings.topic_prefix, "STREAMSCORE_DEV_HOME": "/nonexistent"}
    tail = subprocess.Popen([*CLI, "tail", "predictions", "--json", "--limit", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors = LineReader(tail.stderr)  # type: ignore[arg-type]
    try:
        errors.wait_for("tailing", tail, timeout=60)
        new = [(b"n", orjson.dumps({"customer_id": f"new-{i}"})) for i in range(2)]
        asyncio.run(produce(kafka_settings, topic, new))
        stdout, _ = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, errors.text
    assert [orjson.loads(line)["customer_id"] for line in stdout.splitlines()] == ["new-0", "new-1"]


def test_cli_tables_label_the_segment_score(capsys: pytest.CaptureFixture[str]) -> None:
    prediction: dict[str, Any] = {"customer_id": "C-1",
                                  "recommendations": [{"product_id": "car", "probability": 0.61}],
                                  "propensity": 0.083, "segment": {"label": "high", "score": 92.4},
                                  "scored_at": "2026-12-01T22:00:00Z", "source": "event",
                                  "model_version": "v1"}
    assert segment_text(prediction["segment"]) == "high (value percentile 92)"
    assert _show_prediction(orjson.dumps(prediction), None, raw=False) == 1
    assert "segment high (value percentile 92)" in capsys.readouterr().out


def test_tail_without_a_broker_says_so_and_leaves_nothing_unclosed() -> None:
    from streamscore.embedded import free_port

    bootstrap = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "STREAMSCORE_KAFKA_BOOTSTRAP": bootstrap, "STREAMSCORE_DEV_HOME": "/nonexistent",
           "COLUMNS": "200"}
    done = subprocess.run([*CLI, "tail", "predictions"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"cannot reach Kafka at {bootstrap}" in done.stderr
    assert "Unclosed" not in done.stderr and "Traceback" not in done.stderr
