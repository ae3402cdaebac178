"""`streamscore dev`: the whole stack from wheels, the demo, and a clean stop with no orphans.

Also provides `launched_stack`, used by the CLI and dashboard tests: API + scorer + sink as real
subprocesses (exactly as `streamscore dev` runs them) against the suite's broker, Postgres and Redis.
"""

from __future__ import annotations

import csv
import io
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from schemas.features import FEATURE_NAMES
from streamscore.client import CliError
from streamscore.demo import demo_csv, resolve_demo_file
from streamscore.embedded import free_port
from tests.helpers.stack import CLI, LineReader, _dev_env, write_feature_csv


def test_dev_runs_the_demo_on_embedded_engines_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    demo = write_feature_csv(tmp_path / "demo.csv", rows=300)
    home = tmp_path / "dev-home"
    port = free_port()
    argv = [*CLI, "dev", "--demo", "--keep", "--demo-file", str(demo), "--port", str(port)]
    narrow = {**_dev_env(home), "COLUMNS": "80"}  # an 80-column terminal
    process = subprocess.Popen(argv, env=narrow, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = LineReader(process.stdout)  # type: ignore[arg-type]
    try:
        output.wait_for("press Ctrl-C to stop", process, timeout=300)
        descendants = psutil.Process(process.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in descendants)
        for expected in ("postgres", "redis-server", "tansu", "main() api", "main() scorer", "main() sink"):
            assert expected in names, f"{expected} not among the children: {names}"
        key = (home / "api-key").read_text().strip()
        link = f"http://127.0.0.1:{port}/dashboard"
        assert link in [line.strip() for line in output.text.splitlines()]  # whole, on its own line
        assert "#key=" not in output.text  # a key in a link stays in the browser's history
        printed = next(line for line in output.text.splitlines() if "batch submit FILE.csv" in line)
        command = printed.split(" batch submit")[0].strip()
        assert subprocess.run([command, "--help"], capture_output=True, timeout=60).returncode == 0, command
        # No STREAMSCORE_DATABASE_URL: it finds the dev stack's database.
        listed = subprocess.run([*CLI, "api-keys", "list"], env=_dev_env(home), capture_output=True,
                                text=True, timeout=120)
        assert listed.returncode == 0 and "dev-admin-" in listed.stdout, listed.stderr
        assert "rows scored and stored" in output.text and "300" in output.text
        assert "segment high" in output.text and "Highest-propensity customers" in output.text

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    survivors = [c for c in descendants if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert survivors == [], f"orphans left behind: {survivors}"
    assert "stopped: services and engines down" in output.text
    assert not (home / "api-url").exists() and (home / "api-key").read_text().strip() == key  # kept for reuse
    assert 'role "pgserver" does not exist' not in (home / "logs" / "postgres.log").read_text()


def test_dev_refuses_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([*CLI, "dev", "--port", str(port)], env=_dev_env(tmp_path),
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"port {port} is already in use" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_demo_csv_prepends_unique_customer_ids(tmp_path: Path) -> None:
    source = write_feature_csv(tmp_path / "train.csv", rows=25)
    payload, rows = demo_csv(source, "x1")
    table = list(csv.reader(io.StringIO(payload.decode())))
    assert rows == 25 and len(table) == 26
    assert table[0] == ["customer_id", *FEATURE_NAMES]
    assert len({row[0] for row in table[1:]}) == 25
    assert table[1][1:] == next(csv.reader(io.StringIO(source.read_text().splitlines()[1])))


def test_missing_demo_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CliError) as raised:
        resolve_demo_file(tmp_path / "nope.csv")
    assert raised.value.exit_code == 2
    assert "nope.csv" in raised.value.message
