"""compose.yaml is a valid Compose file with the start order, health checks and scaling we document;
the Dockerfile installs what pyproject.toml declares, as the README does.

data/compose-spec.json is the current Compose Specification JSON schema (compose-spec/compose-spec,
Apache-2.0; source and commit in data/README.md), vendored so the test needs no network.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from streamscore.kafka_classpath import kafka_version

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
APP_SERVICES = ("migrate", "api", "scorer", "sink")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    return document


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in Draft7Validator(schema).iter_errors(compose)]
    assert problems == []


def test_a_broken_compose_file_is_rejected_by_the_schema(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["scorer"]["restart_policy"] = "always"
    assert len(list(Draft7Validator(schema).iter_errors(broken))) >= 2


def test_compose_runs_the_apache_kafka_version_the_tests_run(compose: dict[str, Any]) -> None:
    tag = compose["services"]["kafka"]["image"].removeprefix("apache/kafka:")
    assert tag == kafka_version()  # streamscore/kafka/pom.xml
    assert compose["services"]["kafka"]["environment"]["KAFKA_LOG_DIRS"] in {
        volume.split(":")[1] for volume in compose["services"]["kafka"]["volumes"]}


def test_engines_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    for engine in ("kafka", "postgres", "redis"):
        assert "healthcheck" in services[engine], engine
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "scorer", "sink"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["kafka"]["condition"] == "service_healthy", name
        assert "healthcheck" in services[name], name
    for name in APP_SERVICES:
        assert "build" in services[name], name


def test_scorer_can_be_scaled(compose: dict[str, Any]) -> None:
    scorer = compose["services"]["scorer"]
    assert "container_name" not in scorer
    assert "ports" not in scorer  # fixed host ports would collide between replicas
    assert scorer["command"] == ["scorer"]


def test_dockerfile_is_slim_and_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["streamscore"]' in dockerfile
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".git", ".streamscore"} <= set(ignored)


def test_the_vendored_schema_is_the_current_specification() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema["$schema"].startswith("https://json-schema.org/draft-07")
    assert "models" in schema["properties"]  # top-level `models`: added to the specification in 2025
    Draft7Validator.check_schema(schema)


def _pip_installs(text: str) -> list[str]:
    """The arguments of every `pip install` in a Dockerfile or Makefile (no options, no continuations)."""
    joined = text.replace("\\\n", " ")
    found = []
    for match in re.finditer(r"pip install ([^&;\n]+)", joined):
        found += [arg.strip("'\"") for arg in match.group(1).split() if not arg.startswith("-")]
    return found


def test_dockerfile_installs_the_package_set_of_pyproject_and_the_readme() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    extras = set(pyproject["project"]["optional-dependencies"])
    installed = _pip_installs(dockerfile)
    # Only the project itself (its declared dependencies), never a hand-kept list that could drift.
    assert installed and all(re.fullmatch(r"\.(\[[a-z,]+\])?", arg) for arg in installed), installed
    for arg in installed:
        assert set(re.findall(r"[a-z]+", arg)) <= extras, arg
    # Every package pyproject ships is copied into the image before the final install.
    copied = set(re.findall(r"^COPY (\w+) \./\1", dockerfile, re.MULTILINE))
    packages = {name.rstrip("*") for name in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
    # The README's install (make install) is the same project, plus the dev extras on top.
    readme_install = _pip_installs((ROOT / "Makefile").read_text(encoding="utf-8"))
    assert any(re.fullmatch(r"\.(\[[a-z,]+\])?", arg) for arg in readme_install), readme_install
    # Both install the versions the suite passed with.
    for text in (dockerfile, (ROOT / "Makefile").read_text(encoding="utf-8")):
        assert "pip install --constraint=constraints.txt ." in text.replace("-e '.", ".")
    assert "make install" in (ROOT / "README.md").read_text(encoding="utf-8")
