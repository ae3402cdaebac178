"""A Postgres cluster of one's own from the machine's server binaries (initdb/pg_ctl), on a free port."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from streamscore.embedded import free_port, wait_for_port


def server_bindir() -> Path | None:
    """Where initdb and pg_ctl live (`pg_config --bindir`), or None when the server is not installed."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    found = subprocess.run([pg_config, "--bindir"], check=False, capture_output=True, text=True)
    bindir = Path(found.stdout.strip())
    if found.returncode != 0 or not (bindir / "initdb").is_file() or not (bindir / "pg_ctl").is_file():
        return None
    return bindir


def _bindir() -> Path:
    bindir = server_bindir()
    if bindir is None:
        raise RuntimeError("initdb and pg_ctl not found (pg_config --bindir): install the Postgres server")
    return bindir


@dataclass
class PrivatePostgres:
    """initdb in a temp dir, on a free port; as root, run as the `postgres` OS user (it refuses root).

    Whatever the machine's own clusters ask for (a password on loopback, say), this one is the caller's:
    tests may stop, freeze and restart it.
    """

    port: int = field(default_factory=free_port)
    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ss-private-pg-")))
    max_connections: int = 200
    password: str | None = None
    """When set, TCP connections need it (scram-sha-256), as on a Debian cluster; else trust."""

    @property
    def data(self) -> Path:
        """The data directory."""
        return self.home / "data"

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        """SQLAlchemy URL of one database as user postgres (with `password`, or the cluster's own)."""
        secret = password if password is not None else self.password
        user = f"postgres:{secret}" if secret else "postgres"
        return f"postgresql+asyncpg://{user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        command = [str(_bindir() / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")

    def init(self) -> PrivatePostgres:
        """Create the cluster (superuser postgres, no fsync: a test server)."""
        auth = ["--auth=trust"]
        if self.password is not None:
            secret = self.home / "password"
            secret.write_text(self.password, encoding="utf-8")
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={secret}"]
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            for path in (self.home, *self.home.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", *auth, "-E", "UTF8")
        return self

    def start(self) -> PrivatePostgres:
        """Start (again) on the same port and data directory."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.home} -c fsync=off "
                   f"-c synchronous_commit=off -c max_connections={self.max_connections}")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.home / "log"), "-w", "start")
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        """`pg_ctl stop -m fast`: open connections are cut, the server is down until start()."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop if running and delete the temp dir."""
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.home, ignore_errors=True)
