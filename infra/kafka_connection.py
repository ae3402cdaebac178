"""How every Kafka client connects: the bootstrap list and the security settings, checked and turned into
aiokafka (and FastStream) connection options. The one owner of `bootstrap_servers=` in the services."""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faststream.security import BaseSecurity

    from infra.settings import KafkaSettings

BOOTSTRAP = "STREAMSCORE_KAFKA_BOOTSTRAP"
SECURITY_PROTOCOL = "STREAMSCORE_KAFKA_SECURITY_PROTOCOL"
SASL_MECHANISM = "STREAMSCORE_KAFKA_SASL_MECHANISM"
SASL_USERNAME = "STREAMSCORE_KAFKA_SASL_USERNAME"
SASL_PASSWORD = "STREAMSCORE_KAFKA_SASL_PASSWORD"
SSL_CAFILE = "STREAMSCORE_KAFKA_SSL_CAFILE"
SSL_CERTFILE = "STREAMSCORE_KAFKA_SSL_CERTFILE"
SSL_KEYFILE = "STREAMSCORE_KAFKA_SSL_KEYFILE"
SSL_FILES = {"kafka_ssl_cafile": SSL_CAFILE, "kafka_ssl_certfile": SSL_CERTFILE,
             "kafka_ssl_keyfile": SSL_KEYFILE}


def parse_bootstrap(value: str) -> list[str]:
    """`host:port[,host:port…]` as a list; a ValueError naming STREAMSCORE_KAFKA_BOOTSTRAP otherwise."""
    entries = [entry.strip() for entry in value.split(",")]
    if not value.strip():
        raise ValueError(f"{BOOTSTRAP} is empty: give host:port[,host:port…]")
    for position, entry in enumerate(entries, 1):
        where = f"{BOOTSTRAP} entry {position} of {len(entries)}"
        if not entry:
            raise ValueError(f"{where} is empty (in {value!r}): remove the stray comma")
        host, colon, port = entry.rpartition(":")
        if not colon or not host:
            raise ValueError(f"{where} ({entry!r}) has no port: write host:port, e.g. {entry}:9092")
        if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
            raise ValueError(f"{where} ({entry!r}): write an IPv6 address in brackets, e.g. [::1]:9092")
        if any(c.isspace() for c in host) or host in ("[]",):
            raise ValueError(f"{where} ({entry!r}) has no valid host name")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{where} ({entry!r}): the port must be a number from 1 to 65535")
    return entries


def host_and_port(address: str) -> tuple[str, int]:
    """('h', 9092) from 'h:9092' ('::1' from '[::1]:9092'); the address was checked by parse_bootstrap."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def check_security(settings: KafkaSettings) -> None:
    """The security settings fit together, and the files they name exist; a ValueError naming them."""
    protocol = settings.kafka_security_protocol
    sasl = protocol.startswith("SASL_")
    tls = protocol.endswith("SSL")
    credentials = {SASL_MECHANISM: settings.kafka_sasl_mechanism, SASL_USERNAME: settings.kafka_sasl_username,
                   SASL_PASSWORD: settings.kafka_sasl_password}
    if sasl and (missing := [name for name, value in credentials.items() if not value]):
        raise ValueError(f"{SECURITY_PROTOCOL}={protocol} needs {', '.join(missing)}")
    if not sasl and (given := [name for name, value in credentials.items() if value]):
        raise ValueError(f"{', '.join(given)} set, but {SECURITY_PROTOCOL}={protocol} sends no SASL "
                         "credentials: use SASL_SSL (or SASL_PLAINTEXT)")
    files = {variable: getattr(settings, field) for field, variable in SSL_FILES.items()}
    if not tls and (named := [variable for variable, path in files.items() if path]):
        raise ValueError(f"{', '.join(named)} set, but {SECURITY_PROTOCOL}={protocol} does not use TLS: "
                         "use SSL or SASL_SSL")
    if files[SSL_KEYFILE] and not files[SSL_CERTFILE]:
        raise ValueError(f"{SSL_KEYFILE} is set without {SSL_CERTFILE}")
    for variable, path in files.items():
        if path and not os.path.isfile(path):
            raise ValueError(f"{variable}: no readable file at {path}")


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL (the CA file, else the system's CAs), else None."""
    from aiokafka.helpers import create_ssl_context

    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    return create_ssl_context(cafile=settings.kafka_ssl_cafile, certfile=settings.kafka_ssl_certfile,
                              keyfile=settings.kafka_ssl_keyfile)


def security_options(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka's security keyword arguments (security_protocol, ssl_context, sasl_*)."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options |= {"sasl_mechanism": settings.kafka_sasl_mechanism,
                    "sasl_plain_username": settings.kafka_sasl_username,
                    "sasl_plain_password": password.get_secret_value() if password else None}
    return options


def connection_options(settings: KafkaSettings) -> dict[str, Any]:
    """What every aiokafka client (producer, consumer, admin) is built with: the bootstrap list and
    the security options. Holds the SASL password in clear: never log it."""
    return {"bootstrap_servers": parse_bootstrap(settings.kafka_bootstrap), **security_options(settings)}


def faststream_security(settings: KafkaSettings) -> BaseSecurity | None:
    """The same security as FastStream's KafkaBroker takes it: its `security=` object, which it turns
    into aiokafka's security_protocol, ssl_context and sasl_* (KafkaBroker takes no other way)."""
    from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    kind = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    mechanism = settings.kafka_sasl_mechanism or ""
    password = settings.kafka_sasl_password
    return kind[mechanism](username=settings.kafka_sasl_username or "",
                           password=password.get_secret_value() if password else "",
                           ssl_context=context, use_ssl=protocol == "SASL_SSL")
