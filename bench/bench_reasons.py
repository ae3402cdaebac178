"""Reason-code cost benchmark: TreeSHAP reasons against plain scoring, per event, on the real engine.

    .venv/bin/python bench/bench_reasons.py --batch 500 --repeats 5

Single-threaded math, as in the scorer's inference thread. Reports ms per micro-batch and µs per event
for engine.score, engine.reasons (propensity ensemble + value booster contributions and ranking) and
a one-row reasons call (the /predict/single and /segment cost). The streaming default follows from it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import threadpoolctl

from models import data as D
from models.engine import InferenceEngine


def median_ms(work: Any, repeats: int) -> float:
    """Median wall time of work() in ms."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def main() -> None:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    threadpoolctl.threadpool_limits(1)
    engine = InferenceEngine.load()
    matrix = D.load_matrix(D.resolve_data_path())[: args.batch]
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


if __name__ == "__main__":
    main()
