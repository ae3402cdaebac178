"""The one place Kafka clients get their connection options from: bootstrap list, TLS, SASL (no broker)."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaError
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from infra.asyncapi import asyncapi_document
from infra.connection_state import ConnectionState
from infra.consumer import build_broker
from infra.kafka import TopicGuard
from infra.kafka_connection import connection_options, faststream_security, parse_bootstrap
from infra.logging import RepeatFilter
from infra.settings import ConsumerSettings, KafkaSettings
from streamscore.embedded import free_port
from streamscore.failures import explain
from tests.helpers.tls import make_ca

PASSWORD = "pw-Zq81-never-shown"
hosts = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)
addresses = st.tuples(hosts, st.integers(1, 65535)).map(lambda hp: f"{hp[0]}:{hp[1]}")


@pytest.fixture
def cafile(tmp_path: Path) -> str:
    return str(make_ca(tmp_path / "ca.pem", "unit-ca"))


def secured(cafile: str, **overrides: Any) -> dict[str, Any]:
    return {"kafka_bootstrap": "h1:9093,h2:9093,h3:9093", "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "svc",
            "kafka_sasl_password": PASSWORD, "kafka_ssl_cafile": cafile, **overrides}


@given(st.lists(addresses, min_size=1, max_size=6), st.sampled_from([",", ", ", " ,", " , "]))
def test_a_bootstrap_list_parses_into_its_addresses(entries: list[str], separator: str) -> None:
    assert parse_bootstrap(separator.join(entries)) == entries
    assert KafkaSettings(kafka_bootstrap=",".join(entries)).kafka_bootstrap == ",".join(entries)


@pytest.mark.parametrize(("value", "says"), [
    ("", "is empty"),
    ("h1:9092,,h3:9092", "entry 2 of 3 is empty"),
    ("h1:9092,", "entry 2 of 2 is empty"),
    ("h1:9092,h2", "entry 2 of 2 ('h2') has no port"),
    ("h1:0", "from 1 to 65535"),
    ("h1:70000", "from 1 to 65535"),
    ("h1:kafka", "from 1 to 65535"),
    (":9092", "has no port"),
    ("::1:9092", "IPv6 address in brackets"),
])
def test_a_bad_bootstrap_list_is_refused_naming_the_variable(value: str, says: str) -> None:
    with pytest.raises(ValueError, match="STREAMSCORE_KAFKA_BOOTSTRAP") as raised:
        parse_bootstrap(value)
    assert says in str(raised.value)
    with pytest.raises(ValidationError) as invalid:
        KafkaSettings(kafka_bootstrap=value)
    line = explain(invalid.value)
    assert line is not None and "\n" not in line and says in line and "STREAMSCORE_KAFKA_BOOTSTRAP" in line


@given(st.lists(addresses, min_size=1, max_size=4))
def test_plaintext_options_are_the_list_alone(entries: list[str]) -> None:
    settings = KafkaSettings(kafka_bootstrap=",".join(entries))
    assert connection_options(settings) == {"bootstrap_servers": entries, "security_protocol": "PLAINTEXT"}
    assert faststream_security(settings) is None


def test_sasl_ssl_options_carry_the_ca_and_the_credentials(cafile: str) -> None:
    options = connection_options(KafkaSettings(**secured(cafile)))
    context = options.pop("ssl_context")
    assert options == {"bootstrap_servers": ["h1:9093", "h2:9093", "h3:9093"],
                       "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                       "sasl_plain_username": "svc", "sasl_plain_password": PASSWORD}
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    subjects = [ca["subject"] for ca in context.get_ca_certs()]
    assert subjects == [((("commonName", "unit-ca"),),)]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_the_consumer_services_broker_hands_the_same_security_to_aiokafka(
    cafile: str, protocol: str, mechanism: str
) -> None:
    tls_ca = cafile if protocol == "SASL_SSL" else None
    settings = ConsumerSettings(**secured(cafile, kafka_security_protocol=protocol,
                                          kafka_sasl_mechanism=mechanism, kafka_ssl_cafile=tls_ca))
    broker = build_broker(settings, "scorer")
    expected = connection_options(settings)
    # What FastStream builds its aiokafka producer, admin client and consumers from.
    given_to_aiokafka = broker._connection_kwargs
    for key in ("bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_plain_username",
                "sasl_plain_password"):
        assert given_to_aiokafka[key] == expected[key], key
    assert isinstance(given_to_aiokafka["ssl_context"], ssl.SSLContext) == (protocol == "SASL_SSL")
    consumer_options = broker.config.broker_config.builder.keywords  # type: ignore[attr-defined]
    assert consumer_options["security_protocol"] == protocol
    assert consumer_options["sasl_plain_password"] == PASSWORD
    assert consumer_options["bootstrap_servers"] == ["h1:9093", "h2:9093", "h3:9093"]


def test_ssl_without_sasl(cafile: str) -> None:
    settings = KafkaSettings(kafka_bootstrap="h:9093", kafka_security_protocol="SSL", kafka_ssl_cafile=cafile)
    options = connection_options(settings)
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    security = faststream_security(settings)
    assert security is not None and security.use_ssl and security.ssl_context is not None


def test_the_password_is_in_no_representation_of_the_settings(cafile: str) -> None:
    settings = KafkaSettings(**secured(cafile))
    for text in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        assert PASSWORD not in text
    assert PASSWORD not in str(asyncapi_document(settings))


@pytest.mark.parametrize(("overrides", "says"), [
    ({"kafka_sasl_mechanism": None}, "SASL_SSL needs STREAMSCORE_KAFKA_SASL_MECHANISM"),
    ({"kafka_sasl_password": None}, "needs STREAMSCORE_KAFKA_SASL_PASSWORD"),
    ({"kafka_security_protocol": "SSL"}, "STREAMSCORE_KAFKA_SECURITY_PROTOCOL=SSL sends no SASL"),
    ({"kafka_security_protocol": "PLAINTEXT", "kafka_sasl_mechanism": None, "kafka_sasl_username": None,
      "kafka_sasl_password": None}, "STREAMSCORE_KAFKA_SSL_CAFILE set, but"),
    ({"kafka_ssl_cafile": "/nonexistent/ca.pem"}, "STREAMSCORE_KAFKA_SSL_CAFILE: no readable file"),
    ({"kafka_ssl_keyfile": "/nonexistent/key.pem"}, "STREAMSCORE_KAFKA_SSL_KEYFILE is set without"),
    ({"kafka_sasl_mechanism": "GSSAPI"}, "STREAMSCORE_KAFKA_SASL_MECHANISM"),
])
def test_security_settings_that_do_not_fit_are_refused_naming_them(
    cafile: str, overrides: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValidationError) as invalid:
        KafkaSettings(**secured(cafile, **overrides))
    line = explain(invalid.value)
    assert line is not None and says in line and "\n" not in line
    assert PASSWORD not in line


def test_the_asyncapi_servers_are_every_address_of_the_list(cafile: str) -> None:
    document = asyncapi_document(KafkaSettings(**secured(cafile)))
    servers = document["servers"]
    assert [server["host"] for server in servers.values()] == ["h1:9093", "h2:9093", "h3:9093"]
    assert {server["protocol"] for server in servers.values()} == {"kafka-secure"}
    assert document["components"]["securitySchemes"]["kafka-sasl"]["type"] == "scramSha512"
    for channel in document["channels"].values():
        assert channel["servers"] == [{"$ref": f"#/servers/{name}"} for name in servers]
    single = asyncapi_document(KafkaSettings(kafka_bootstrap="k:9092"))
    assert list(single["servers"]) == ["kafka"] and single["servers"]["kafka"]["protocol"] == "kafka"


def _record(name: str, message: str = 'Unable connect to "%s:%s": %s') -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, ("h", 1, "refused"), None)


def test_the_client_loggers_repeat_one_line_a_window_with_the_count_held_back() -> None:
    repeats = RepeatFilter(window_s=3600)
    passed = [repeats.filter(_record("aiokafka.conn")) for _ in range(1000)]
    assert passed.count(True) == 1
    assert repeats.filter(_record("aiokafka.client", "Unable to update metadata from %s"))
    assert repeats.filter(_record("scorer.broker", "boom"))
    assert not repeats.filter(_record("scorer.broker", "boom"))
    assert all(repeats.filter(_record("scorer.pipeline")) for _ in range(3))  # other loggers: untouched
    repeats.window_s = 0
    again = _record("aiokafka.conn")
    assert repeats.filter(again) and again.repeated == 999  # type: ignore[attr-defined]


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture
) -> None:
    state = ConnectionState("Kafka", logging.getLogger("test.kafka"), summary_s=3600)
    with caplog.at_level(logging.INFO, "test.kafka"):
        for _ in range(500):
            state.failed("no Kafka broker answers at h:1")
        assert not state.up and state.failures == 500
        state.succeeded()
        state.succeeded()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "Kafka unavailable: no Kafka broker answers at h:1"), ("INFO", "Kafka available again")]
    assert caplog.records[1].failures == 500  # type: ignore[attr-defined]
    assert state.up and state.failures == 0


@pytest.mark.parametrize("error", [KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]"),
                                   KafkaError("Unable to get cluster metadata over all known brokers")])
async def test_the_topic_guard_names_the_unanswering_addresses_whichever_error_the_check_met(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    addresses = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    guard = TopicGuard(KafkaSettings(kafka_bootstrap=addresses))
    with caplog.at_level(logging.ERROR, "infra.kafka"):
        await guard._failed(error)
    assert not guard.connection.up
    [logged] = [r.getMessage() for r in caplog.records if getattr(r, "dependency", None) == "Kafka"]
    assert logged.startswith(f"Kafka unavailable: no Kafka broker answers at {addresses} "
                             "(STREAMSCORE_KAFKA_BOOTSTRAP): "), logged
    assert all(f"{address}: Connect call failed" in logged for address in addresses.split(",")), logged
