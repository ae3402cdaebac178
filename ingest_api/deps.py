"""Per-process clients (built in the lifespan) and the `Annotated` dependency aliases routes use."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from infra.kafka import TopicGuard
from infra.redis_client import redis_client
from ingest_api.settings import ApiSettings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from ingest_api.batching import DirectScorer, DynamicBatcher
    from ingest_api.metrics import ApiMetrics
    from ingest_api.publisher import BackgroundPublisher
    from models.engine import InferenceEngine


@dataclass
class Services:
    """Clients owned by one API process; created in the lifespan, closed on shutdown."""

    settings: ApiSettings
    db_engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    redis_probe: Redis  # /ready's own client: its ping may take the readiness deadline, not a read's budget
    producer: AIOKafkaProducer
    engine: InferenceEngine
    sync_scorer: DirectScorer | DynamicBatcher
    background: BackgroundPublisher  # the sync predictions onto predictions.v1, acks awaited on shutdown
    metrics: ApiMetrics
    topics: TopicGuard  # publishing stops while a topic is missing
    redis_paused_until: float = 0.0

    def redis_paused(self) -> bool:
        """True for redis_pause_seconds after a failed Redis read: reads go straight to Postgres."""
        return time.monotonic() < self.redis_paused_until

    def pause_redis(self) -> None:
        """Skip Redis reads for a while (a hung Redis must not cost every request a timeout)."""
        self.redis_paused_until = time.monotonic() + self.settings.redis_pause_seconds


def build_redis(settings: ApiSettings, timeout_s: float | None = None) -> Redis:
    """A Redis client whose every call (connect, read) gives up after `timeout_s` (redis_timeout_seconds)."""
    timeout_s = settings.redis_timeout_seconds if timeout_s is None else timeout_s
    return redis_client(settings.redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)


async def get_services(request: Request) -> Services:
    """The process's clients from app.state (async def: a sync dependency would cost a thread hop)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> ApiSettings:
    """The process settings."""
    return services.settings


async def get_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    """A session per request; the route (the boundary) commits, repositories never do."""
    async with services.sessionmaker() as session:
        yield session


async def get_redis(services: ServicesDep) -> Redis:
    """The shared Redis client."""
    return services.redis


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
RedisDep = Annotated[Redis, Depends(get_redis)]
