"""What the CLI prints around the work: counts, the upload speed, the dev banner's next steps."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from streamscore.dev import Endpoints, print_banner
from streamscore.progress import AverageSpeedColumn
from streamscore.text import counted


def test_counts_are_singular_only_for_one() -> None:
    assert [counted(n, "row") for n in (0, 1, 3, 12_345)] == ["0 rows", "1 row", "3 rows", "12,345 rows"]


def test_a_small_upload_shows_its_average_speed_not_zero() -> None:
    now = [0.0]
    speed = AverageSpeedColumn()
    progress = Progress(speed, get_time=lambda: now[0])
    task_id = progress.add_task("upload", total=1_200)
    assert str(speed.render(progress.tasks[0])) == ""  # nothing known yet: nothing shown
    now[0] = 0.25  # the whole file within one refresh: rich's own column has no speed for it
    progress.advance(task_id, 1_200)
    assert str(speed.render(progress.tasks[0])) == "4.8 kB/s"  # 1,200 bytes in 0.25 s


def _banner(stays_up: bool) -> str:
    console = Console(record=True, width=200)
    endpoints = Endpoints("postgresql+asyncpg://db", "redis://r", "127.0.0.1:1", embedded_kafka=True)
    print_banner(console, "http://127.0.0.1:8000", "ssk_x", {"scorer": 1, "sink": 2}, Path("logs"),
                 endpoints, 1.0, stays_up=stays_up)
    return console.export_text()


def test_the_demo_banner_offers_commands_only_when_the_stack_stays_up() -> None:
    assert "Try, in another terminal" in _banner(stays_up=True)
    stopping = _banner(stays_up=False)
    assert "Try, in another terminal" not in stopping and "Ctrl-C" not in stopping
    assert "dev --demo --keep" in stopping
