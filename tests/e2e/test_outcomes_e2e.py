"""Outcomes close the loop on the real pipeline: the CoIL training set posted through the API, scored by the
real scorer (active and shadow versions), stored by the real sink; outcomes posted through the API; the live
figures equal the same figures computed offline from the stored predictions, and the quality alert flips in
the running API when outcomes contradict the model (real broker, Postgres, Redis, models)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from models import data as D
from models.dqn import hide, sample_hidden
from models.engine import InferenceEngine
from models.registry import PACKAGE_REGISTRY, Registry
from schemas import topics
from schemas.features import PRODUCT_IDS, TARGET_INDEX
from schemas.messages import FeatureEvent
from scorer.app import build_app as build_scorer
from sink.app import build_app as build_sink
from tests.helpers import engines
from tests.helpers.api import Api, api_settings, running_api
from tests.helpers.api_stream import EVENTS_PATH, event_body
from tests.helpers.db import fresh_database
from tests.helpers.pipeline import (
    committed_offsets,
    count,
    fetch,
    scorer_settings,
    sink_settings,
    wait_for,
)

HORIZON_S = 3  # every horizon closes seconds after scoring, so each prediction is labelled in the test
ALERT_N, MARGIN = 200, 0.3  # so wide that the training set's true outcomes never fire it (realised AUC 0.73+)
ALERT_ROWS = 300  # the later stream the contradicting outcomes are about (more than ALERT_N)
BOUGHT_AFTER = timedelta(milliseconds=1)  # an outcome occurs just after its customer was scored
OUTCOMES_PATH, PERFORMANCE_PATH = "/api/v1/outcomes", "/api/v1/models/performance"
TABLES = ("predictions", "predictions_shadow")  # the active version's rows, the shadow version's


@dataclass
class Loop:
    """The running pipeline, the streamed training set and the outcomes posted for it."""

    api: Api
    database_url: str
    registry: Registry
    versions: tuple[str, str]  # (active, shadow)
    labels: dict[str, int]  # customer -> CARAVAN of the training row
    outcomes: list[dict[str, str]]
    window: dict[str, str]  # since/until around the training stream's predictions
    token: str
    published: int  # outcome records on the topic (one per item accepted)

    async def post_outcomes(self, items: Sequence[dict[str, str]], chunk: int = 2000) -> None:
        """POST outcomes through the API; each record is counted."""
        await post_all(self.api.client, OUTCOMES_PATH, items, chunk)
        self.published += len(items)


async def post_all(client: httpx.AsyncClient, path: str, items: Sequence[Any], chunk: int = 2000) -> None:
    """POST the items in chunks; each must be accepted."""
    for start in range(0, len(items), chunk):
        answer = await client.post(path, json=list(items[start:start + chunk]))
        assert answer.status_code == 202, answer.text[:500]


async def stream_events(api: Api, database_url: str, events: list[FeatureEvent], before: int) -> None:
    """Post events through the API and wait until both versions' predictions of them are stored."""
    await post_all(api.client, EVENTS_PATH, event_body(events), chunk=1000)

    async def scored() -> bool:
        return all([await count(database_url, t) == before + len(events) for t in TABLES])

    await wait_for(scored, within_s=60)


async def scored_at(database_url: str, customers: list[str]) -> tuple[dict[str, datetime], datetime]:
    """Per customer, the later of its active and shadow predictions' scoring times; the earliest of all."""
    rows = await fetch(database_url, "SELECT customer_id, max(scored_at) AS at, min(scored_at) AS first "
                       "FROM (SELECT customer_id, scored_at FROM predictions UNION ALL "
                       "SELECT customer_id, scored_at FROM predictions_shadow) p "
                       "WHERE customer_id = ANY($1) GROUP BY customer_id", customers)
    assert all(r["at"] - r["first"] < timedelta(seconds=HORIZON_S) / 2 for r in rows)
    return {r["customer_id"]: r["at"] for r in rows}, min(r["first"] for r in rows)


def outcome(outcome_id: str, customer: str, product: str, at: datetime) -> dict[str, str]:
    return {"outcome_id": outcome_id, "customer_id": customer, "product_id": product,
            "occurred_at": at.isoformat(), "source": "crm"}


async def horizons_closed(latest: datetime) -> None:
    """Sleep until the horizon of a prediction scored at `latest` has closed."""
    wait = (latest + timedelta(seconds=HORIZON_S) - datetime.now(latest.tzinfo)).total_seconds()
    await asyncio.sleep(max(wait, 0.0) + 0.2)


def two_version_registry(root: Path) -> tuple[str, str]:
    """A copy of the packaged registry: its active version, and its other version as the shadow."""
    shutil.copytree(PACKAGE_REGISTRY, root)
    registry = Registry(root)
    active = registry.active_version()
    shadow = next(v for v in registry.versions() if v != active)
    registry.set_shadow(shadow)
    return active, shadow


@pytest.fixture(scope="module")
async def loop(postgres_admin_url: str, kafka_bootstrap: str, redis_url: str,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Loop]:
    """Stream the whole training set (5,822 rows) and post its outcomes."""
    token = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("outcomes") / "registry"
    versions = two_version_registry(root)
    kafka = engines.broker_settings(engines.Broker("tansu", kafka_bootstrap, idempotent=False))
    with pytest.MonkeyPatch.context() as env:
        for name, value in (("OUTCOME_HORIZON_SECONDS", HORIZON_S), ("QUALITY_INTERVAL_SECONDS", 1),
                            ("QUALITY_ALERT_LAST_N", ALERT_N), ("QUALITY_ALERT_MARGIN", MARGIN)):
            env.setenv(f"STREAMSCORE_{name}", str(value))
        async with fresh_database(postgres_admin_url) as database_url:
            engine = await asyncio.to_thread(InferenceEngine.load, root, follow_shadow=True)
            assert (engine.model_version, engine.shadow_version) == versions
            scorer = build_scorer(scorer_settings(kafka, redis_url=redis_url, instance_id=f"oc-{token}"),
                                  engine=engine)
            sink = build_sink(sink_settings(kafka, database_url, redis_url, instance_id=f"oc-{token}"))
            await scorer.start()
            await sink.start()
            try:
                # The API loads its own engine from the registry, as `streamscore api` does.
                async with running_api(api_settings(kafka, database_url, redis_url,
                                                    model_registry=str(root)), None) as api:
                    yield await stream_training_set(api, database_url, Registry(root), versions, token)
            finally:
                await sink.stop()
                await scorer.stop()


async def stream_training_set(api: Api, database_url: str, registry: Registry, versions: tuple[str, str],
                              token: str) -> Loop:
    """Events with the label (CARAVAN) cleared and one owned product hidden, then the outcomes they imply."""
    matrix = D.load_matrix(D.resolve_data_path())
    labels = matrix[:, TARGET_INDEX].copy()
    features = matrix.copy()
    features[:, TARGET_INDEX] = 0  # the purchase to come is an outcome, not an input
    rows, hidden = sample_hidden(features, np.random.default_rng(26))  # as the recommender is validated
    features[rows] = hide(features[rows], hidden)
    customers = [f"tr{token}-{i}" for i in range(len(matrix))]
    events = [FeatureEvent(customer_id=c, features=tuple(int(v) for v in row))
              for c, row in zip(customers, features, strict=True)]
    await stream_events(api, database_url, events, before=0)
    at, since = await scored_at(database_url, customers)
    bought = [(customers[i], "caravan") for i in np.flatnonzero(labels)]
    bought += [(customers[i], PRODUCT_IDS[p]) for i, p in zip(rows.tolist(), hidden.tolist(), strict=True)]
    outcomes = [outcome(f"o{token}-{c.rsplit('-', 1)[1]}-{p}", c, p, at[c] + BOUGHT_AFTER) for c, p in bought]
    latest = max(at.values())
    outcomes.append(outcome(f"o{token}-nobody", f"nobody{token}", "car", since + BOUGHT_AFTER))  # unmatched
    await post_all(api.client, OUTCOMES_PATH, outcomes)

    async def stored() -> bool:
        return await count(database_url, "outcomes") == len(outcomes)

    await wait_for(stored, within_s=30)
    await horizons_closed(latest)
    # What autovacuum does on a live database after a bulk load; without statistics the planner joins each
    # outcome to the predictions by nested loops: 5-6 s a question here, 0.1 s with them.
    await fetch(database_url, "ANALYZE")
    window = {"since": since.isoformat(), "until": (latest + timedelta(microseconds=1)).isoformat()}
    label_of = dict(zip(customers, labels.tolist(), strict=True))
    return Loop(api, database_url, registry, versions, label_of, outcomes, window, token, len(outcomes))


def top20_buyers(y: np.ndarray, p: np.ndarray) -> float:
    """Buyers among the round(0.2 n) highest propensities, places at a tied cut shared evenly."""
    left, found = round(0.2 * len(p)), 0.0
    for value in sorted(set(p.tolist()), reverse=True):
        group = p == value
        take = min(left, int(group.sum()))
        found, left = found + take * y[group].mean(), left - take
    return found


async def offline(loop: Loop, table: str, version: str) -> dict[str, Any]:
    """The figures from a plain SELECT of the stored predictions, the training labels and the posted outcomes
    (every horizon has closed: a prediction is a buyer exactly when its customer bought a caravan)."""
    since, until = (datetime.fromisoformat(loop.window[k]) for k in ("since", "until"))
    rows = await fetch(loop.database_url, f"SELECT customer_id, propensity, recommendations FROM {table} "
                       "WHERE model_version = $1 AND scored_at >= $2 AND scored_at < $3",
                       version, since, until)
    assert len(rows) == len(loop.labels)
    y = np.array([loop.labels[r["customer_id"]] for r in rows])
    p = np.array([r["propensity"] for r in rows])
    top3 = {r["customer_id"]: {item["product_id"] for item in json.loads(r["recommendations"])} for r in rows}
    trials = [(o["product_id"], o["product_id"] in top3[o["customer_id"]])
              for o in loop.outcomes if o["customer_id"] in top3]
    per_product: dict[str, list[bool]] = {}
    for product, hit in trials:
        per_product.setdefault(product, []).append(hit)
    bins = np.minimum((p * 10).astype(int), 9)
    k, found = round(0.2 * len(p)), top20_buyers(y, p)
    return {
        "labelled": len(rows), "buyers": int(y.sum()), "auc": roc_auc_score(y, p), "top20": found,
        "lift": (found / k) / (y.sum() / len(p)),
        "bins": [(int((bins == b).sum()), p[bins == b].mean(), y[bins == b].mean()) if (bins == b).any()
                 else (0, None, None) for b in range(10)],
        "ece": sum((bins == b).sum() * abs(p[bins == b].mean() - y[bins == b].mean())
                   for b in range(10) if (bins == b).any()) / len(p),
        "hr3": np.mean([hit for _, hit in trials]),
        "per_product": {product: float(np.mean(hits)) for product, hits in per_product.items()},
    }


def close(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=0.0, abs_tol=1e-9)


def assert_equal(live: dict[str, Any], want: dict[str, Any]) -> None:
    """Live figures equal the offline ones to 1e-9."""
    assert (live["labelled"], live["pending"], live["superseded"], live["unmatched"]) == (
        want["labelled"], 0, 0, 1)
    propensity = live["propensity"]
    assert propensity["buyers"] == want["buyers"]
    for key in ("auc", "top20", "lift", "ece"):
        assert close(propensity["top20_buyers" if key == "top20" else key], want[key]), key
    for got, (n, predicted, observed) in zip(propensity["reliability"], want["bins"], strict=True):
        assert got["count"] == n
        assert n == 0 or (close(got["mean_predicted"], predicted) and close(got["observed"], observed)), got
    assert close(live["recommender"]["hr3"], want["hr3"])
    per_product = {k: v["hr3"] for k, v in live["recommender"]["per_product"].items()}
    assert per_product.keys() == want["per_product"].keys()
    assert all(close(per_product[k], v) for k, v in want["per_product"].items())


def core(document: dict[str, Any]) -> dict[str, Any]:
    """A performance document without the time of the question and the shadow's document."""
    return {k: v for k, v in document.items() if k not in ("as_of", "shadow")}


async def performance(loop: Loop, **params: str) -> dict[str, Any]:
    answer = await loop.api.client.get(PERFORMANCE_PATH, params=params)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    document.pop("as_of")  # the time of the question (every horizon has closed: no figure depends on it)
    return document


async def sink_caught_up(loop: Loop) -> None:
    """Wait until the sink has committed every outcome record published (Tansu's ListOffsets lies)."""
    settings, group = loop.api.settings, loop.api.settings.topic_prefix + topics.SINK_GROUP
    topic = loop.api.topic(topics.OUTCOMES)

    async def caught_up() -> bool:
        return sum((await committed_offsets(settings, group, [topic])).values()) == loop.published

    await wait_for(caught_up, within_s=30)


async def test_live_quality_of_both_versions_equals_offline_and_ignores_replays(loop: Loop) -> None:
    active, shadow = loop.versions
    first = {v: await performance(loop, version=v, **loop.window) for v in loop.versions}
    for table, version in zip(TABLES, loop.versions, strict=True):
        want = await offline(loop, table, version)
        assert 0 < want["auc"] < 1 and 0 < want["hr3"] < 1 and first[version]["version"] == version
        assert_equal(first[version], want)
    assert first[active]["propensity"]["auc"] != first[shadow]["propensity"]["auc"]
    both = await performance(loop, **loop.window)  # the active version, the shadow's figures beside it
    assert both["shadow"] is not None, "the active version's document names no shadow"
    assert core(both["shadow"]) == core(first[shadow]) and core(both) == core(first[active])

    stored = await count(loop.database_url, "outcomes")
    rng = random.Random(26)
    replay = loop.outcomes + rng.sample(loop.outcomes, len(loop.outcomes) // 3)  # with duplicates
    rng.shuffle(replay)  # out of order
    await loop.post_outcomes(replay, chunk=1500)
    await sink_caught_up(loop)
    assert await count(loop.database_url, "outcomes") == stored
    assert {v: await performance(loop, version=v, **loop.window) for v in loop.versions} == first


def gauges(text: str, name: str) -> dict[tuple[str, ...], float]:
    """Samples of one metric family from /metrics text: label values -> value."""
    pattern = re.compile(rf'^{name}\{{(.*)\}} (\S+)$', re.MULTILINE)
    return {tuple(re.findall(r'="([^"]*)"', labels)): float(value) for labels, value in pattern.findall(text)}


async def watch_metrics(loop: Loop, done: Any, within_s: float = 30.0) -> None:
    """Poll /metrics until done(text) while /ready answers 200 on every round."""
    deadline, text = time.monotonic() + within_s, ""
    while time.monotonic() < deadline:
        ready = await loop.api.client.get("/ready")
        assert ready.status_code == 200, ready.text
        text = (await loop.api.client.get("/metrics")).text
        if done(text):
            return
        await asyncio.sleep(0.2)
    quality = [line for line in text.splitlines() if line.startswith("streamscore_model_quality")]
    raise AssertionError("the metrics did not reach the expected state in time:\n" + "\n".join(quality))


async def test_outcomes_contradicting_the_model_flip_the_alert_and_ready_stays_up(
    loop: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    matrix = D.load_matrix(D.resolve_data_path())[:ALERT_ROWS]
    matrix[:, TARGET_INDEX] = 0
    customers = [f"al{loop.token}-{i}" for i in range(ALERT_ROWS)]
    before = await count(loop.database_url, "predictions")
    await stream_events(loop.api, loop.database_url, [
        FeatureEvent(customer_id=c, features=tuple(int(v) for v in row))
        for c, row in zip(customers, matrix, strict=True)], before=before)
    at, _ = await scored_at(loop.database_url, customers)
    await horizons_closed(max(at.values()))
    everyone = before + ALERT_ROWS

    def labelled_and_quiet(text: str) -> bool:  # the later stream is labelled: all non-buyers, no verdict
        labelled = gauges(text, "streamscore_model_quality")
        alert = gauges(text, "streamscore_model_quality_alert")
        return all(labelled.get(("labelled", v)) == everyone and alert.get((v,)) == 0.0
                   for v in loop.versions)

    await watch_metrics(loop, labelled_and_quiet)

    # The customers the active version thought least likely to buy a caravan are the ones who did.
    rows = await fetch(loop.database_url, "SELECT customer_id, propensity FROM predictions "
                       "WHERE customer_id = ANY($1)", customers)
    ranked = sorted(rows, key=lambda r: (r["propensity"], r["customer_id"]))
    buyers = {r["customer_id"] for r in ranked[:ALERT_ROWS // 2]}
    with caplog.at_level(logging.WARNING, logger="ingest_api.console.quality"):
        await loop.post_outcomes([
            outcome(f"al{loop.token}-{c}", c, "caravan", at[c] + BOUGHT_AFTER) for c in sorted(buyers)])
        await watch_metrics(loop, lambda text: all(
            gauges(text, "streamscore_model_quality_alert").get((v,)) == 1.0 for v in loop.versions))
    for table, version in zip(TABLES, loop.versions, strict=True):
        record = next(r for r in caplog.records if r.getMessage() == "model quality below validation"
                      and getattr(r, "model_version", None) == version)
        fields = record.__dict__  # the log line's named figures
        assert record.levelno == logging.WARNING and fields["margin"] == MARGIN
        assert fields["validation_auc"] == loop.registry.manifest(version)["metrics"]["propensity"]["auc"]
        # The last ALERT_N labelled (ties at the cut kept) are the later stream's; their AUC, offline:
        recent = await fetch(loop.database_url, f"SELECT customer_id, propensity, scored_at FROM {table} "
                             "WHERE customer_id = ANY($1) ORDER BY scored_at DESC", customers)
        cut = recent[ALERT_N - 1]["scored_at"]
        last = [r for r in recent if r["scored_at"] >= cut]
        want = roc_auc_score([r["customer_id"] in buyers for r in last], [r["propensity"] for r in last])
        assert fields["labelled"] == len(last)
        assert close(fields["auc"], want) and want < fields["validation_auc"] - MARGIN
