"""Apache Kafka from Maven jars: a SASL_SSL listener, a three-node cluster under kill and restart,
transactions, and a failed start that says why."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from aiokafka.helpers import create_ssl_context

from streamscore.kafka_classpath import cache_dir, resolve_classpath
from streamscore.kafka_server import KafkaCluster
from streamscore.kafka_tls import make_broker_tls
from tests.helpers import engines

pytestmark = pytest.mark.slow


async def create_topics(options: dict, topics: list[str], replicas: int) -> None:
    """Create topics of 3 partitions with `replicas` replicas each."""
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, replicas) for topic in topics])
    finally:
        await admin.close()


async def transactional_round_trip(options: dict, topic: str, replicas: int, count: int = 50,
                                   create: bool = True) -> list[bytes]:
    """Create a topic (unless made already), commit `count` records in one transaction, read them back
    read_committed."""
    if create:
        await create_topics(options, [topic], replicas)
    producer = AIOKafkaProducer(transactional_id=f"tx-{topic}", **options)
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(count):
                await producer.send(topic, f"v{i}".encode(), key=f"k{i}".encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", isolation_level="read_committed",
                                **options)
    await consumer.start()
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(values) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            values += [record.value for part in batch.values() for record in part]
    finally:
        await consumer.stop()
    return values


async def test_sasl_ssl_listener_takes_the_scram_user_and_refuses_a_wrong_password(
    kafka_cluster_secure: KafkaCluster, tmp_path: Path
) -> None:
    options = kafka_cluster_secure.client_options()
    assert options["security_protocol"] == "SASL_SSL" and kafka_cluster_secure.cafile is not None
    values = await transactional_round_trip(options, f"secure-{uuid.uuid4().hex[:6]}", 1)
    assert sorted(values) == sorted(f"v{i}".encode() for i in range(50))

    wrong = AIOKafkaProducer(**{**options, "sasl_plain_password": "not-the-password"})
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(wrong.start(), 30)
    await wrong.stop()
    other_ca = make_broker_tls(tmp_path / "other", "x" * 12).cafile  # a CA that did not sign the broker
    untrusted = AIOKafkaProducer(**{**options, "ssl_context": create_ssl_context(cafile=str(other_ca))})
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(untrusted.start(), 30)
    await untrusted.stop()


async def test_three_nodes_keep_transactions_through_a_kill_and_a_restart(
    kafka_cluster3: KafkaCluster,
) -> None:
    options = kafka_cluster3.client_options()
    assert len(kafka_cluster3.bootstrap.split(",")) == 3
    first = await transactional_round_trip(options, f"three-{uuid.uuid4().hex[:6]}", 3)
    assert len(first) == 50
    # Made while all three run: until the controller fences a killed broker (its session, ~9 s), metadata
    # may still name it, and an admin request sent to it waits out its whole timeout.
    down = f"down-{uuid.uuid4().hex[:6]}"
    await create_topics(options, [down], 3)
    kafka_cluster3.kill(2)  # SIGKILL: 2 of 3 replicas stay in sync, min.insync.replicas=2 still holds
    assert not kafka_cluster3.members[1].running
    during = await transactional_round_trip(options, down, 3, create=False)
    assert len(during) == 50
    began = time.monotonic()
    await asyncio.to_thread(kafka_cluster3.restart, 2)
    print(f"KAFKA node 2 back in {time.monotonic() - began:.1f} s")
    after = await transactional_round_trip(options, f"back-{uuid.uuid4().hex[:6]}", 3)
    assert len(after) == 50 and all(node.running for node in kafka_cluster3.members)


def test_a_node_that_cannot_start_fails_with_the_last_lines_of_its_log() -> None:
    if reason := engines.no_maven_kafka():
        engines.engine_missing(reason)
    cluster = KafkaCluster(nodes=1)
    taken = socket.create_server(("127.0.0.1", cluster.members[0].client_port))  # its port is taken
    with taken, pytest.raises(RuntimeError, match="node 1 exited") as failed:
        cluster.start(timeout_s=60)
    assert "node-1.log" in str(failed.value) and "Unable to start acceptor for CLIENT" in str(failed.value)
    assert cluster.home is not None and not cluster.home.exists()  # stopped and removed


def test_the_classpath_is_resolved_once_per_pom_and_then_read_from_the_cache() -> None:
    if reason := engines.no_maven_kafka():
        engines.engine_missing(reason)
    resolve_classpath()
    began = time.monotonic()
    classpath = resolve_classpath()
    assert time.monotonic() - began < 1.0 and (cache_dir() / "classpath.txt").is_file()
    assert "kafka_2.13-" in classpath and "log4j-slf4j-impl" in classpath and ".jar" in classpath
