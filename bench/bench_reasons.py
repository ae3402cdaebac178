"""Reason-code cost benchmark: TreeSHAP reasons against plain scoring, per event, on the real engine.

    .venv/bin/python bench/bench_reasons.py --batch 500 --repeats 5

Single-threaded math, as in the scorer's inference thread. Reports ms per micro-batch and µs per event
for engine.score, engine.reasons (propensity + value contributions and ranking) and a one-row reasons
call (the /predict/single and /segment cost). The streaming default follows from it.

Then CPU µs per call (least of --repeats runs) at 1, 11 and 1,000 rows: the value model's contributions
by XGBoost pred_contribs against the TreeSHAP table (models.tree_shap), and engine.reasons without and
with the table; and the table's build time and size.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from functools import partial
from typing import Any

import numpy as np
import threadpoolctl

from models import data as D
from models import tree_shap
from models.engine import InferenceEngine, _tree_contributions

PER_CALL_ROWS: tuple[tuple[int, int], ...] = ((1, 200), (11, 100), (1000, 2))  # rows, calls per timed run


def median_ms(work: Any, repeats: int) -> float:
    """Median wall time of work() in ms."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def cpu_us(work: Any, calls: int, repeats: int) -> float:
    """Least process CPU time of `calls` calls of work(), in µs per call, over `repeats` runs."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time_ns()
        for _ in range(calls):
            work()
        best = min(best, (time.process_time_ns() - started) / calls / 1000.0)
    return best


def per_call(engine: InferenceEngine, matrix: np.ndarray, repeats: int) -> None:
    """Print the per-call CPU cost of XGBoost against the table, and of engine.reasons without and with it."""
    bundle = engine._bundle
    assert bundle.value_shap is not None, "the active value model does not fit a TreeSHAP table"
    table = bundle.value_shap
    builds = []
    for _ in range(3):
        started = time.process_time()
        tree_shap.ShapTable.of(bundle.value)
        builds.append(time.process_time() - started)
    size_mb, build_s = table.nbytes / 1e6, min(builds)
    print(f"TreeSHAP table: {table.trees} trees, {size_mb:.2f} MB, built in {build_s:.3f} s CPU")
    without_table = dataclasses.replace(bundle, value_shap=None)
    heads = ("pred_contribs", "table", "reasons before", "reasons after")
    print(f"{'rows':>6} " + " ".join(f"{h:>15}" for h in heads) + "  (µs per call, CPU)")
    for rows, calls in PER_CALL_ROWS:
        x = matrix[:rows]
        value_x = x[:, list(D.VALUE_COLUMNS)]
        figures = (
            cpu_us(partial(_tree_contributions, bundle.value, value_x), calls, repeats),
            cpu_us(partial(table.contributions, value_x), calls, repeats),
            cpu_us(partial(without_table.reasons, x), calls, repeats),
            cpu_us(partial(bundle.reasons, x), calls, repeats),
        )
        print(f"{rows:>6} " + " ".join(f"{f:>15,.1f}" for f in figures))


def main() -> None:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    threadpoolctl.threadpool_limits(1)
    engine = InferenceEngine.load()
    full = D.load_matrix(D.resolve_data_path())
    matrix = full[: args.batch]
    bundle = engine._bundle
    results = {
        "score": median_ms(lambda: engine.score(matrix), args.repeats),
        "reasons": median_ms(lambda: engine.reasons(matrix), args.repeats),
        "  propensity contributions": median_ms(
            lambda: bundle.propensity_contributions(matrix), args.repeats
        ),
        "  value contributions": median_ms(lambda: bundle.value_contributions(matrix), args.repeats),
    }
    one = median_ms(lambda: engine.reasons(matrix[:1]), args.repeats * 4)
    for name, ms in results.items():
        print(f"{name:>28}: {ms:9.2f} ms per {args.batch} events  ({1000 * ms / args.batch:8.1f} µs/event)")
    print(f"{'reasons, one row':>28}: {one:9.2f} ms")
    per_call(engine, full, args.repeats)


if __name__ == "__main__":
    main()
