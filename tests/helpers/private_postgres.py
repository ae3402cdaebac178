"""A Postgres server of the test's own (Debian initdb/pg_ctl), which a test may stop and restart."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from streamscore.embedded import free_port, wait_for_port


def _bindir() -> Path:
    """Where initdb and pg_ctl live (`pg_config --bindir`)."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        raise RuntimeError("pg_config not found: install the Postgres server binaries")
    found = subprocess.run([pg_config, "--bindir"], check=True, capture_output=True, text=True)
    return Path(found.stdout.strip())


@dataclass
class PrivatePostgres:
    """initdb in a temp dir, on a free port; as root, run as the `postgres` OS user (it refuses root)."""

    port: int = field(default_factory=free_port)
    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ss-faults-pg-")))

    @property
    def data(self) -> Path:
        """The data directory."""
        return self.home / "data"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of one database (trust auth, user postgres)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        command = [str(_bindir() / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def init(self) -> PrivatePostgres:
        """Create the cluster (superuser postgres, trust auth, no fsync: a test server)."""
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.home, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self

    def start(self) -> PrivatePostgres:
        """Start (again) on the same port and data directory."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.home} -c fsync=off"
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
