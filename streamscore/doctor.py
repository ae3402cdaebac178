"""`streamscore doctor`: the engines the services, tests and benchmarks would use, and whether they answer."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass

import typer
from rich.console import Console

from infra.kafka_diagnosis import diagnose
from infra.settings import DatabaseSettings, KafkaSettings, RedisSettings
from streamscore.engines import (
    docker_available,
    force_embedded,
    postgres_refusal,
    redis_refusal,
)
from streamscore.private_postgres import server_bindir


@dataclass(frozen=True)
class Finding:
    """One line of the report: what was looked at, and what was found."""

    what: str
    where: str
    ok: bool
    detail: str


def _source(variable: str) -> str:
    """Where a setting came from."""
    return variable if os.environ.get(variable) else f"{variable} unset: the default"


def _safe(url: str) -> str:
    """A URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"


def service_findings() -> list[Finding]:
    """The engines the services would connect to, as configured now."""
    database, redis = DatabaseSettings().database_url, RedisSettings().redis_url
    kafka = KafkaSettings()
    bootstrap = kafka.kafka_bootstrap
    database_from, redis_from = _source("STREAMSCORE_DATABASE_URL"), _source("STREAMSCORE_REDIS_URL")
    bootstrap_from = _source("STREAMSCORE_KAFKA_BOOTSTRAP")
    postgres_problem = postgres_refusal(database)
    redis_problem = redis_refusal(redis)
    kafka_found = asyncio.run(diagnose(kafka))
    return [
        Finding("Postgres", f"{_safe(database)} ({database_from})", postgres_problem is None,
                postgres_problem or "accepts the connection"),
        Finding("Redis", f"{_safe(redis)} ({redis_from})", redis_problem is None,
                redis_problem or "answers PING"),
        Finding("Kafka", f"{bootstrap} ({bootstrap_from})", kafka_found.verdict == "ok", kafka_found.message),
    ]


def tooling_findings() -> list[Finding]:
    """What the test suite and `make bench` would fall back to on this machine."""
    java, maven = shutil.which("java"), shutil.which("mvn")
    return [
        Finding("Docker engine", "testcontainers", docker_available(),
                "answers" if docker_available() else "none answers: containers are not used"),
        Finding("Postgres server binaries", "initdb / pg_ctl", server_bindir() is not None,
                "private test clusters" if server_bindir() else "absent: the embedded pgserver wheel serves"),
        Finding("Java and Maven", "Apache Kafka from Maven Central", bool(java and maven),
                "the Apache Kafka tier can run" if java and maven else "absent: no Apache Kafka tier"),
        Finding("STREAMSCORE_TEST_EMBEDDED", "tests", True,
                "set: only the embedded engines" if force_embedded() else "unset"),
    ]


def _print(console: Console, title: str, findings: list[Finding], fatal: bool) -> None:
    console.print(f"[bold]{title}[/]")
    for finding in findings:
        mark = "[green]ok[/]" if finding.ok else ("[red]no[/]" if fatal else "[yellow]--[/]")
        console.print(f"  {mark} {finding.what}: {finding.where}\n       {finding.detail}", highlight=False)


def doctor() -> None:
    """Show the Postgres, Redis and Kafka the services, tests and benchmarks use, and whether they answer."""
    console = Console()
    services = service_findings()
    _print(console, "Services (STREAMSCORE_* settings, or the running `streamscore dev`):", services, True)
    _print(console, "Tests and benchmarks (they find their own engines; the README's 'Engines' section):",
           tooling_findings(), False)
    if not all(finding.ok for finding in services):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach `doctor` to the root CLI."""
    app.command()(doctor)
