"""Shadow cost benchmark: what scoring a micro-batch with the shadow too adds to the scorer's work.

In-process on the real engines, no broker (the publish is the same keyed batch send as the active one's):

    .venv/bin/python bench/bench_shadow.py --batch 500 --repeats 40

Reports per micro-batch (median ms, single-threaded math as in the scorer): active score_rows, shadow
inference alone, the whole shadow stage in the inference thread (scorer.shadow.shadow_work: inference,
its messages, pairing with the active batch), and one figures() refresh.
Target (issue 12): the shadow stage costs no more than the shadow's own inference time plus its
serialisation, and nothing on the active predictions, which are on the broker before the shadow starts.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, cast

import threadpoolctl

from models import data as D
from models.engine import InferenceEngine
from models.registry import PACKAGE_REGISTRY, Registry
from models.shadow import ShadowComparison
from schemas.wire import EventIds, prediction_json, utc_now
from scorer.runtime import ScorerRuntime

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reasons import median_ms

from scorer.scoring import score_rows
from scorer.settings import ScorerSettings
from scorer.shadow import shadow_work


def registry_with_shadow(root: Path) -> Registry:
    """The committed version, twice: active and shadow."""
    source = Registry(PACKAGE_REGISTRY)
    version = source.active_version()
    for name in ("a", "b"):
        shutil.copytree(source.path(version), root / name)
        manifest = (root / name / "manifest.json").read_text().replace(f'"{version}"', f'"{name}"')
        (root / name / "manifest.json").write_text(manifest)
    registry = Registry(root)
    registry.activate("a")
    registry.set_shadow("b")
    return registry


def main() -> None:
    """Run the benchmark and print one line per figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    threadpoolctl.threadpool_limits(1)
    root = Path(tempfile.mkdtemp(prefix="bench-shadow-"))
    try:
        registry_with_shadow(root)
        engine = InferenceEngine.load(root, follow_shadow=True)
        matrix = D.load_matrix(D.resolve_data_path())[: args.batch]
        ids = [EventIds(str(uuid.uuid4()), f"c-{i}", "event", None) for i in range(len(matrix))]
        active = score_rows(engine, matrix)
        comparison = ShadowComparison()

        runtime = ScorerRuntime(settings=ScorerSettings(), engine=engine)
        valid = cast(Any, [(None, i) for i in ids])
        active_batch = engine.score(matrix)

        def shadow_stage() -> None:  # the scorer's own inference-thread work for the shadow
            output = shadow_work(runtime, valid, matrix, active_batch)
            assert output is not None
            comparison.add(output.paired, 0.0, 0.0)

        def refresh() -> None:
            comparison._cached = None
            comparison.figures()

        results = {
            "active score_rows": median_ms(lambda: score_rows(engine, matrix), args.repeats),
            "active messages": median_ms(
                lambda: [prediction_json(i, r, utc_now()) for i, r in zip(ids, active, strict=True)
                         if isinstance(r, dict)], args.repeats),
            "shadow inference": median_ms(lambda: engine.score_shadow(matrix), args.repeats),
            "shadow stage": median_ms(shadow_stage, args.repeats),
            "figures refresh (20k-row window)": median_ms(refresh, 10),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for name, ms in results.items():
        print(f"{name:>34}: {ms:8.2f} ms  ({1000 * ms / args.batch:6.1f} µs/row)")


if __name__ == "__main__":
    main()
