"""`streamscore dlq list|show|redrive`: read stored dead letters and send them back, through the admin API."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from streamscore.client import EXIT_PARTIAL, EXIT_USAGE, CliError
from streamscore.ops import ApiKeyOption, ApiUrlOption, _client, console, handle_errors
from streamscore.text import counted

dlq_app = typer.Typer(help="Inspect and redrive dead letters (admin scope).", no_args_is_help=True,
                      rich_markup_mode="rich")
PATH = "/api/v1/dead-letters"
STAGES = ("decode", "validation", "inference", "publish")

StageOption = typer.Option(None, "--stage", help=f"Only this stage: {', '.join(STAGES)}.")
ReasonOption = typer.Option(None, "--reason", help="Only letters whose reason contains this text.")
TopicOption = typer.Option(None, "--topic", help="Only letters from this source topic (full name).")
SinceOption = typer.Option(None, "--since", help="Failed at or after this time (ISO 8601).")
UntilOption = typer.Option(None, "--until", help="Failed before this time (ISO 8601).")


def filters(stage: str | None, reason: str | None, topic: str | None, since: datetime | None,
            until: datetime | None) -> dict[str, Any]:
    """The filter fields the API takes, without the unset ones."""
    if stage is not None and stage not in STAGES:
        raise CliError(f"--stage must be one of {', '.join(STAGES)}; got {stage!r}", EXIT_USAGE)
    values = {"stage": stage, "reason": reason, "source_topic": topic,
              "since": since.isoformat() if since else None, "until": until.isoformat() if until else None}
    return {name: value for name, value in values.items() if value is not None}


@handle_errors
def dlq_list(
    stage: str | None = StageOption,
    reason: str | None = ReasonOption,
    topic: str | None = TopicOption,
    since: datetime | None = SinceOption,
    until: datetime | None = UntilOption,
    status: str | None = typer.Option(None, "--status", help="open, redriven or quarantined."),
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="Most letters shown (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON page instead of a table."),
    api_url: str | None = ApiUrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """List stored dead letters, newest first."""
    params = {**filters(stage, reason, topic, since, until), "limit": limit}
    if status is not None:
        params["status"] = status
    with _client(api_url, api_key) as client:
        page = client.request("GET", PATH, params=params).json()
    if as_json:
        print(orjson.dumps(page, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table("id", "failed at", "stage", "customer", "status", "redrives", "cut", "reason")
    for item in page["items"]:
        table.add_row(str(item["id"]), item["failed_at"], item["stage"], escape(item["customer_id"] or ""),
                      item["status"], str(item["redrive_count"]), "yes" if item["payload_truncated"] else "",
                      escape(item["reason"][:120]))
    console.print(table)
    more = " (more: raise --limit)" if page["next_before_id"] else ""
    console.print(f"{counted(len(page['items']), 'dead letter')}{more}")


@handle_errors
def dlq_show(
    letter_id: int = typer.Argument(..., help="The dead letter's id (from `dlq list`)."),
    api_url: str | None = ApiUrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Show one dead letter: origin, reason, decoded payload, whether it was cut, and its redrives."""
    with _client(api_url, api_key) as client:
        letter = client.get_json(f"{PATH}/{letter_id}")
    for name in ("id", "status", "stage", "reason", "source_topic", "source_partition", "source_offset",
                 "key", "event_id", "customer_id", "batch_id", "failed_at", "redrive_count", "payload_size",
                 "payload_sha256"):
        console.print(f"[bold]{name}[/]: {escape(str(letter[name]))}")
    cut = letter["payload_truncated"]
    console.print("[bold]payload[/]" + (" [red](cut: only a prefix was kept; it cannot be redriven)[/]" if cut
                                        else "") + ":")
    # Raw text out: rich's markup and highlighting took 80 s on a 64 KiB payload.
    console.out(pretty(letter["payload"]), highlight=False)
    for line in letter["redrives"]:
        console.print(f"redrive: {line['outcome']} #{line['redrive_count']} by {escape(line['redriven_by'])} "
                      f"at {line['redriven_at']}")


def pretty(payload: str) -> str:
    """A JSON payload indented; anything else with its control characters escaped (a payload comes from
    any producer, and must not drive the operator's terminal)."""
    try:
        return orjson.dumps(orjson.loads(payload), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return "".join(c if c.isprintable() or c in "\n\t" else f"\\x{ord(c):02x}" for c in payload)


@handle_errors
def dlq_redrive(
    ids: list[int] = typer.Argument(None, help="Dead-letter ids; or select with a filter, or --all."),
    stage: str | None = StageOption,
    reason: str | None = ReasonOption,
    topic: str | None = TopicOption,
    since: datetime | None = SinceOption,
    until: datetime | None = UntilOption,
    every: bool = typer.Option(False, "--all", help="Every open dead letter (no ids, no filter)."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Print what would go, grouped by reason; send nothing."),
    payload_file: Path | None = typer.Option(
        None, "--payload-file", exists=True, dir_okay=False,
        help="A corrected value (UTF-8) to send instead of the stored one; with exactly one id.",
    ),
    limit: int = typer.Option(1000, "--limit", min=1, max=10_000, help="Most letters in one redrive."),
    api_url: str | None = ApiUrlOption,
    api_key: str | None = ApiKeyOption,
) -> None:
    """Send dead letters' original records back to their origin topic, with their original key.

    Each carries a redrive-count header; a letter redriven the configured number of times (default 3) is
    quarantined instead, and one whose payload was cut is refused. Exit 1 when any letter was refused.
    """
    body: dict[str, Any] = {**filters(stage, reason, topic, since, until), "ids": list(ids or []),
                            "all": every, "dry_run": dry_run, "limit": limit}
    if payload_file is not None:
        body["payload"] = payload_file.read_text(encoding="utf-8")
    with _client(api_url, api_key) as client:
        report = client.request("POST", f"{PATH}/redrive", json=body).json()
    print_report(report)
    if report["refused"] and not dry_run:
        raise typer.Exit(EXIT_PARTIAL)


def print_report(report: dict[str, Any]) -> None:
    """Totals, a table per reason, and why each refused or quarantined letter was."""
    verb = "would be " if report["dry_run"] else ""
    total = report["redriven"] + report["quarantined"] + report["refused"]
    console.print(f"{counted(total, 'dead letter')}: {report['redriven']} {verb}redriven, "
                  f"{report['quarantined']} {verb}quarantined, {report['refused']} {verb}refused"
                  + (" (dry run: nothing sent or changed)" if report["dry_run"] else ""))
    table = Table("reason", "redrive", "quarantine", "refuse")
    for group in report["groups"]:
        table.add_row(escape(group["reason"][:160]), str(group["redriven"]), str(group["quarantined"]),
                      str(group["refused"]))
    console.print(table)
    for result in report["results"]:
        if result["outcome"] != "redriven":
            console.print(f"{result['id']}: {result['outcome']}: {escape(result['detail'] or '')}")


def register(app: typer.Typer) -> None:
    """Attach `dlq list|show|redrive` to the root CLI."""
    dlq_app.command("list")(dlq_list)
    dlq_app.command("show")(dlq_show)
    dlq_app.command("redrive")(dlq_redrive)
    app.add_typer(dlq_app, name="dlq")
