"""CLI commands that run the long-lived services and the database migrations."""

from __future__ import annotations

import typer


def api(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="Port to bind."),
    workers: int | None = typer.Option(
        None, min=1, show_default=False,
        help="Processes sharing host:port (SO_REUSEPORT); default: STREAMSCORE_API_WORKERS, else 1.",
    ),
) -> None:
    """Run the ingest/scoring REST API (uvicorn; one process, or --workers N under a supervisor)."""
    from ingest_api.workers import serve

    code = serve(host, port, workers)
    if code:
        raise typer.Exit(code)


def scorer() -> None:
    """Run a scorer consumer (group `scorer`): micro-batched inference to predictions.v1."""
    from scorer.app import run

    run()


def sink() -> None:
    """Run a sink consumer (group `sink`): predictions into Postgres and Redis."""
    from sink.app import run

    run()


def migrate() -> None:
    """Apply database migrations (alembic upgrade head) to STREAMSCORE_DATABASE_URL."""
    from migrations.runner import upgrade_head

    upgrade_head()
    typer.echo("database is at head")


def register(app: typer.Typer) -> None:
    """Attach the service commands to the root CLI."""
    for command in (api, scorer, sink, migrate):
        app.command()(command)
