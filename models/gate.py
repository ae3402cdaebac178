"""The activation gate: a new propensity version replaces the active one only if its nested estimate is better
than the active one's by more than the paired spread on the same outer folds."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models import cv

GATE_METRIC = "coil"  # buyers of 238 in the top 800 of 4,000 (outer-fold top-20 % recall x 238)


def protocol_key(rows_sha256: str, folds: int, repeats: int, seed: int) -> dict[str, Any]:
    """What makes two versions' outer folds identical: the same rows and the same fold plan."""
    return {
        "rows_sha256": rows_sha256,  # the training matrix itself (a subsample is other rows)
        "folds": folds,
        "repeats": repeats,
        "seed": seed,
        "grouping": "identical 85-value feature vector",
        "stratified_on": "buyer in group",
    }


def legacy_procedure(manifest: Mapping[str, Any]) -> str | None:
    """The re-runnable procedure of a version trained before the nested protocol, or None."""
    prop = manifest.get("propensity", {})
    if "nested_cv" in prop:
        return None
    artifact = manifest.get("artifacts", {}).get("propensity")
    if isinstance(artifact, list):
        return "xgb_3seeds"
    return "lr_small8" if prop.get("kind") == "additive_logistic" else None


def active_folds(manifest: Mapping[str, Any] | None, key: Mapping[str, Any]) -> list[cv.FoldResult] | None:
    """The active version's stored outer-fold results when they were made on the same folds, else None."""
    nested = (manifest or {}).get("propensity", {}).get("nested_cv")
    if nested and nested.get("key") == dict(key):
        return list(nested["folds"])
    return None


def decide(
    new: Sequence[cv.FoldResult],
    active: Sequence[cv.FoldResult] | None,
    active_version: str | None,
    folds: int,
) -> dict[str, Any]:
    """Pass if the mean paired gain in the gate metric exceeds its Nadeau-Bengio spread, or none is active."""
    if active_version is None:
        return {"passed": True, "reason": "no active version"}
    if active is None:
        return {
            "passed": False,
            "against": active_version,
            "reason": f"{active_version} has no nested results on the same outer folds "
            "(other data or fold plan); not comparable, so kept inactive (activate it by hand if meant)",
        }
    results = {"new": list(new), "active": list(active)}
    diff, spread = cv.paired(results, "new", "active", GATE_METRIC)
    auc_diff, auc_spread = cv.paired(results, "new", "active", "auc")
    passed = bool(diff > spread)
    verdict = "beats" if passed else "does not beat"
    return {
        "passed": passed,
        "against": active_version,
        "metric": "buyers of 238 in the top 800 of 4,000 (outer-fold top-20 % recall x 238)",
        "diff": round(diff, 2),
        "spread": round(spread, 2),
        "auc_diff": round(auc_diff, 4),
        "auc_spread": round(auc_spread, 4),
        "outer_folds": len(new),
        "folds_per_repeat": folds,
        "reason": f"the new version {verdict} {active_version} by more than the paired spread: "
        f"{diff:+.1f} ± {spread:.1f} buyers of 238 (AUC {auc_diff:+.4f} ± {auc_spread:.4f})",
    }


def nested_and_gate(
    matrix: Any,
    registry: Any,
    repeats: int = cv.OUTER_REPEATS,
    progress: Any = None,
) -> dict[str, Any]:
    """Run the nested CV of the selection procedure and decide the gate against the registry's active version.

    The active version's outer-fold results are read from its manifest when made on the same folds;
    a pre-protocol version's procedure is re-run on them instead.
    """
    rows = hashlib.sha256(np.ascontiguousarray(matrix, dtype=np.int64).tobytes()).hexdigest()
    key = {**protocol_key(rows, cv.OUTER_FOLDS, repeats, cv.OUTER_SEED), "rows": len(matrix)}
    try:
        active_version: str | None = registry.active_version()
        active_manifest: dict[str, Any] | None = registry.manifest(active_version)
    except (FileNotFoundError, KeyError):
        active_version, active_manifest = None, None
    stored = active_folds(active_manifest, key)
    legacy = legacy_procedure(active_manifest) if active_manifest is not None and stored is None else None
    # A pre-protocol version made its choices (terms, bins, hyper-parameters) on all rows, outer test folds
    # included: re-run with them fixed, its estimate is leaked, so it is shown but not compared. The gate
    # compares with the same procedure re-making its choices inside each outer training fold.
    fair = cv.RENESTED.get(legacy) if legacy else None
    legacy_runs = [n for n in (fair, legacy) if n]
    results = cv.outer_cv(matrix, [cv.SELECTED], legacy_runs, repeats=repeats, progress=progress)
    active = stored if stored is not None else results.get(fair) if fair else None
    decision = decide(results[cv.SELECTED], active, active_version, cv.OUTER_FOLDS)
    shown: dict[str, list[cv.FoldResult]] = {cv.SELECTED: results[cv.SELECTED]}
    if stored is not None:
        shown[f"active ({active_version})"] = list(stored)
    if fair and legacy:
        shown[f"active ({active_version}) procedure, choices re-made in the folds: {fair}"] = results[fair]
        shown[f"active ({active_version}) choices fixed on all rows: {legacy} (leaked, not compared)"] = (
            results[legacy]
        )
    source = (
        "stored outer folds"
        if stored is not None
        else f"re-run: {fair} (the active version's procedure re-making its choices inside the outer folds); "
        f"{legacy} (its choices fixed on all rows) is shown but leaked, so not compared"
        if fair
        else None
    )
    return {
        "nested_cv": {
            "key": key,
            "protocol": cv.__doc__.split("\n\n", 1)[1].replace("\n", " ").strip(),
            "summary": cv.summarise(shown),
            "active_source": source,
            "scaling": cv.SCALING,
            "folds": results[cv.SELECTED],
        },
        "gate": {**decision, **({"compared_with": fair} if fair and active is not None else {})},
    }
