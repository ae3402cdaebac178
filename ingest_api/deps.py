"""Per-process clients (built in the lifespan) and the `Annotated` dependency aliases routes use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ingest_api.settings import ApiSettings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from ingest_api.auth_deps import SecurityState
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
    producer: AIOKafkaProducer
    engine: InferenceEngine
    security: SecurityState | None = None  # build with ingest_api.auth_deps.build_security in the lifespan
    sync_scorer: DirectScorer | DynamicBatcher | None = None  # set by the lifespan (ingest_api.main)
    background: BackgroundPublisher | None = None  # set by the lifespan (ingest_api.main)
    metrics: ApiMetrics | None = None  # set by create_app (ingest_api.main)


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
