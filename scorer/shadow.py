"""Shadow scoring: after the active predictions are on the broker, score the batch with the shadow version,
publish to predictions-shadow.v1 and update the live comparison (Prometheus gauges + Redis stats fields).

Nothing here can fail the active path: a shadow error is logged and counted, and the batch still commits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import Counter, Gauge

from infra.kafka import topic_name
from models.shadow import PairedRows, ShadowComparison, pair_batches, pair_records
from schemas import topics
from schemas.wire import EventIds, SourceRecord, prediction_json, utc_now
from scorer.partitioning import by_origin
from scorer.scoring import rows_of, score_matrix, valid_rows

if TYPE_CHECKING:
    from models.engine import InferenceEngine, ScoreBatch
    from scorer.runtime import ScorerRuntime

log = logging.getLogger(__name__)

TOP3 = Gauge("scorer_shadow_top3_agreement", "Mean share of the active top-3 the shadow also recommends.")
SPEARMAN = Gauge("scorer_shadow_propensity_spearman", "Rank correlation of active vs shadow propensity.")
SEGMENTS = Gauge("scorer_shadow_segment_agreement", "Share of rows with the same value segment label.")
ADDED_MS = Gauge("scorer_shadow_added_latency_ms", "Median time the shadow stage adds to a micro-batch (ms).")
ACTIVE_MS = Gauge("scorer_shadow_active_inference_ms", "Median active inference time per micro-batch (ms).")
ROWS = Counter("scorer_shadow_rows_total", "Rows scored by the shadow version.")
FAILURES = Counter("scorer_shadow_failures_total", "Micro-batches the shadow could not score or publish.")
STAT_FIELDS = ("shadow_version", "shadow_rows", "shadow_top3_agreement", "shadow_propensity_spearman",
               "shadow_segment_agreement", "shadow_added_latency_ms", "shadow_active_inference_ms")


@dataclass(frozen=True)
class ShadowOutput:
    """What the inference thread hands back: the shadow's messages and the rows paired with the active."""

    messages: list[tuple[bytes, bytes]]
    paired: PairedRows
    origins: list[SourceRecord]  # the consumed record of each message (exactly-once routes by it)


@dataclass(frozen=True)
class ShadowScorer:
    """The engine as scorer.scoring.score_rows sees it, scoring with the shadow version."""

    engine: InferenceEngine

    def score(self, features: np.ndarray) -> Any:
        """Score with the shadow; raises if it was cleared meanwhile (score_rows turns that into reasons)."""
        batch = self.engine.score_shadow(features)
        if batch is None:
            raise RuntimeError("shadow cleared mid-batch")
        return batch


def shadow_work(
    runtime: ScorerRuntime, valid: Sequence[tuple[SourceRecord, EventIds]], matrix: np.ndarray,
    active: ScoreBatch | list[dict[str, Any] | str],
) -> ShadowOutput | None:
    """In the inference thread: score with the shadow, build its messages, pair rows with the active."""
    engine = runtime.engine
    if engine is None or engine.shadow_version is None:
        return None
    result = score_matrix(ShadowScorer(engine), matrix)
    shadow = rows_of(result)
    scored_at = utc_now()
    kept = [(record, event, row) for (record, event), row in zip(valid, shadow, strict=True)
            if isinstance(row, dict)]
    messages = [(event.customer_id.encode(), prediction_json(event, row, scored_at))
                for _, event, row in kept]
    origins = [record for record, _, _ in kept]
    if isinstance(active, list) or isinstance(result, list):  # a row-by-row fallback: pair the records
        return ShadowOutput(messages, pair_records(rows_of(active), shadow), origins)
    # Whole batches on both sides (the normal case): no second pass over the active records.
    ok = np.array([isinstance(row, dict) for row in shadow], dtype=bool) & valid_rows(active)
    return ShadowOutput(messages, pair_batches(active, result, ok), origins)


async def shadow_batch(
    runtime: ScorerRuntime, valid: Sequence[tuple[SourceRecord, EventIds]], matrix: np.ndarray,
    active: ScoreBatch | list[dict[str, Any] | str], active_ms: float,
) -> None:
    """Score, publish and compare one micro-batch with the shadow version, if one is set."""
    engine, comparison = runtime.engine, runtime.shadow
    shadow_version = engine.shadow_version if engine is not None else None
    if engine is None or shadow_version is None or not len(matrix):
        if comparison.shadow_version is not None:
            comparison.reset(None, None)
        return
    if (comparison.active_version, comparison.shadow_version) != (engine.model_version, shadow_version):
        comparison.reset(engine.model_version, shadow_version)
    started = time.perf_counter()
    try:
        loop = asyncio.get_running_loop()
        output = await loop.run_in_executor(runtime.executor, shadow_work, runtime, valid, matrix, active)
        if output is None:
            return
        topic = topic_name(runtime.settings, topics.PREDICTIONS_SHADOW)
        if runtime.route is None:
            if runtime.sender is None:
                raise RuntimeError("scorer has no sender: it is not started")
            pending = await runtime.sender.send(topic, output.messages)
        else:  # exactly-once: into the transaction of each message's input partition
            pending = []
            pairs = list(zip(output.origins, output.messages, strict=True))
            for (source, partition), group in by_origin(pairs, lambda pair: pair[0]).items():
                routed = await runtime.route(source, partition)
                pending += await routed.send(topic, [message for _, message in group])
        await asyncio.gather(*(ack for ack, _ in pending))
    except Exception as error:  # the shadow is an experiment: it must never fail the active path
        comparison.failures += 1
        FAILURES.inc()
        log.warning("shadow scoring failed", extra={"shadow_version": shadow_version, "error": str(error)})
        return
    ROWS.inc(len(output.messages))
    comparison.add(output.paired, active_ms, (time.perf_counter() - started) * 1000.0)


def attach(runtime: ScorerRuntime) -> None:
    """Expose the runtime's comparison: gauges read it at scrape time, the stats hash at each write."""
    comparison = runtime.shadow

    def reading(name: str) -> Any:
        def value() -> float:
            figure = comparison.figures()[name]
            return float("nan") if figure is None else float(figure)

        return value

    for gauge, name in ((TOP3, "top3_agreement"), (SPEARMAN, "propensity_spearman"),
                        (SEGMENTS, "segment_agreement"), (ADDED_MS, "added_latency_ms"),
                        (ACTIVE_MS, "active_inference_ms")):
        gauge.set_function(reading(name))
    runtime.stats.providers.append(lambda: stats_fields(comparison))


def stats_fields(comparison: ShadowComparison) -> dict[str, str]:
    """The shadow fields of the scorer's Redis stats hash (empty strings when not shadowing)."""
    if comparison.shadow_version is None:
        return dict.fromkeys(STAT_FIELDS, "")
    figures = comparison.figures()

    def text(value: Any) -> str:
        return "" if value is None else (f"{value:.6f}" if isinstance(value, float) else str(value))

    return {
        "shadow_version": text(figures["shadow_version"]),
        "shadow_rows": text(figures["rows_total"]),
        "shadow_top3_agreement": text(figures["top3_agreement"]),
        "shadow_propensity_spearman": text(figures["propensity_spearman"]),
        "shadow_segment_agreement": text(figures["segment_agreement"]),
        "shadow_added_latency_ms": text(figures["added_latency_ms"]),
        "shadow_active_inference_ms": text(figures["active_inference_ms"]),
    }
