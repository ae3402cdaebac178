"""Kafka plumbing shared by the services: topic names with prefix, topic creation, producer options."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

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
        "compression_type": None if settings.kafka_compression == "none" else settings.kafka_compression,
    }


async def ensure_topics(settings: KafkaSettings, names: tuple[str, ...] = topics.ALL_TOPICS) -> None:
    """Create the contract topics that are missing, with the configured partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
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
