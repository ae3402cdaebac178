"""AsyncAPI 3.0 document of the topics, generated from the contracts in `schemas/`.

The consumer groups (`schemas.topics.CONSUMERS`) and the producers are declared on a documentation-only
FastStream broker, never connected, and every message payload is set to its contract model from
`schemas.messages` (the services read raw bytes). No service app is built to describe it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from infra.kafka import topic_name
from infra.kafka_connection import parse_bootstrap
from infra.settings import KafkaSettings
from schemas import topics
from schemas.messages import SCHEMA_VERSION, DeadLetter, FeatureEvent, Prediction
from schemas.outcomes import Outcome
from schemas.redrive import REDRIVE_HEADER

CONTRACTS: dict[str, type[BaseModel]] = {
    topics.CUSTOMER_FEATURES: FeatureEvent,
    topics.BATCH_ROWS: FeatureEvent,
    topics.PREDICTIONS: Prediction,
    topics.DEAD_LETTER: DeadLetter,
    topics.PREDICTIONS_SHADOW: Prediction,
    topics.OUTCOMES: Outcome,
    topics.PREDICTIONS_REPLAY: Prediction,
}
TRACED = (topics.CUSTOMER_FEATURES, topics.BATCH_ROWS, topics.PREDICTIONS)
"""Topics whose records carry the optional W3C `traceparent` header while tracing is on (infra/tracing.py)."""
TRACE_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {"traceparent": {
        "type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        "description": "Optional W3C trace context of the event the record belongs to; present only while "
                       "StreamScore runs with tracing on, and on predictions only for sampled traces "
                       "(docs/operations.md, Tracing).",
    }},
}
PRODUCERS: tuple[tuple[str, str, str], ...] = (
    (topics.CUSTOMER_FEATURES, "api", "Feature events accepted by POST /api/v1/events (202 after acks=all)."),
    (topics.BATCH_ROWS, "api", "One event per valid CSV row of POST /api/v1/predict/batch (batch_id set)."),
    (topics.PREDICTIONS, "scorer", "One prediction per scored event (the API's sync predictions too)."),
    (topics.DEAD_LETTER, "pipeline", "Records the scorer or sink could not decode, validate or score."),
    (topics.PREDICTIONS_SHADOW, "scorer",
     "The shadow model version's prediction of each scored event, for comparison only: never served."),
    (topics.OUTCOMES, "api",
     "Purchases reported after scoring (POST /api/v1/outcomes, JSON or CSV); deduplicate on `outcome_id`."),
    (topics.PREDICTIONS_REPLAY, "replay",
     "`streamscore replay` / POST /api/v1/replays: logged events re-scored by another model version over a "
     "past window; the Prediction contract, scored_at the replay's time. Never served, never cached."),
)
DESCRIPTION = f"""\
StreamScore's Kafka contracts, schema version {SCHEMA_VERSION}.

* Every record is UTF-8 JSON; its Kafka key is the `customer_id`, so all events and predictions of one
  customer land on one partition, in order. A dead letter keeps the key of the record that failed.
* Delivery is at-least-once: deduplicate on `event_id`.
* A record sent back from the dead letters (`streamscore dlq redrive`) is the original record with its
  original key and one header, `{REDRIVE_HEADER}`: how many times it was redriven (ASCII decimal). A dead
  letter of such a record carries that count in `redrive_count`.
* Additive (optional) fields keep the version; a breaking change publishes new `*.v2` topics alongside
  the old ones for a migration period. See docs/consumers.md.
"""
KEY_DESCRIPTIONS: dict[str, str] = {base: "customer_id" for base in topics.ALL_TOPICS} | {
    topics.DEAD_LETTER: "the failed record's own key: its customer_id, or none when it had none",
}
"""The Kafka key of each topic's records, as the README's topics table states it too."""


def key_binding(base: str) -> dict[str, Any]:
    """The Kafka message binding naming the key of a topic's records."""
    key = {"type": "string", "description": KEY_DESCRIPTIONS[base]}
    return {"kafka": {"key": key, "bindingVersion": "0.4.0"}}


def _documentation_broker(settings: KafkaSettings) -> KafkaBroker:
    """A never-connected broker declaring every consumer group and every producer of the contract."""
    broker = KafkaBroker(parse_bootstrap(settings.kafka_bootstrap))
    for consumer in topics.CONSUMERS:
        for base in consumer.topics:
            topic = topic_name(settings, base)
            broker.subscriber(
                topic, group_id=settings.topic_prefix + consumer.group,
                title=f"{topic}:{consumer.operation}", description=consumer.description,
            )(_documented_only)
    for base, producer, description in PRODUCERS:
        topic = topic_name(settings, base)
        broker.publisher(topic, title=f"{topic}:{producer}", schema=CONTRACTS[base],
                         description=f"Published by the {producer} service. {description}")
    return broker


async def _documented_only(body: bytes) -> None:
    """Never called: the documentation broker only describes subscriptions."""


def _contract_schemas() -> dict[str, Any]:
    """JSON schemas of the contract models, with nested definitions hoisted into components."""
    schemas: dict[str, Any] = {}
    for model in {id(m): m for m in CONTRACTS.values()}.values():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


SASL_SCHEMES = {"PLAIN": "plain", "SCRAM-SHA-256": "scramSha256", "SCRAM-SHA-512": "scramSha512"}


def _merge_servers(document: dict[str, Any], settings: KafkaSettings) -> None:
    """One server per bootstrap address (`kafka` when there is one), with the TLS and SASL in use."""
    addresses = parse_bootstrap(settings.kafka_bootstrap)
    names = ["kafka"] if len(addresses) == 1 else [f"kafka-{n}" for n in range(1, len(addresses) + 1)]
    protocol = settings.kafka_security_protocol
    server: dict[str, Any] = {
        "pathname": "", "protocol": "kafka-secure" if protocol.endswith("SSL") else "kafka",
        "protocolVersion": "auto",
        "description": f"Any Kafka-compatible cluster (STREAMSCORE_KAFKA_BOOTSTRAP; {protocol}).",
    }
    if protocol.startswith("SASL_") and settings.kafka_sasl_mechanism:
        document.setdefault("components", {}).setdefault("securitySchemes", {})["kafka-sasl"] = {
            "type": SASL_SCHEMES[settings.kafka_sasl_mechanism],
            "description": f"SASL {settings.kafka_sasl_mechanism} "
                           "(STREAMSCORE_KAFKA_SASL_USERNAME and STREAMSCORE_KAFKA_SASL_PASSWORD).",
        }
        server["security"] = [{"$ref": "#/components/securitySchemes/kafka-sasl"}]
    document["servers"] = {name: {"host": address, **server} for name, address in zip(names, addresses,
                                                                                     strict=True)}
    for channel in document.get("channels", {}).values():
        channel["servers"] = [{"$ref": f"#/servers/{name}"} for name in names]


def _name_receive_operations(document: dict[str, Any]) -> None:
    """Receive operations keep the `<channel>Subscribe` ids FastStream gives untitled subscribers."""
    document["operations"] = {
        (f"{name}Subscribe" if operation.get("action") == "receive" else name): operation
        for name, operation in document.get("operations", {}).items()
    }


def _set_payloads(document: dict[str, Any], settings: KafkaSettings) -> None:
    """Point every message at its topic's contract schema and add the key binding."""
    components = document.setdefault("components", {})
    messages = components.setdefault("messages", {})
    for channel in document.get("channels", {}).values():
        base = next((b for b in CONTRACTS if channel.get("address") == topic_name(settings, b)), None)
        if base is None:
            continue
        channel.setdefault("bindings", {}).setdefault("kafka", {})["partitions"] = settings.kafka_partitions
        for ref in channel.get("messages", {}).values():
            name = unquote(ref["$ref"].rsplit("/", 1)[-1])
            if name in messages:
                message = messages[name]
                message["payload"] = {"$ref": f"#/components/schemas/{CONTRACTS[base].__name__}"}
                message["contentType"] = "application/json"
                message["bindings"] = key_binding(base)
                if base in TRACED:
                    message["headers"] = TRACE_HEADERS
    used = str(document.get("channels")) + str(messages)
    components["schemas"] = {name: schema for name, schema in components.get("schemas", {}).items()
                             if f"/{name}'" in used} | _contract_schemas()


def asyncapi_document(settings: KafkaSettings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a JSON-ready dict."""
    settings = settings or KafkaSettings()
    factory = AsyncAPI(_documentation_broker(settings), title="StreamScore event contracts",
                       version=f"{SCHEMA_VERSION}.0.0", description=DESCRIPTION, schema_version="3.0.0")
    document: dict[str, Any] = factory.to_specification().to_jsonable()
    _merge_servers(document, settings)
    _name_receive_operations(document)
    _set_payloads(document, settings)
    return document
