"""Exactly-once in one process on Apache Kafka: every event once on predictions.v1, the offsets in the
transactions, counted in /metrics and shown in the stats hash; and Tansu (no transactions) is refused."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from prometheus_client import REGISTRY

from infra.kafka import ensure_topics, topic_name
from infra.process import REFUSED_EXIT_CODE, StartupRefused
from infra.settings import KafkaSettings
from models.engine import InferenceEngine
from schemas import topics
from scorer.app import build_app as build_scorer
from scorer.app import runtime_of
from streamscore.embedded import TansuBroker
from tests.exactly_once.ledger import committed_event_ids, group_offsets, tally
from tests.helpers.faults import keyed, service_process
from tests.helpers.pipeline import make_events, produce, scorer_settings


def transactions(outcome: str) -> float:
    """The scorer's scorer_transactions_total for one outcome."""
    return REGISTRY.get_sample_value("scorer_transactions_total", {"outcome": outcome}) or 0.0


async def test_exactly_once_scorer_publishes_each_event_once_and_commits_offsets_in_transactions(
    apache_kafka: KafkaSettings, inference_engine: InferenceEngine, unique_id: str
) -> None:
    await ensure_topics(apache_kafka)
    events = make_events(3000, f"x{unique_id}", seed=11)
    features = topic_name(apache_kafka, topics.CUSTOMER_FEATURES)
    before = transactions("committed")
    scorer = build_scorer(scorer_settings(apache_kafka, processing_guarantee="exactly-once",
                                          batch_max_records=200), engine=inference_engine)
    await scorer.start()
    try:
        await produce(apache_kafka, features, keyed(events))
        expected = {str(e.event_id) for e in events}
        seen = await committed_event_ids(apache_kafka, expected, within_s=90, quiet_s=1.0)
        snapshot = runtime_of(scorer).stats.snapshot()
    finally:
        await scorer.stop()
    figures = tally(seen, expected)
    assert figures == {"records": 3000, "distinct": 3000, "lost": 0, "duplicates": 0}
    group = apache_kafka.topic_prefix + topics.SCORER.group
    offsets = await group_offsets(apache_kafka, group)
    assert sum(offsets.values()) == 3000  # the transactions committed the consumer's offsets
    assert transactions("committed") > before
    assert snapshot["processing_guarantee"] == "exactly-once"


async def test_exactly_once_refuses_a_broker_without_transactions(unique_id: str) -> None:
    # A Tansu of its own (the suite's kafka_bootstrap may be Apache Kafka): InitProducerId with a
    # transactional id fails there, so the scorer must not start (the process exits 2 with that one line).
    broker = TansuBroker().start()
    try:
        kafka = KafkaSettings(kafka_bootstrap=broker.bootstrap, kafka_idempotent=False,
                              topic_prefix=f"t{unique_id}.")
        scorer = build_scorer(scorer_settings(kafka, processing_guarantee="exactly-once"))
        with pytest.raises(StartupRefused, match="exactly-once needs a broker with transactions"):
            await scorer.start()
        await scorer.stop()
    finally:
        broker.stop()


def test_the_scorer_process_exits_2_with_one_line_on_a_broker_without_transactions(tmp_path: Path) -> None:
    broker = TansuBroker().start()
    try:
        env = {"STREAMSCORE_KAFKA_BOOTSTRAP": broker.bootstrap, "STREAMSCORE_KAFKA_IDEMPOTENT": "false",
               "STREAMSCORE_PROCESSING_GUARANTEE": "exactly-once"}
        process = service_process("scorer", env, tmp_path / "scorer.log")
        code = process.wait(60)
    finally:
        broker.stop()
    lines = [orjson.loads(line) for line in (tmp_path / "scorer.log").read_text().splitlines()
             if line.startswith("{")]
    errors = [line["msg"] for line in lines if line["level"] in ("error", "critical")]
    assert code == REFUSED_EXIT_CODE
    assert len(errors) == 1 and "STREAMSCORE_PROCESSING_GUARANTEE=exactly-once" in errors[0]
