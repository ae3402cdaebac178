"""Every service on Apache Kafka with a three-address bootstrap list (two dead addresses), over PLAINTEXT and
SASL_SSL (SCRAM-SHA-512); and each service exits with one line naming the setting a broker refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from schemas.features import FEATURE_RANGES
from schemas.messages import Prediction
from streamscore.embedded import free_port
from tests.helpers.faults import report
from tests.helpers.pipeline import fetch
from tests.helpers.stack import CLI, Launched, LineReader, in_thread, launched_stack
from tests.helpers.tls import make_ca
from tests.kafka_clients.conftest import SecuredKafka

pytestmark = [pytest.mark.engines, pytest.mark.slow]
FEATURES = [low for low, _ in FEATURE_RANGES]
EXIT_WITHIN_S = 30.0
SERVICES = ("api", "scorer", "sink")
Results = dict[str, tuple[int | None, float, str]]
"""Per service: exit code (None: still running), seconds to exit, output."""


def dead_addresses() -> list[str]:
    """Two loopback addresses where nothing listens."""
    return [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]


def three_address_list(live: str) -> str:
    """The live bootstrap between two dead ones: clients must try past the first."""
    first, last = dead_addresses()
    return f"{first},{live.split(',')[0]},{last}"


PUBLIC_BOOTSTRAP = "kafka-1.example:9096,kafka-2.example:9096,kafka-3.example:9096"
"""What /asyncapi publishes (STREAMSCORE_PUBLIC_KAFKA_BOOTSTRAP): never the internal list."""


def secured_env(kafka: SecuredKafka, **overrides: str) -> dict[str, str]:
    """STREAMSCORE_ variables for the SASL_SSL listener (overrides: KAFKA_SASL_PASSWORD=… and so on)."""
    env = {
        "STREAMSCORE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMSCORE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMSCORE_KAFKA_SASL_USERNAME": kafka.username,
        "STREAMSCORE_KAFKA_SASL_PASSWORD": kafka.password,
        "STREAMSCORE_KAFKA_SSL_CAFILE": kafka.cafile,
    }
    return env | {f"STREAMSCORE_{key}": value for key, value in overrides.items()}


@pytest.fixture(scope="module", params=["plaintext", "sasl_ssl"])
def listed_stack(request: pytest.FixtureRequest, postgres_admin_url: str, redis_url: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launched, str | None]]:
    """API, scorer and sink (as `streamscore dev` starts them) on a three-address list; and the password."""
    if request.param == "plaintext":
        live, env, password = request.getfixturevalue("apache_kafka_bootstrap"), {}, None
    else:
        kafka: SecuredKafka = request.getfixturevalue("secured_kafka")
        live, env, password = kafka.bootstrap, secured_env(kafka), kafka.password
    home = tmp_path_factory.mktemp(f"listed-{request.param}")
    env = {**env, "STREAMSCORE_PUBLIC_KAFKA_BOOTSTRAP": PUBLIC_BOOTSTRAP}
    with launched_stack(three_address_list(live), postgres_admin_url, redis_url, home, env) as running:
        yield running, password


def service_logs(stack: Launched) -> str:
    home = Path(stack.env["STREAMSCORE_DEV_HOME"])
    return "".join(path.read_text(errors="replace") for path in sorted((home / "logs").glob("*.log")))


def test_events_go_through_every_service_on_a_three_address_list(
    listed_stack: tuple[Launched, str | None], unique_id: str
) -> None:
    stack, password = listed_stack
    customer = f"list{unique_id}"
    env = {**os.environ, **stack.env, "COLUMNS": "200"}
    tail = subprocess.Popen([*CLI, "tail", "predictions", "--customer", customer, "--limit", "3", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors = LineReader(tail.stderr)  # type: ignore[arg-type]
    event_ids = [str(uuid.uuid4()) for _ in range(3)]
    try:
        errors.wait_for("tailing", tail, timeout=60)
        with httpx.Client(base_url=stack.api_url, headers={"X-API-Key": stack.api_key}, timeout=30) as client:
            events = [{"event_id": id_, "customer_id": customer, "features": FEATURES} for id_ in event_ids]
            answer = client.post("/api/v1/events", json=events)
            assert answer.status_code == 202, answer.text
            servers = client.get("/asyncapi", headers={"Accept": "application/json"}).json()["servers"]
            ready = client.get("/ready")  # with credentials: every dependency's detail
            metrics = client.get("/metrics").text
        stdout, _ = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, errors.text
    printed = [Prediction.model_validate_json(line) for line in stdout.splitlines()]
    assert sorted(str(p.event_id) for p in printed) == sorted(event_ids)
    stored = _stored(stack.database_url, event_ids)
    assert stored == set(event_ids)
    assert [server["host"] for server in servers.values()] == PUBLIC_BOOTSTRAP.split(",")
    assert ready.status_code == 200, ready.text
    logs = service_logs(stack) + errors.text
    assert "Traceback" not in logs and "consumer lag unknown" not in logs
    if password is not None:
        assert password not in logs + ready.text + metrics + orjson.dumps(servers).decode()


def _stored(database_url: str, event_ids: list[str], within_s: float = 60.0) -> set[str]:
    deadline = time.monotonic() + within_s
    while True:
        rows = in_thread(asyncio.run, fetch(
            database_url, "SELECT event_id FROM predictions WHERE event_id = ANY($1::uuid[])", event_ids))
        found = {str(row["event_id"]) for row in rows}
        if found == set(event_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def start_service(service: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    argv = [*CLI, service] + (["--port", str(free_port())] if service == "api" else [])
    with log.open("wb") as out:
        return subprocess.Popen(argv, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                                stdout=out, stderr=subprocess.STDOUT)


def run_until_exit(env: dict[str, str], tmp_path: Path) -> Results:
    """Start each service in turn (on 2 cores, three at once tripled the start-up time); each one's exit
    code, seconds to exit and output."""
    results: Results = {}
    for name in SERVICES:
        log = tmp_path / f"{name}.log"
        started = time.monotonic()
        process = start_service(name, env, log)
        try:
            code: int | None = process.wait(EXIT_WITHIN_S + 30)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        results[name] = (code, time.monotonic() - started, log.read_text(errors="replace"))
    return results


def assert_one_line_naming(results: Results, setting: str, secret: str) -> None:
    took = {name: f"{seconds:.1f}s" for name, (_, seconds, _) in results.items()}
    report(f"exit on {setting.split()[0]}", **took)
    for service, (code, seconds, output) in results.items():
        assert code == 2 and seconds <= EXIT_WITHIN_S, f"{service}: {code} after {seconds:.0f}s\n{output}"
        naming = [line for line in output.splitlines() if setting in line]
        assert len(naming) == 1, f"{service}:\n{output}"
        assert orjson.loads(naming[0])["level"] == "critical", naming[0]
        assert "Traceback" not in output and secret not in output, f"{service}:\n{output}"


def test_a_wrong_password_stops_each_service_with_one_line_naming_it(
    secured_kafka: SecuredKafka, tmp_path: Path
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    env = secured_env(secured_kafka, KAFKA_SASL_PASSWORD=wrong,
                      KAFKA_BOOTSTRAP=three_address_list(secured_kafka.bootstrap))
    results = run_until_exit(env, tmp_path)
    assert_one_line_naming(results, "STREAMSCORE_KAFKA_SASL_PASSWORD rejected by the broker", wrong)


def test_an_untrusted_ca_stops_each_service_with_one_line_naming_it(
    secured_kafka: SecuredKafka, tmp_path: Path
) -> None:
    other_ca = make_ca(tmp_path / "other-ca.pem", "not-the-brokers-ca")
    env = secured_env(secured_kafka, KAFKA_SSL_CAFILE=str(other_ca),
                      KAFKA_BOOTSTRAP=three_address_list(secured_kafka.bootstrap))
    results = run_until_exit(env, tmp_path)
    assert_one_line_naming(results, "STREAMSCORE_KAFKA_SSL_CAFILE does not trust the broker's certificate",
                           secured_kafka.password)


def test_dead_addresses_are_waited_for_not_taken_for_bad_credentials(
    secured_kafka: SecuredKafka, tmp_path: Path
) -> None:
    env = secured_env(secured_kafka, KAFKA_SASL_PASSWORD="wrong", KAFKA_BOOTSTRAP=",".join(dead_addresses()))
    log = tmp_path / "sink.log"
    sink = start_service("sink", env, log)
    try:
        deadline = time.monotonic() + 30
        while "waiting for it" not in log.read_text(errors="replace") and time.monotonic() < deadline:
            assert sink.poll() is None, log.read_text()
            time.sleep(0.2)
        time.sleep(3)  # three more probes: still waiting, and still no new line
        assert sink.poll() is None, log.read_text()
    finally:
        sink.kill()
        sink.wait()
    output = log.read_text(errors="replace")
    waiting = [line for line in output.splitlines() if "no Kafka broker answers at" in line]
    assert len(waiting) == 1, output
    assert "Connect call failed" in waiting[0] or "refused" in waiting[0].lower(), waiting[0]
    assert "SASL_PASSWORD" not in output and "Traceback" not in output


def test_tail_names_a_refused_password_in_one_line(secured_kafka: SecuredKafka) -> None:
    env = {**os.environ, **secured_env(secured_kafka, KAFKA_SASL_PASSWORD="wrong",
                                       KAFKA_BOOTSTRAP=three_address_list(secured_kafka.bootstrap)),
           "STREAMSCORE_DEV_HOME": "/nonexistent", "COLUMNS": "400"}
    done = subprocess.run([*CLI, "tail", "predictions"], env=env, capture_output=True, timeout=60)
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 2, output
    assert output.strip().splitlines() == [output.strip()], output
    assert output.startswith("error: STREAMSCORE_KAFKA_SASL_PASSWORD rejected by the broker"), output
