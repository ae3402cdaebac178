"""Outcomes through the sink into live quality, equal to the same figures computed offline (real engines)."""

from __future__ import annotations

import json
import math
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from infra.database import create_engine, create_sessionmaker
from infra.kafka import ensure_topics, topic_name
from infra.settings import KafkaSettings
from ingest_api.console.quality import performance
from schemas import topics
from schemas.features import PRODUCT_IDS, PRODUCTS
from schemas.messages import Prediction, Recommendation
from schemas.outcomes import Outcome
from store.outcome_links import refresh_links
from store.prediction_chunks import refresh_chunks
from tests.helpers.pipeline import (
    count,
    encoded,
    fetch,
    prediction,
    produce,
    running,
    sink_settings,
    wait_committed,
    wait_for,
)

HORIZON = timedelta(days=1)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
SERVED, SHADOW = "v-live", "v-shadow"


def _recommended(rng: random.Random) -> list[Recommendation]:
    picks = rng.sample(PRODUCTS, 3)
    return [Recommendation(product_id=p.product_id, name=p.name, probability=0.3) for p in picks]


def _predictions(rng: random.Random, tag: str, customers: int) -> tuple[list[Prediction], list[Prediction]]:
    """Served and shadow predictions; a quarter of customers are scored twice, 6 hours apart."""
    served: list[Prediction] = []
    shadow: list[Prediction] = []
    for i in range(customers):
        for hours in (0, 6) if i % 4 == 0 else (0,):
            at = T0 + timedelta(minutes=i, hours=hours)
            p = prediction(f"{tag}-{i}", model_version=SERVED, propensity=round(rng.random() ** 2, 3)
                           ).model_copy(update={"scored_at": at, "recommendations": _recommended(rng)})
            served.append(p)
            shadow.append(p.model_copy(update={"model_version": SHADOW, "propensity": rng.random(),
                                               "recommendations": _recommended(rng)}))
    recent = prediction(f"{tag}-recent", model_version=SERVED, propensity=0.4)  # horizon still open
    served.append(recent.model_copy(update={"scored_at": datetime.now(UTC) - timedelta(hours=1)}))
    return served, shadow


def _outcomes(rng: random.Random, served: list[Prediction]) -> list[Outcome]:
    """Caravan purchases drawn from the propensity, one other product for half, some out of horizon."""
    out: list[Outcome] = []
    for p in served:
        if p.scored_at > T0 + timedelta(days=30):
            continue
        bought: list[tuple[str, int]] = []
        if rng.random() < p.propensity:
            bought.append(("caravan", rng.choice((1, 3, 8, 30))))  # 30 h: outside the horizon
        if rng.random() < 0.5:
            bought.append((rng.choice(PRODUCT_IDS), rng.choice((2, 20))))
        out += [Outcome(outcome_id=f"o-{uuid.uuid4().hex[:12]}", customer_id=p.customer_id,
                        product_id=product,
                        occurred_at=p.scored_at + timedelta(hours=hours), source="crm")
                for product, hours in bought]
    out.append(Outcome(outcome_id="o-nobody", customer_id="no-prediction", product_id="car",
                       occurred_at=T0 + timedelta(hours=2)))
    return out


def _offline(rows: list[dict[str, Any]], outcomes: list[Outcome], as_of: datetime) -> dict[str, Any]:
    """The documented join rule and the figures, by plain loops over stored rows (the reference)."""
    attributed: dict[int, set[str]] = {}
    unmatched = 0
    for o in outcomes:
        candidates = [r for r in rows if r["customer_id"] == o.customer_id
                      and o.occurred_at - HORIZON <= r["scored_at"] < o.occurred_at]
        if not candidates:
            unmatched += 1
            continue
        best = max(candidates, key=lambda r: (r["scored_at"], r["id"]))
        attributed.setdefault(best["id"], set()).add(o.product_id)
    y, p, pairs, hits = [], [], 0, 0
    for r in rows:
        bought = attributed.get(r["id"], set())
        top3 = {item["product_id"] for item in r["recommendations"]}
        pairs += len(bought)
        hits += len(bought & top3)
        caravan_in_horizon = any(
            o.customer_id == r["customer_id"] and o.product_id == "caravan"
            and r["scored_at"] < o.occurred_at <= r["scored_at"] + HORIZON for o in outcomes)
        if "caravan" in bought:
            y.append(1)
        elif caravan_in_horizon or r["scored_at"] + HORIZON >= as_of:
            continue
        else:
            y.append(0)
        p.append(r["propensity"])
    ya, pa = np.array(y), np.array(p)
    top20, left = 0.0, round(0.2 * len(pa))  # buyers among the top 20 %, ties at the cut shared evenly
    for value in sorted(set(pa.tolist()), reverse=True):
        group = pa == value
        take = min(left, int(group.sum()))
        top20, left = top20 + take * ya[group].mean(), left - take
    bins = [[i for i in range(len(pa)) if min(int(pa[i] * 10), 9) == b] for b in range(10)]
    return {
        "labelled": len(ya), "unmatched": unmatched, "auc": roc_auc_score(ya, pa),
        "ece": sum(len(b) * abs(pa[b].mean() - ya[b].mean()) for b in bins if b) / len(pa),
        "observed": [float(ya[b].mean()) if b else None for b in bins], "hr3": hits / pairs,
        "top20": top20,
    }


def _assert_equal(live: dict[str, Any], offline: dict[str, Any]) -> None:
    assert live["labelled"] == offline["labelled"]
    assert live["unmatched"] == offline["unmatched"]
    assert math.isclose(live["propensity"]["auc"], offline["auc"], abs_tol=1e-9)
    assert math.isclose(live["propensity"]["ece"], offline["ece"], abs_tol=1e-9)
    for got, want in zip(live["propensity"]["reliability"], offline["observed"], strict=True):
        assert (got["observed"] is None) == (want is None)
        assert want is None or math.isclose(got["observed"], want, abs_tol=1e-9)
    assert math.isclose(live["recommender"]["hr3"], offline["hr3"], abs_tol=1e-9)
    assert math.isclose(live["propensity"]["top20_buyers"], offline["top20"], abs_tol=1e-9)
    assert 0 < live["propensity"]["buyers"] < live["labelled"]


async def test_live_quality_equals_offline_and_ignores_replay_order_and_duplicates(
    kafka_settings: KafkaSettings, database_url: str, redis_url: str, unique_id: str
) -> None:
    rng = random.Random(26)
    settings = sink_settings(kafka_settings, database_url, redis_url)
    await ensure_topics(settings)
    served, shadow = _predictions(rng, f"oc{unique_id}", 300)
    outcomes = _outcomes(rng, served)
    outcomes_topic = topic_name(settings, topics.OUTCOMES)
    wire = [(o.customer_id.encode(), o.model_dump_json().encode()) for o in outcomes]
    sent = await produce(settings, topic_name(settings, topics.PREDICTIONS), encoded(served))
    sent += await produce(settings, topic_name(settings, topics.PREDICTIONS_SHADOW), encoded(shadow))
    shuffled = wire + wire[: len(wire) // 3]  # redelivered copies
    rng.shuffle(shuffled)
    sent += await produce(settings, outcomes_topic, [*shuffled, (b"x", b'{"outcome_id": "bad"}')])
    db = create_engine(settings)
    sessions = create_sessionmaker(db)
    as_of = datetime.now(UTC)
    since, until = T0 - timedelta(days=1), as_of
    try:
        async with running(settings):
            async def stored() -> bool:
                return (await count(database_url, "outcomes") == len(outcomes)
                        and await count(database_url, "predictions_shadow") == len(shadow)
                        and await count(database_url, "dead_letters") == 1)

            await wait_for(stored, within_s=30)
            first = await performance(sessions, SERVED, since, until, HORIZON, as_of)
            first_shadow = await performance(sessions, SHADOW, since, until, HORIZON, as_of)
            # Pack every stored prediction and link (store/prediction_chunks.py, store/outcome_links.py): the
            # figures below come from the packs instead of rows read live, and must not move either.
            assert await refresh_chunks(sessions, min_rows=1) > 0
            assert await refresh_links(sessions, HORIZON, min_rows=1) > 0
            # Replay everything in reverse order: nothing new is stored, no figure moves.
            sent += await produce(settings, outcomes_topic, wire[::-1])
            group = settings.topic_prefix + topics.SINK_GROUP
            replayed = [m for m in sent if m.topic == outcomes_topic]
            await wait_committed(settings, group, [outcomes_topic], replayed)
            assert await count(database_url, "outcomes") == len(outcomes)
            again = await performance(sessions, SERVED, since, until, HORIZON, as_of)
            again_shadow = await performance(sessions, SHADOW, since, until, HORIZON, as_of)
        for table, version, live in (("predictions", SERVED, first),
                                     ("predictions_shadow", SHADOW, first_shadow)):
            rows = [dict(r) for r in await fetch(
                database_url, f"SELECT id, customer_id, scored_at, propensity, recommendations FROM {table} "
                "WHERE model_version = $1", version)]
            for r in rows:
                r["recommendations"] = json.loads(r["recommendations"])
            _assert_equal(live, _offline(rows, outcomes, as_of))
        assert first["pending"] == 1 and first_shadow["pending"] == 0
        assert first["propensity"]["auc"] != first_shadow["propensity"]["auc"]
        assert first["superseded"] > 0
        assert again == first
        assert again_shadow == first_shadow
    finally:
        await db.dispose()
