"""A backstop for pytest-timeout: a test still running well past its timeout ends the session, loudly.

pytest-timeout's signal method raises in whatever frame runs; when that is a background asyncio task, the
task swallows it and the test hangs on until the CI budget is gone. This prints every thread's stack and
every asyncio task's stack, then exits, so a hang costs minutes and says where it was.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import threading
from collections.abc import Iterator

import pytest

GRACE_S = 60.0


def _dump_and_exit(item: pytest.Item, after_s: float) -> None:
    try:
        capman = item.config.pluginmanager.getplugin("capturemanager")
        captured = ""
        if capman is not None:  # the stacks must reach the real stderr, not the test's capture
            capman.suspend_global_capture(in_=True)
            out, err = capman.read_global_capture()
            captured = (out + err)[-20_000:]
        print(f"\nWATCHDOG {item.nodeid} still running {after_s:.0f} s after it started; its output and "
              f"stacks follow\n{captured}", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        # Every loop's tasks (the test's loop runs in this process), read from another thread: best effort.
        for task in list(asyncio.tasks._all_tasks):  # type: ignore[attr-defined]
            if not task.done():
                print(f"--- {task!r}", file=sys.stderr)
                task.print_stack(limit=12, file=sys.stderr)
    except Exception as error:  # a diagnosis must not stop the exit
        print(f"(watchdog diagnosis failed: {error!r})", file=sys.stderr)
    finally:
        sys.stderr.flush()
        os._exit(3)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Arm a timer for the test's timeout plus a grace period; disarm when the test ends."""
    marker = item.get_closest_marker("timeout")
    timeout = float(marker.args[0]) if marker and marker.args else float(item.config.getini("timeout") or 0)
    timer = None
    if timeout > 0:
        timer = threading.Timer(timeout + GRACE_S, _dump_and_exit, (item, timeout + GRACE_S))
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
