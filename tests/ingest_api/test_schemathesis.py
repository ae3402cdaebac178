"""Property-based fuzzing of the running API from its own OpenAPI schema: no request may cause a 5xx."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.registry import PACKAGE_REGISTRY
from tests.helpers.stack import Launched, launched_stack

ST = Path(sys.executable).with_name("st")


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, postgres_admin_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launched]:
    home = tmp_path_factory.mktemp("st")
    # The fuzzer holds an admin key: its shadow/promote calls must move a copy's pointers, not the package's.
    registry = shutil.copytree(PACKAGE_REGISTRY, home / "registry")
    env = {"STREAMSCORE_MODEL_REGISTRY": str(registry)}
    with launched_stack(kafka_bootstrap, postgres_admin_url, redis_url, home, env) as running:
        yield running


def test_no_operation_answers_a_server_error(stack: Launched, tmp_path: Path) -> None:
    report = tmp_path / "schemathesis.txt"
    result = subprocess.run(
        [
            str(ST), "run", f"{stack.api_url}/openapi.json",
            "--checks", "not_a_server_error",
            "--header", f"X-API-Key: {stack.api_key}",
            "--max-examples", "25",
            "--seed", "20261122",
            "--request-timeout", "30",
            "--workers", "1",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    report.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", result.stdout)
    tested = re.search(r"Tested: (\d+)", result.stdout)
    generated = re.search(r"(\d+) generated", result.stdout)
    assert selected and tested and generated, result.stdout[-3000:]
    assert int(tested.group(1)) == int(selected.group(2)) >= 15  # every operation was exercised
    assert int(generated.group(1)) > 1000
