"""compose.yaml is a valid Compose file with the start order, health checks and scaling we document.

tests/data/compose-spec.json is the Compose Specification JSON schema as shipped in the docker-compose
1.29.2 wheel (compose/config/compose_spec.json, Apache-2.0), vendored so the test needs no network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft201909Validator

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
                for e in Draft201909Validator(schema).iter_errors(compose)]
    assert problems == []


def test_a_broken_compose_file_is_rejected_by_the_schema(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["scorer"]["restart_policy"] = "always"
    assert len(list(Draft201909Validator(schema).iter_errors(broken))) >= 2


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
