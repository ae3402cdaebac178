"""AsyncAPI 3.0 document of the four topics, generated from the FastStream scorer and sink apps.

FastStream describes what each app subscribes to; the producers that are not FastStream publishers
(the API, the scorer's per-message sends) are declared here on a documentation-only broker, and every
message payload is set to its contract model from `schemas.messages` (the subscribers read raw bytes).
"""

from __future__ import annotations

import copy
import importlib
from typing import Any
from urllib.parse import unquote

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from schemas import topics
from schemas.messages import SCHEMA_VERSION, DeadLetter, FeatureEvent, Prediction
from streamscore.kafka import topic_name
from streamscore.settings import KafkaSettings

CONTRACTS: dict[str, type[BaseModel]] = {
    topics.CUSTOMER_FEATURES: FeatureEvent,
    topics.BATCH_ROWS: FeatureEvent,
    topics.PREDICTIONS: Prediction,
    topics.DEAD_LETTER: DeadLetter,
}
PRODUCERS: tuple[tuple[str, str, str], ...] = (
    (topics.CUSTOMER_FEATURES, "api", "Feature events accepted by POST /api/v1/events (202 after acks=all)."),
    (topics.BATCH_ROWS, "api", "One event per valid CSV row of POST /api/v1/predict/batch (batch_id set)."),
    (topics.PREDICTIONS, "scorer", "One prediction per scored event (the API's sync predictions too)."),
    (topics.DEAD_LETTER, "pipeline", "Records the scorer or sink could not decode, validate or score."),
)
DESCRIPTION = f"""\
StreamScore's Kafka contracts, schema version {SCHEMA_VERSION}.

* Every record is UTF-8 JSON; its Kafka key is the `customer_id`, so all events and predictions of one
  customer land on one partition, in order.
* Delivery is at-least-once: deduplicate on `event_id`.
* Additive (optional) fields keep the version; a breaking change publishes new `*.v2` topics alongside
  the old ones for a migration period. See docs/consumers.md.
"""
KEY_BINDING = {"kafka": {"key": {"type": "string", "description": "customer_id"}, "bindingVersion": "0.4.0"}}


def _apps(settings: KafkaSettings) -> list[Any]:
    """The FastStream apps whose subscribers are part of the contract (built, never started)."""
    apps = []
    for module in ("scorer.app", "sink.app"):
        try:
            build = importlib.import_module(module).build_app
        except (ModuleNotFoundError, AttributeError):
            continue
        apps.append(build())
    return apps


def _producers_broker(settings: KafkaSettings) -> KafkaBroker:
    """A never-connected broker declaring the producers that are not FastStream publishers."""
    broker = KafkaBroker(settings.kafka_bootstrap)
    for base, producer, description in PRODUCERS:
        topic = topic_name(settings, base)
        broker.publisher(topic, title=f"{topic}:{producer}", schema=CONTRACTS[base],
                         description=f"Published by the {producer} service. {description}")
    return broker


def _contract_schemas() -> dict[str, Any]:
    """JSON schemas of the contract models, with nested definitions hoisted into components."""
    schemas: dict[str, Any] = {}
    for model in {id(m): m for m in CONTRACTS.values()}.values():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def _merge_servers(document: dict[str, Any], host: str) -> None:
    """One `kafka` server instead of one per FastStream broker."""
    document["servers"] = {"kafka": {
        "host": host, "pathname": "", "protocol": "kafka", "protocolVersion": "auto",
        "description": "Any Kafka-compatible cluster (STREAMSCORE_KAFKA_BOOTSTRAP).",
    }}
    for channel in document.get("channels", {}).values():
        channel["servers"] = [{"$ref": "#/servers/kafka"}]


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
                message["bindings"] = copy.deepcopy(KEY_BINDING)
    used = str(document.get("channels")) + str(messages)
    components["schemas"] = {name: schema for name, schema in components.get("schemas", {}).items()
                             if f"/{name}'" in used} | _contract_schemas()


def asyncapi_document(settings: KafkaSettings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a JSON-ready dict."""
    settings = settings or KafkaSettings()
    brokers = [app.broker for app in _apps(settings)] + [_producers_broker(settings)]
    factory = AsyncAPI(*brokers, title="StreamScore event contracts", version=f"{SCHEMA_VERSION}.0.0",
                       description=DESCRIPTION, schema_version="3.0.0")
    document: dict[str, Any] = factory.to_specification().to_jsonable()
    _merge_servers(document, settings.kafka_bootstrap)
    _set_payloads(document, settings)
    return document
