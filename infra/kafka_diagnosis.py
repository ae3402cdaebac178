"""Why Kafka cannot be reached, in one line that names the setting at fault.

aiokafka reports every failed bootstrap as `KafkaConnectionError: Unable to bootstrap`, whether no broker
answers, the password is wrong or the CA does not trust the broker. This probe opens one connection to
each bootstrap address the way aiokafka does (TCP, then TLS, then SASL) and keeps the first error of each,
so a list of dead addresses is told apart from credentials a live broker rejected.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from infra.kafka_connection import (
    BOOTSTRAP,
    SASL_MECHANISM,
    SASL_PASSWORD,
    SASL_USERNAME,
    SECURITY_PROTOCOL,
    SSL_CAFILE,
    SSL_CERTFILE,
    host_and_port,
    parse_bootstrap,
    security_options,
)

if TYPE_CHECKING:
    from infra.settings import KafkaSettings

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0
WAIT_SUMMARY_S = 60.0
HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH

Verdict = Literal["ok", "unreachable", "rejected"]


@dataclass(frozen=True)
class Diagnosis:
    """What connecting to the bootstrap list found: a broker answered, none did, or one refused us."""

    verdict: Verdict
    message: str
    setting: str | None = None  # the STREAMSCORE_ variable at fault, when one is

    @property
    def rejected(self) -> bool:
        """A broker answered and refused this configuration: retrying will not help."""
        return self.verdict == "rejected"


class KafkaSettingRejected(RuntimeError):
    """A broker refused the connection because of a setting (its message names it)."""

    def __init__(self, diagnosis: Diagnosis) -> None:
        super().__init__(diagnosis.message)
        self.diagnosis = diagnosis


def classify(error: BaseException, address: str, settings: KafkaSettings) -> Diagnosis:
    """The diagnosis of one address's connection error."""
    from aiokafka.errors import SaslAuthenticationFailed, UnsupportedSaslMechanismError

    if isinstance(error, SaslAuthenticationFailed):
        return Diagnosis("rejected", f"{SASL_PASSWORD} rejected by the broker at {address} (SASL "
                         f"{settings.kafka_sasl_mechanism} authentication failed for {SASL_USERNAME}="
                         f"{settings.kafka_sasl_username!r})", SASL_PASSWORD)
    if isinstance(error, UnsupportedSaslMechanismError):
        return Diagnosis("rejected", f"{SASL_MECHANISM}={settings.kafka_sasl_mechanism} is not enabled on "
                         f"the broker at {address}", SASL_MECHANISM)
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or str(error)
        if error.verify_code == HOSTNAME_MISMATCH:
            return Diagnosis("rejected", f"the broker's certificate does not name the host of {address} "
                             f"({BOOTSTRAP}): {reason}", BOOTSTRAP)
        trusted_by = SSL_CAFILE if settings.kafka_ssl_cafile else f"{SSL_CAFILE} (unset: the system's CAs)"
        return Diagnosis("rejected", f"{trusted_by} does not trust the broker's certificate at {address} "
                         f"({reason})", SSL_CAFILE)
    if isinstance(error, ssl.SSLError):
        reason = error.reason or str(error)
        if "CERTIFICATE_REQUIRED" in str(reason).upper():
            return Diagnosis("rejected", f"the broker at {address} wants a client certificate: set "
                             f"{SSL_CERTFILE} (TLS alert: {reason})", SSL_CERTFILE)
        return Diagnosis("rejected", f"the TLS handshake with {address} failed ({reason}): does the listener "
                         f"use TLS? ({SECURITY_PROTOCOL}={settings.kafka_security_protocol})",
                         SECURITY_PROTOCOL)
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        return Diagnosis("unreachable", f"{address}: no answer within {PROBE_TIMEOUT_S:.0f} s")
    if isinstance(error, ConnectionResetError) or "closed" in str(error):
        # The TCP connection was accepted and then dropped in the handshake: most often a TLS client on
        # a plain listener or the reverse, but a broker shutting down does it too, so it is not fatal.
        return Diagnosis("unreachable", f"{address} closed the connection during the handshake (if this "
                         f"lasts, check {SECURITY_PROTOCOL}={settings.kafka_security_protocol})")
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return Diagnosis("unreachable", f"{address}: {reason}")


async def probe(address: str, settings: KafkaSettings, timeout_s: float = PROBE_TIMEOUT_S) -> Diagnosis:
    """Connect to one address as aiokafka does (TCP, TLS, SASL) and close again."""
    from aiokafka.conn import create_conn

    host, port = host_and_port(address)
    try:
        conn = await asyncio.wait_for(create_conn(host, port, request_timeout_ms=int(timeout_s * 1000),
                                                  **security_options(settings)), timeout_s)
    except Exception as error:
        return classify(error, address, settings)
    conn.close()
    return Diagnosis("ok", f"{address} accepted the connection")


async def diagnose(settings: KafkaSettings, timeout_s: float = PROBE_TIMEOUT_S) -> Diagnosis:
    """Probe every bootstrap address at once: ok when any accepts; a setting refused by a live broker
    wins over addresses that do not answer; else unreachable, with each address's reason."""
    addresses = parse_bootstrap(settings.kafka_bootstrap)
    found = await asyncio.gather(*(probe(address, settings, timeout_s) for address in addresses))
    for verdict in ("ok", "rejected"):
        if hit := next((d for d in found if d.verdict == verdict), None):
            return hit
    return Diagnosis("unreachable", f"no Kafka broker answers at {settings.kafka_bootstrap} ({BOOTSTRAP}): "
                     + "; ".join(d.message for d in found))


async def wait_until_usable(settings: KafkaSettings, interval_s: float = 1.0) -> None:
    """Return once a broker accepts this configuration; raise KafkaSettingRejected when one refuses it.
    While none answers, wait, logging once when it starts and a summary every WAIT_SUMMARY_S."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    failures = 0
    next_summary = started + WAIT_SUMMARY_S
    while True:
        diagnosis = await diagnose(settings)
        if diagnosis.verdict == "ok":
            if failures:
                log.info("Kafka answers; starting", extra={"failed_probes": failures,
                                                          "waited_s": round(loop.time() - started, 1)})
            return
        if diagnosis.rejected:
            raise KafkaSettingRejected(diagnosis)
        failures += 1
        if failures == 1:
            log.error(f"{diagnosis.message}; waiting for it")
        elif loop.time() >= next_summary:
            log.warning("still waiting for Kafka", extra={"failed_probes": failures,
                                                          "waited_s": round(loop.time() - started, 1)})
            next_summary = loop.time() + WAIT_SUMMARY_S
        await asyncio.sleep(interval_s)


def preflight(settings: KafkaSettings) -> None:
    """Before a service starts: wait for Kafka; when a broker refuses a setting, log the one line that
    names it and exit (status 2), without a traceback."""
    try:
        asyncio.run(wait_until_usable(settings))
    except KafkaSettingRejected as rejected:
        log.critical(str(rejected), extra={"setting": rejected.diagnosis.setting})
        logging.shutdown()
        raise SystemExit(2) from None
