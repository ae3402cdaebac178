"""Kafka plumbing shared by the services: topic names with prefix, topic creation, producer options."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

from infra.connection_state import ConnectionState
from infra.kafka_connection import connection_options
from infra.kafka_diagnosis import diagnose
from infra.rounds import sleep_or_stop
from infra.settings import KafkaSettings
from schemas import topics

log = logging.getLogger(__name__)


def topic_name(settings: KafkaSettings, base: str) -> str:
    """The concrete topic name for a contract topic, after the configured prefix."""
    return f"{settings.topic_prefix}{base}"


def producer_options(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka producer options: acks=all always, idempotence when the broker supports it."""
    return {
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotent,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 30_000,
        # A restarted memory-only broker recreates topics, perhaps with another partition count: without
        # this, cached metadata kept sending to partitions that no longer exist for 5 minutes.
        "metadata_max_age_ms": 5_000,
        "compression_type": None if settings.kafka_compression == "none" else settings.kafka_compression,
    }


async def ensure_topics(settings: KafkaSettings, names: tuple[str, ...] = topics.ALL_TOPICS) -> None:
    """Create the contract topics that are missing, with the configured partition count."""
    admin = AIOKafkaAdminClient(**connection_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [topic_name(settings, name) for name in names]
        missing = [
            NewTopic(name, settings.kafka_partitions, settings.kafka_replication_factor)
            for name in wanted
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.info("topics created concurrently by another process")
            log.info("created topics", extra={"topics": [t.name for t in missing]})
    finally:
        await admin.close()


async def any_broker_answers(client: AIOKafkaClient) -> int:
    """Ask every broker the client knows for metadata at once; how many brokers the first answer lists.
    Raises the last error when none answers.

    Asked on connections that carry no produce requests (aiokafka's coordination group; a producer uses it
    only for InitProducerId): a broker answers one connection's requests in turn, and an acks=all produce
    waiting for a follower that just died (until the controller fences it, seconds) held a metadata request
    on the producer's connections back that long, while the other brokers served.
    """
    nodes = [broker.nodeId for broker in client.cluster.brokers()]
    if not nodes:
        raise ConnectionError("no broker known yet")
    asks = [asyncio.ensure_future(client.send(node, MetadataRequest([]), group=ConnectionGroup.COORDINATION))
            for node in nodes]
    error: BaseException = ConnectionError("the broker returned no brokers")
    try:
        for answered in asyncio.as_completed(asks):
            try:
                response = await answered
            except Exception as failure:  # a broker down: another may answer
                error = failure
                continue
            if response.brokers:
                return len(response.brokers)
        raise error
    finally:
        for ask in asks:
            ask.cancel()
        await asyncio.gather(*asks, return_exceptions=True)


INCARNATION_TOPIC = "_streamscore.incarnation"
"""Created by the topic guard next to the contract topics; only its disappearance matters."""


class TopicGuard:
    """Notices contract topics the broker lost (a memory-only broker restarted) and recreates them.

    Checks with an all-topics metadata request, which never auto-creates a topic. A topic that exists with
    a different partition count than configured (auto-created by a client before the guard ran) is logged,
    not deleted: it may hold accepted records. Clients see the new layout within metadata_max_age_ms.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        names: tuple[str, ...] = topics.ALL_TOPICS,
        on_restart: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._names = {topic_name(settings, name): name for name in names}
        # A topic no client ever subscribes to or produces to, so nothing auto-creates it: if it vanishes,
        # the broker restarted empty, even when clients already auto-created the contract topics again.
        self._marker = topic_name(settings, INCARNATION_TOPIC)
        self._marker_seen = False
        self._on_restart = on_restart
        self.problems: dict[str, str] = {}  # concrete topic -> what is wrong with it
        self.checked = False
        self._warned: set[str] = set()
        self._odd: set[str] = set()
        self.connection = ConnectionState("Kafka", log)

    def ok(self, topic: str | None = None) -> bool:
        """No known problem with `topic` (or with any guarded topic)."""
        return not self.problems if topic is None else topic not in self.problems

    async def check(self) -> dict[str, str]:
        """Look once; recreate missing topics; the problems that remain."""
        settings = self._settings
        admin = AIOKafkaAdminClient(**connection_options(settings), request_timeout_ms=5000)
        await admin.start()
        try:
            metadata = await admin._client.fetch_all_metadata()
            restarted = self._marker_seen and self._marker not in metadata.topics()
            missing = [name for name in [*self._names, self._marker] if name not in metadata.topics()]
            if missing:
                # The marker's first creation is routine; any other missing topic was lost.
                lost = [name for name in missing if name != self._marker or self._marker_seen]
                if lost:
                    log.error("broker lost topics; recreating them", extra={"topics": missing})
                else:
                    log.info("creating the broker-incarnation marker topic", extra={"topic": self._marker})
                try:
                    await admin.create_topics(
                        [NewTopic(n, 1 if n == self._marker else settings.kafka_partitions,
                                  settings.kafka_replication_factor) for n in missing]
                    )
                except TopicAlreadyExistsError:
                    log.info("topics recreated concurrently by another process")
                metadata = await admin._client.fetch_all_metadata()
        finally:
            await admin.close()
        self._marker_seen = self._marker in metadata.topics()
        if restarted:
            log.error("the broker restarted empty (its topics were recreated); reading them from the start")
            if self._on_restart is not None:
                await self._on_restart()
        problems: dict[str, str] = {}
        for name in self._names:
            partitions = metadata.partitions_for_topic(name)
            if partitions is None:
                problems[name] = "is missing on the broker"
            elif len(partitions) != settings.kafka_partitions and name not in self._odd:
                # Auto-created by a client's metadata request before the guard ran (Tansu does that). It
                # works (keys still map to one partition each) and may hold accepted records: keep it.
                log.warning("topic has an unexpected partition count", extra={
                    "topic": name, "partitions": len(partitions), "expected": settings.kafka_partitions})
                self._odd.add(name)
        for name, problem in problems.items():
            if name not in self._warned:
                log.error("topic problem", extra={"topic": name, "problem": problem})
        self._warned = set(problems)
        self.problems, self.checked = problems, True
        return problems

    async def run_forever(self, interval_s: float = 1.0) -> None:
        """Check every `interval_s`; an unreachable broker is left to the clients' own retries, and its
        outage logged once per change (self.connection), with the cause named when it starts."""
        while True:
            try:
                await self.check()
            except Exception as error:
                await self._failed(error)
            else:
                self.connection.succeeded()
            await sleep_or_stop(interval_s)

    async def _failed(self, error: Exception) -> None:
        # Probed on every kind of failure: a dying broker surfaces as KafkaConnectionError or as a bare
        # KafkaError("Unable to get cluster metadata ..."), depending on when the check met it.
        diagnosis = await diagnose(self._settings)  # names a refused setting, or each address's error
        self.connection.failed(diagnosis.message if diagnosis.verdict != "ok" else repr(error)[:300])


IDEMPOTENCE_SETTING = "STREAMSCORE_KAFKA_IDEMPOTENT"


async def resolve_idempotence(settings: KafkaSettings) -> bool:
    """Whether producers may be idempotent: the setting, turned off with one warning when the broker
    cannot grant a producer id (InitProducerId), as Tansu cannot; an unreachable broker still raises."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError, KafkaError

    if not settings.kafka_idempotent:
        return False
    probe = AIOKafkaProducer(**connection_options(settings), acks="all", enable_idempotence=True,
                             request_timeout_ms=10_000)
    sender_log = logging.getLogger("aiokafka.producer.sender")
    level = sender_log.level
    sender_log.setLevel(logging.CRITICAL)  # its own ERROR line would repeat the one warning below
    try:
        await probe.start()
    except KafkaConnectionError:
        raise
    except KafkaError as error:
        log.warning(
            f"the broker at {settings.kafka_bootstrap} does not support idempotent producers "
            f"(InitProducerId failed: {type(error).__name__}); producing without idempotence "
            f"(acks=all still). Set {IDEMPOTENCE_SETTING}=false to skip this check.",
            extra={"bootstrap": settings.kafka_bootstrap, "error": str(error)},
        )
        return False
    finally:
        sender_log.setLevel(level)
        await probe.stop()
    return True
