"""`streamscore doctor` names the engines the services would use, and why one refuses, without its secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

STREAMSCORE = Path(sys.executable).with_name("streamscore")


def run_doctor(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    env.update(settings, COLUMNS="200")
    return subprocess.run([str(STREAMSCORE), "doctor"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_doctor_passes_on_engines_that_answer(
    tmp_path: Path, postgres_admin_url: str, redis_url: str, kafka_bootstrap: str
) -> None:
    done = run_doctor(tmp_path, STREAMSCORE_DATABASE_URL=postgres_admin_url, STREAMSCORE_REDIS_URL=redis_url,
                      STREAMSCORE_KAFKA_BOOTSTRAP=kafka_bootstrap)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok Postgres" in done.stdout and "ok Redis" in done.stdout and "ok Kafka" in done.stdout


def test_doctor_names_a_refused_password_and_never_prints_it(
    tmp_path: Path, postgres_admin_url: str, redis_url: str, kafka_bootstrap: str
) -> None:
    wrong = make_url(postgres_admin_url).set(username="nobody-here", password="hunter2-secret")
    done = run_doctor(tmp_path, STREAMSCORE_DATABASE_URL=wrong.render_as_string(hide_password=False),
                      STREAMSCORE_REDIS_URL=redis_url, STREAMSCORE_KAFKA_BOOTSTRAP=kafka_bootstrap)
    assert done.returncode == 1
    assert "no Postgres" in done.stdout and "nobody-here" in done.stdout
    assert "hunter2-secret" not in done.stdout + done.stderr
