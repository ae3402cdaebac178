"""Hypothesis strategies for the wire equivalence tests: valid contract messages and their mutations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import strategies as st

from schemas.feature_log import pack
from schemas.features import FEATURE_NAMES, FEATURE_RANGES, PRODUCTS
from schemas.messages import CUSTOMER_ID_PATTERN

customer_ids = st.from_regex(f"^{CUSTOMER_ID_PATTERN}$", fullmatch=True).filter(lambda s: "\n" not in s)
bad_customer_ids = st.one_of(
    st.just(""), st.text(max_size=70), st.just("-x"), st.just("a" * 65), st.just("a b"), st.integers()
)
features = st.tuples(*(st.integers(low, high) for low, high in FEATURE_RANGES)).map(list)
aware = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5, minutes=30))]),
)


def _uuid_text(value: Any, style: str) -> Any:
    text = str(value)
    return {"upper": text.upper(), "hex": value.hex, "braces": "{" + text + "}"}.get(style, text)


bad_packed = st.one_of(
    features.map(pack).map(lambda text: text[:-1]),  # 85 characters
    features.map(pack).map(lambda text: text + "0"),  # 87
    st.tuples(features.map(pack), st.integers(0, 85), st.sampled_from(["/", "Z", "z", "é", "\x00", "\\"]))
    .map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]),  # one character out of range or alphabet
    st.tuples(features.map(pack), st.integers(0, 4)).map(lambda t: t[0][:1] + "Y" + t[0][2:]),  # MAANTHUI 41
    st.sampled_from([1, [0] * 86, ""]),
)
"""Values `features_packed` must refuse."""

uuid_styles = st.sampled_from(["canonical"] * 6 + ["upper", "hex", "braces"])
uuid_texts = st.builds(_uuid_text, st.uuids(), uuid_styles)


@st.composite
def feature_event_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A FeatureEvent as a JSON object, valid; optional fields sometimes left out."""
    event: dict[str, Any] = {
        "event_id": draw(uuid_texts),
        "customer_id": draw(customer_ids),
        "features": draw(features),
        "occurred_at": draw(aware).isoformat().replace("+00:00", draw(st.sampled_from(["Z", "+00:00"]))),
        "source": draw(st.sampled_from(["event", "batch", "sync"])),
    }
    if draw(st.booleans()):
        event["batch_id"] = draw(st.one_of(st.none(), uuid_texts))
    if draw(st.booleans()):
        event["schema_version"] = 1
    for key in ("event_id", "occurred_at", "source"):
        if draw(st.integers(0, 9)) == 0:
            del event[key]
    return event


def _bad_feature(draw: st.DrawFn, values: list[Any]) -> list[Any] | dict[str, Any]:
    index = draw(st.integers(0, len(values) - 1))
    low, high = FEATURE_RANGES[index]
    kind = draw(st.sampled_from(["low", "high", "float", "int_float", "bool", "str", "huge", "none",
                                 "short", "long", "named", "nested", "neg_zero"]))
    out: list[Any] = list(values)
    if kind == "short":
        return out[: draw(st.integers(0, len(out) - 1))]
    if kind == "long":
        return [*out, 0]
    if kind == "named":
        return {name: value for name, value in zip(FEATURE_NAMES, out, strict=True)}
    out[index] = {
        "low": low - draw(st.integers(1, 1000)),
        "high": high + draw(st.integers(1, 1000)),
        "float": draw(st.floats(allow_nan=False, allow_infinity=False)),
        "int_float": float(out[index]),
        "bool": True,
        "str": str(out[index]),
        "huge": draw(st.sampled_from([2**63, 2**64 + low, -(2**63) - 1, 10**30])),
        "none": None,
        "nested": [out[index]],
        "neg_zero": -0.0,
    }[kind]
    return out


@st.composite
def feature_event_payloads(draw: st.DrawFn) -> bytes:
    """Bytes of a FeatureEvent message, valid or broken in one of many ways, in one of several encodings."""
    event: Any = draw(feature_event_dicts())
    mutation = draw(st.sampled_from(["none"] * 8 + [
        "feature", "customer", "unknown_key", "missing_required", "version", "source", "naive_time",
        "bad_time", "bad_uuid", "not_object", "batch_id", "garbage",
    ]))
    if mutation == "feature":
        event["features"] = _bad_feature(draw, event["features"])
    elif mutation == "customer":
        event["customer_id"] = draw(bad_customer_ids)
    elif mutation == "unknown_key":
        event[draw(st.sampled_from(["extra", "Event_id", "features "]))] = 1
    elif mutation == "missing_required":
        del event[draw(st.sampled_from(["customer_id", "features"]))]
    elif mutation == "version":
        event["schema_version"] = draw(st.sampled_from([0, 2, "1", 1.0, True, None]))
    elif mutation == "source":
        event["source"] = draw(st.sampled_from(["EVENT", "", "stream", 1, None]))
    elif mutation == "naive_time":
        event["occurred_at"] = draw(aware).replace(tzinfo=None).isoformat()
    elif mutation == "bad_time":
        event["occurred_at"] = draw(st.sampled_from(
            ["2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "yesterday", "", "2026-01-01", 1700000000,
             "2026-01-01T24:00:00Z", "2026-01-01T00:00:00.1234567Z", "2026-01-01 00:00:00Z"]))
    elif mutation == "bad_uuid":
        event["event_id"] = draw(st.sampled_from(["x", "", "1234", 5, None]))
    elif mutation == "not_object":
        event = draw(st.sampled_from([[event], "event", 1, None]))
    elif mutation == "batch_id":
        event["batch_id"] = draw(st.sampled_from(["", "nope", 7]))
    elif mutation == "garbage":
        return draw(st.sampled_from([b"", b"{", b"\xff\xfe", b"null", b"[]", b'{"a":1}{}'])) + draw(
            st.binary(max_size=20))
    return encode_json(draw, event)


def _compact(value: Any) -> bytes:
    """orjson's bytes; json's for what orjson refuses (integers beyond 64 bits are valid JSON too)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


def encode_json(draw: st.DrawFn, value: Any) -> bytes:
    """JSON bytes as various producers write them (compact, spaced, indented, with a duplicate key)."""
    style = draw(st.sampled_from(["orjson", "orjson", "spaced", "indented", "duplicate", "ascii"]))
    if style == "orjson":
        return _compact(value)
    if style == "spaced":
        return json.dumps(value).encode()
    if style == "indented":
        return json.dumps(value, indent=1).encode()
    if style == "ascii":
        return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode()
    if isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        body = _compact(value)
        first = orjson.dumps(draw(st.sampled_from([0, "x", None])))
        return b'{"' + key.encode() + b'":' + first + b"," + body[1:]
    return _compact(value)


products = st.sampled_from(PRODUCTS)
unit_floats = st.floats(min_value=0.0, max_value=1.0)


@st.composite
def prediction_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid Prediction as a JSON object."""
    picks = draw(st.lists(products, min_size=3, max_size=3))
    out: dict[str, Any] = {
        "event_id": draw(uuid_texts),
        "customer_id": draw(customer_ids),
        "model_version": draw(st.one_of(st.just("v20260101-1"), st.text(max_size=70))),
        "recommendations": [
            {"product_id": p.product_id, "name": p.name, "probability": draw(unit_floats)} for p in picks
        ],
        "propensity": draw(unit_floats),
        "segment": {"label": draw(st.sampled_from(["high", "medium", "low"])),
                    "score": draw(st.floats(min_value=0.0, max_value=100.0))},
        "scored_at": draw(aware).isoformat().replace("+00:00", draw(st.sampled_from(["Z", "+00:00"]))),
        "source": draw(st.sampled_from(["event", "batch", "sync"])),
    }
    if draw(st.booleans()):
        out["batch_id"] = draw(st.one_of(st.none(), uuid_texts))
    if draw(st.booleans()):
        out["schema_version"] = 1
    if draw(st.booleans()):
        out["features_packed"] = pack(draw(features))
    return out


@st.composite
def prediction_payloads(draw: st.DrawFn) -> bytes:
    """Bytes of a Prediction message, valid or broken in one of many ways."""
    value: Any = draw(prediction_dicts())
    mutation = draw(st.sampled_from(["none"] * 8 + [
        "probability", "propensity", "score", "label", "two_recs", "rec_key", "int_number", "nul",
        "long_version", "missing", "unknown", "naive_time", "bad_uuid", "source", "version", "garbage",
        "packed",
    ]))
    if mutation == "probability":
        value["recommendations"][draw(st.integers(0, 2))]["probability"] = draw(
            st.sampled_from([-0.1, 1.5, "0.5", None, 1]))
    elif mutation == "propensity":
        value["propensity"] = draw(st.sampled_from([-1e-9, 1.0000001, "x", None, True]))
    elif mutation == "score":
        value["segment"]["score"] = draw(st.sampled_from([-0.5, 100.5, "50"]))
    elif mutation == "label":
        value["segment"]["label"] = draw(st.sampled_from(["HIGH", "", 1]))
    elif mutation == "two_recs":
        value["recommendations"] = value["recommendations"][: draw(st.integers(0, 2))]
    elif mutation == "rec_key":
        value["recommendations"][0]["extra"] = 1
    elif mutation == "int_number":
        value["propensity"] = draw(st.sampled_from([0, 1]))
    elif mutation == "nul":
        value["model_version"] = "v\x00"
    elif mutation == "long_version":
        value["model_version"] = "v" * draw(st.integers(64, 80))
    elif mutation == "missing":
        del value[draw(st.sampled_from(sorted(k for k in value if k not in ("schema_version", "batch_id"))))]
    elif mutation == "unknown":
        value["extra"] = 1
    elif mutation == "naive_time":
        value["scored_at"] = draw(aware).replace(tzinfo=None).isoformat()
    elif mutation == "bad_uuid":
        value[draw(st.sampled_from(["event_id", "batch_id"]))] = draw(st.sampled_from(["x", "", 5]))
    elif mutation == "source":
        value["source"] = draw(st.sampled_from(["EVENT", None]))
    elif mutation == "version":
        value["schema_version"] = draw(st.sampled_from([2, "1", 1.0, None]))
    elif mutation == "packed":
        value["features_packed"] = draw(bad_packed)
    elif mutation == "garbage":
        return draw(st.sampled_from([b"", b"{", b"\xff", b"[]", b"null"])) + draw(st.binary(max_size=10))
    return encode_json(draw, value)
