"""Scorer subprocesses for the exactly-once fault tests: start, watch their assignments, kill, freeze."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

from infra.settings import KafkaSettings
from tests.helpers.faults import service_env, service_process

SCORER_START_S = 150.0  # TensorFlow loads in 10-45 s on a loaded 2-core machine, then the group join
ASSIGNED = re.compile(r"assigned to partitions: (.*)")


def scorer_env(kafka: KafkaSettings, redis_url: str, guarantee: str, **extra: str) -> dict[str, str]:
    """STREAMSCORE_ settings of a scorer process on the test's broker, with this processing guarantee."""
    return service_env(kafka, "", redis_url, processing_guarantee=guarantee, batch_max_records="200", **extra)


class Scorer:
    """One `streamscore scorer` process and its log."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] = service_process("scorer", env, log_path)

    def assignments(self) -> list[int]:
        """The partition count of each assignment it logged, in order."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [match.group(1).count("TopicPartition(") for match in ASSIGNED.finditer(text)]

    def assigned_more_than(self, times: int) -> Callable[[], Awaitable[bool]]:
        """A wait_for predicate: it logged more than `times` assignments, the last one not empty."""

        async def predicate() -> bool:
            seen = self.assignments()
            return len(seen) > times and seen[-1] > 0

        return predicate

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: its sockets stay open, it neither heartbeats nor sends."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT."""
        self.process.send_signal(signal.SIGCONT)
