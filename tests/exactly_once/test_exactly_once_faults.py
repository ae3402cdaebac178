"""Exactly-once under faults, on Apache Kafka: a scorer SIGKILLed 3 times mid-stream (and the same run at
least once, which must show duplicates), a 1 -> 2 -> 1 rebalance, and a zombie frozen past its session
timeout.

An independent read_committed consumer of predictions.v1 counts every event_id. Each test prints a FAULT line.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from schemas import topics
from tests.exactly_once.ledger import committed_event_ids, output_ahead, tally
from tests.exactly_once.scorers import SCORER_START_S, Scorer, scorer_env
from tests.helpers.faults import Stopwatch, Stream, keyed, report
from tests.helpers.pipeline import make_events, wait_for

pytestmark = pytest.mark.slow

KILL_POOL = 90_000
"""Events the SIGKILL run may send (~500 a second): its stream runs until a few seconds after the third kill,
so every kill lands while events flow however long each scorer takes to load TensorFlow."""
KILL_TAIL_S = 5.0
"""How long the stream runs on after the third kill."""
KILL_AFTER_OUTPUT = 300
"""A scorer is SIGKILLed once it published this many predictions (it is then catching up with the events
that came in while it started) and the output runs ahead of the committed input offsets."""


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
async def test_scorer_sigkilled_three_times_mid_stream(
    guarantee: str, apache_kafka: KafkaSettings, redis_url: str, unique_id: str, tmp_path: Path
) -> None:
    await ensure_topics(apache_kafka)
    env = scorer_env(apache_kafka, redis_url, guarantee)
    events = make_events(KILL_POOL, f"k{unique_id}", seed=21)
    features = topic_name(apache_kafka, topics.CUSTOMER_FEATURES)
    group = apache_kafka.topic_prefix + topics.SCORER.group
    clock = Stopwatch()
    stream = Stream(apache_kafka, features, keyed(events), chunk=60, tick_s=0.1).start()
    scorer = Scorer(env, tmp_path / "scorer.log")
    kills: list[tuple[float, int]] = []  # (seconds, events sent) at each SIGKILL
    try:
        for _ in range(3):
            await output_ahead(apache_kafka, group, KILL_AFTER_OUTPUT, ahead=50, within_s=SCORER_START_S,
                               freeze=scorer.freeze, thaw=scorer.thaw)
            scorer.kill()  # frozen: it meets exactly the state output_ahead saw
            kills.append((clock(), stream.sent))
            scorer = Scorer(env, tmp_path / "scorer.log")
        await asyncio.sleep(KILL_TAIL_S)
        sent = await stream.finished(stop=True)
        expected = {str(e.event_id) for e in events[:sent]}
        seen = await committed_event_ids(apache_kafka, expected, within_s=SCORER_START_S)
    finally:
        scorer.kill()
    figures = tally(seen, expected)
    report(f"scorer SIGKILL x3 ({guarantee})", **figures, events=sent, seconds_sent_at_kills=kills,
           total_s=clock())
    assert figures["lost"] == 0 and figures["distinct"] == sent
    assert sent < len(events)  # the pool outlasted the kills: each landed while events flowed
    if guarantee == "exactly-once":
        assert figures["duplicates"] == 0
    else:  # the same run without transactions repeats what was published but not committed
        assert figures["duplicates"] > 0


async def test_rebalance_one_two_one_exactly_once(
    apache_kafka: KafkaSettings, redis_url: str, unique_id: str, tmp_path: Path
) -> None:
    await ensure_topics(apache_kafka)
    env = scorer_env(apache_kafka, redis_url, "exactly-once")
    events = make_events(10_000, f"r{unique_id}", seed=22)  # a pool: the stream runs until stopped
    features = topic_name(apache_kafka, topics.CUSTOMER_FEATURES)
    first = Scorer(env, tmp_path / "scorer-1.log")
    second: Scorer | None = None
    try:
        await wait_for(first.assigned_more_than(0), within_s=SCORER_START_S)
        stream = Stream(apache_kafka, features, keyed(events), chunk=20, tick_s=0.2).start()
        second = Scorer(env, tmp_path / "scorer-2.log")
        await wait_for(second.assigned_more_than(0), within_s=SCORER_START_S)  # 1 -> 2
        await asyncio.sleep(3)  # both members score
        shared = (first.assignments()[-1], second.assignments()[-1])
        second.process.terminate()  # 2 -> 1: the leaving member commits and gives its partitions back
        second_exit = await asyncio.to_thread(second.process.wait, 60)
        await asyncio.sleep(2)
        sent = await stream.finished(stop=True)
        expected = {str(e.event_id) for e in events[:sent]}
        seen = await committed_event_ids(apache_kafka, expected, within_s=SCORER_START_S)
        first_alive = first.process.poll() is None
    finally:
        first.kill()
        if second is not None:
            second.kill()
    figures = tally(seen, expected)
    report("rebalance 1->2->1 scorers (exactly-once)", **figures, partitions_while_two=shared,
           second_exit=second_exit)
    assert figures == {"records": sent, "distinct": sent, "lost": 0, "duplicates": 0}
    assert first_alive and second_exit == 0 and all(shared)


async def test_zombie_scorer_frozen_past_its_session_timeout_publishes_nothing_visible(
    apache_kafka: KafkaSettings, redis_url: str, unique_id: str, tmp_path: Path
) -> None:
    await ensure_topics(apache_kafka)
    # The zombie commits every 2 s, so when it is frozen its transactions hold output most of the time.
    zombie_env = scorer_env(apache_kafka, redis_url, "exactly-once", checkpoint_interval_ms="2000")
    events = make_events(10_000, f"z{unique_id}", seed=23)
    features = topic_name(apache_kafka, topics.CUSTOMER_FEATURES)
    zombie = Scorer(zombie_env, tmp_path / "zombie.log")
    heir: Scorer | None = None
    try:
        await wait_for(zombie.assigned_more_than(0), within_s=SCORER_START_S)
        heir = Scorer(scorer_env(apache_kafka, redis_url, "exactly-once"), tmp_path / "heir.log")
        stream = Stream(apache_kafka, features, keyed(events), chunk=20, tick_s=0.2).start()
        await wait_for(heir.assigned_more_than(0), within_s=SCORER_START_S)
        await asyncio.sleep(3)
        zombie.freeze()  # mid-transaction
        frozen = Stopwatch()
        before = len(heir.assignments())
        await wait_for(heir.assigned_more_than(before), within_s=60)  # its session timed out: all to the heir
        moved_s, heir_partitions = frozen(), heir.assignments()[-1]
        await asyncio.sleep(2)
        zombie.thaw()  # it resumes mid-transaction with partitions that moved
        await asyncio.sleep(10)
        sent = await stream.finished(stop=True)
        expected = {str(e.event_id) for e in events[:sent]}
        seen = await committed_event_ids(apache_kafka, expected, within_s=SCORER_START_S)
        uncommitted = await committed_event_ids(apache_kafka, expected, within_s=30,
                                                isolation="read_uncommitted")
        zombie_log = zombie.log_path.read_text(errors="replace")
        heir_log = heir.log_path.read_text(errors="replace")
    finally:
        zombie.kill()
        if heir is not None:
            heir.kill()
    figures = tally(seen, expected)
    aborted = tally(uncommitted, expected)["duplicates"]  # in the log, never visible to read_committed
    report("zombie scorer SIGSTOP past session timeout (exactly-once)", **figures, moved_after_s=moved_s,
           heir_partitions=heir_partitions, aborted_records_in_log=aborted)
    assert figures == {"records": sent, "distinct": sent, "lost": 0, "duplicates": 0}
    assert heir_partitions == 2 * apache_kafka.kafka_partitions  # both feature topics moved to the heir
    assert aborted > 0  # the zombie's open transaction reached the log, and stayed invisible
    assert "ProducerFenced" in zombie_log  # what it sent after the thaw was refused
    assert "ProducerFenced" not in heir_log  # and it never took a partition back by starting a producer
