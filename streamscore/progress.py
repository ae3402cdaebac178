"""The CLI's progress bars: rows sent and bytes moved, on the operator's stderr."""

from __future__ import annotations

from typing import Any

from rich import filesize
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.text import Text


class AverageSpeedColumn(TransferSpeedColumn):
    """Bytes per second, averaged over the whole transfer once done; blank while it cannot tell yet.

    rich's column shows its recent-sample speed, "0 bytes/s" for a file sent within one refresh.
    """

    def render(self, task: Task) -> Text:
        """The speed, or nothing."""
        elapsed = task.finished_time if task.finished else task.elapsed
        if task.finished and elapsed:
            return Text(f"{filesize.decimal(int(task.completed / elapsed))}/s", style="progress.data.speed")
        if task.speed:
            return super().render(task)
        return Text("")


def progress_bar(console: Console, download: bool = False) -> Progress:
    """A bar with elapsed time; `download`: bytes and their average speed, else a count of rows."""
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
    if download:
        columns += [DownloadColumn(), AverageSpeedColumn()]
    else:
        columns += [TextColumn("{task.completed:,.0f}/{task.total:,.0f}")]
    return Progress(*columns, TimeElapsedColumn(), console=console, transient=False)
