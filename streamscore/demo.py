"""`streamscore dev --demo`: stream the CoIL data through the batch endpoint and summarise what was stored."""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from streamscore.client import EXIT_USAGE, ApiClient, CliError


def segment_text(segment: dict[str, Any]) -> str:
    """A segment as the CLI shows it: `high (value percentile 92)`."""
    return f"{segment.get('label')} (value percentile {float(segment.get('score', 0)):.0f})"


def demo_csv(source: Path, run_tag: str) -> tuple[bytes, int]:
    """The training CSV with a generated customer_id column prepended; returns (bytes, data rows)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    rows = 0
    with source.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        writer.writerow(["customer_id", *next(reader)])
        for rows, row in enumerate(reader, start=1):
            writer.writerow([f"demo-{run_tag}-{rows:05d}", *row])
    return out.getvalue().encode(), rows


def resolve_demo_file(explicit: Path | None) -> Path:
    """--demo-file, else $STREAMSCORE_TRAIN_DATA, else the packaged CoIL 2000 data (models.data)."""
    if explicit is not None:
        if not explicit.is_file():
            raise CliError(f"demo file not found: {explicit}", EXIT_USAGE)
        return explicit
    from models.data import resolve_data_path

    try:
        path = resolve_data_path()
    except FileNotFoundError as missing:
        raise CliError(f"{missing} (or pass --demo-file)", EXIT_USAGE) from None
    if not path.is_file():
        raise CliError(f"demo data not found at {path}; set STREAMSCORE_TRAIN_DATA or pass --demo-file",
                       EXIT_USAGE)
    return path


def run_demo(client: ApiClient, console: Console, source: Path, check: Callable[[], None]) -> dict[str, Any]:
    """Stream the demo CSV through the batch endpoint, wait for completion, print a summary."""
    payload, rows = demo_csv(source, datetime.now(UTC).strftime("%H%M%S"))
    console.print(f"[bold]Demo:[/] scoring {rows:,} customers from {source} through the batch endpoint")
    started = time.monotonic()
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), DownloadColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        upload = progress.add_task("upload", total=len(payload))
        task = client.submit_batch(io.BytesIO(payload), "demo.csv", lambda n: progress.advance(upload, n))
    task_id = str(task["task_id"])
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"), TimeElapsedColumn(),
                  console=console) as progress:
        scoring = progress.add_task("scoring", total=rows)

        def on_status(status: dict[str, Any]) -> None:
            check()
            done = int(status.get("rows_scored") or 0) + int(status.get("rows_failed") or 0)
            progress.update(scoring, completed=done, total=int(status.get("rows_total") or rows))

        status = client.wait_for_batch(task_id, on_status, timeout=600)
    elapsed = time.monotonic() - started
    if status.get("status") != "completed":
        reason = status.get("failure_reason") or status
        raise CliError(f"demo batch {task_id} {status.get('status')}: {reason}")
    records = [orjson.loads(line) for line in b"".join(client.stream_results(task_id, csv=False)).splitlines()
               if line.strip()]
    print_demo_summary(console, status, records, elapsed)
    return {"task_id": task_id, "rows": rows, "seconds": elapsed, "stored": len(records)}


def print_demo_summary(console: Console, status: dict[str, Any], records: list[dict[str, Any]],
                       elapsed: float) -> None:
    """Rows/s, segment counts and a few sample predictions."""
    scored = int(status.get("rows_scored") or len(records))
    segments = Counter(str(record.get("segment", {}).get("label")) for record in records)
    summary = Table(title="Demo summary", show_header=False)
    summary.add_row("rows scored and stored", f"{scored:,}")
    summary.add_row("rows failed", f"{int(status.get('rows_failed') or 0):,}")
    summary.add_row("wall time (upload → completed)", f"{elapsed:.2f} s")
    summary.add_row("throughput", f"{scored / elapsed:,.0f} rows/s" if elapsed > 0 else "-")
    for label in ("high", "medium", "low"):
        share = segments[label] / max(1, len(records))
        summary.add_row(f"segment {label}", f"{segments[label]:,} ({share:.0%})")
    versions = sorted({str(record.get("model_version")) for record in records})
    summary.add_row("model version", ", ".join(versions) or "-")
    samples = Table(title="Highest-propensity customers")
    for column in ("customer", "recommendations (probability)", "propensity", "segment"):
        samples.add_column(column, overflow="fold")
    for record in sorted(records, key=lambda r: -float(r.get("propensity", 0)))[:5]:
        recs = ", ".join(f"{r['product_id']} {r['probability']:.2f}" for r in record["recommendations"])
        samples.add_row(record["customer_id"], recs, f"{record['propensity']:.3f}",
                        segment_text(record["segment"]))
    console.print(summary)
    console.print(samples)
