"""Render one event's trace, exported as JSON lines (OTEL_TRACES_EXPORTER=console, STREAMSCORE_TRACES_FILE),
as a waterfall PNG: the request's own trace and the batch spans its process spans link to, with their stages.

    .venv/bin/python bench/render_trace.py traces-*.jsonl --out docs/trace.png [--trace TRACE_ID]

Without --trace, the first `POST /api/v1/events` span's trace is drawn.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {"api": "#4c72b0", "scorer": "#dd8452", "sink": "#55a868"}


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """Every span in the files, one JSON object a line."""
    return [json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()]


def moment(text: str) -> float:
    """Seconds since the epoch of an exported ISO timestamp."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def chosen(spans: list[dict[str, Any]], trace_id: str | None) -> list[dict[str, Any]]:
    """The trace's spans, then each batch span one of them links to and that batch's children, in order."""
    if trace_id is None:
        trace_id = next(s["context"]["trace_id"] for s in spans if s["name"] == "POST /api/v1/events")
    own = [s for s in spans if s["context"]["trace_id"] == trace_id]
    linked = {link["context"]["span_id"] for s in own for link in s.get("links", [])}
    batches = [s for s in spans if s["context"]["span_id"] in linked]
    ids = {s["context"]["span_id"] for s in batches}
    stages = [s for s in spans if s.get("parent_id") in ids]
    picked = own + batches + stages
    return sorted(picked, key=lambda s: (moment(s["start_time"]), s["name"]))


def render(spans: list[dict[str, Any]], out: Path) -> None:
    """One bar per span (ms since the first start), dashed lines for links."""
    origin = min(moment(s["start_time"]) for s in spans)
    rows = {s["context"]["span_id"]: i for i, s in enumerate(spans)}
    figure, axes = plt.subplots(figsize=(11, 0.38 * len(spans) + 1.4))
    for i, span in enumerate(spans):
        service = span["resource"]["attributes"].get("service.name", "?")
        start = (moment(span["start_time"]) - origin) * 1000
        width = max((moment(span["end_time"]) - moment(span["start_time"])) * 1000, 0.3)
        axes.barh(i, width, left=start, color=COLOURS.get(service, "#999999"), height=0.6)
        label = f"{service}: {span['name']}" + ("" if span.get("parent_id") else "  (root)")
        axes.text(start + width + 2, i, f"{label}  {width:.1f} ms", va="center", fontsize=8)
        for link in span.get("links", []):
            target = rows.get(link["context"]["span_id"])
            if target is not None:
                axes.plot([start, start], [i, target], linestyle="--", color="#888888", linewidth=0.8)
    axes.invert_yaxis()
    axes.set_yticks([])
    axes.set_xlabel("ms since the request started")
    axes.set_title("One event through StreamScore: its trace (API → scorer process → sink process) and the "
                   "linked batch spans", fontsize=10)
    axes.margins(x=0.35)
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def main() -> None:
    """Parse arguments, render."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("trace.png"))
    parser.add_argument("--trace", default=None, help="Exported trace id (0x…); default: the first event's.")
    args = parser.parse_args()
    render(chosen(load(args.files), args.trace), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
