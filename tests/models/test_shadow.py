"""Shadow versions: registry pointers, engine loading/promotion and the live comparison figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from models import data as D
from models.engine import InferenceEngine
from models.registry import Registry
from models.shadow import ShadowComparison, compare, pair_batches, pair_records, top3_overlap
from tests.helpers.registry import SHADOW_THRESHOLDS, shadow_registry


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return shadow_registry(tmp_path / "registry")


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return D.load_matrix(D.resolve_data_path())[:1000]


def test_shadow_pointer_is_set_cleared_and_promoted(registry: Registry) -> None:
    assert registry.shadow_version() is None
    with pytest.raises(ValueError, match="active"):
        registry.set_shadow("v-active")
    with pytest.raises(KeyError):
        registry.set_shadow("v-missing")
    registry.set_shadow("v-shadow")
    assert registry.shadow_version() == "v-shadow"
    registry.clear_shadow()
    assert registry.shadow_version() is None
    with pytest.raises(LookupError):
        registry.promote()
    registry.set_shadow("v-shadow")
    assert registry.promote() == "v-shadow"
    assert registry.active_version() == "v-shadow" and registry.shadow_version() is None
    assert not list(registry.root.glob(".*.tmp"))


def test_engine_scores_the_shadow_beside_the_active_and_promotes_without_reload(
    registry: Registry, rows: np.ndarray
) -> None:
    engine = InferenceEngine.load(registry.root, follow_shadow=True)
    assert engine.shadow_version is None and engine.score_shadow(rows) is None
    registry.set_shadow("v-shadow")
    assert engine.refresh() and engine.shadow_version == "v-shadow"
    active, shadow = engine.score(rows), engine.score_shadow(rows)
    assert shadow is not None and active.model_version == "v-active" and shadow.model_version == "v-shadow"
    np.testing.assert_array_equal(active.propensity, shadow.propensity)
    high, medium = SHADOW_THRESHOLDS["segment_high_min"], SHADOW_THRESHOLDS["segment_medium_min"]
    score = shadow.segment_score
    expected = np.where(score >= high, "high", np.where(score >= medium, "medium", "low"))
    np.testing.assert_array_equal(shadow.segment_label, expected)
    loaded = engine._shadow
    registry.promote()  # another process (the CLI) moved both pointers
    assert engine.refresh()
    assert engine.model_version == "v-shadow" and engine.shadow_version is None
    assert engine._bundle is loaded  # the promoted shadow was already loaded: no second load
    assert not engine.refresh()


def test_api_side_engine_validates_but_does_not_keep_the_shadow(registry: Registry) -> None:
    engine = InferenceEngine.load(registry.root)
    engine.set_shadow("v-shadow")
    assert registry.shadow_version() == "v-shadow" and engine.shadow_version is None
    assert engine.promote() == "v-shadow" and engine.model_version == "v-shadow"
    assert registry.active_version() == "v-shadow" and registry.shadow_version() is None


def test_comparison_figures_match_a_direct_computation(registry: Registry, rows: np.ndarray) -> None:
    registry.set_shadow("v-shadow")
    engine = InferenceEngine.load(registry.root, follow_shadow=True)
    active, shadow = engine.score(rows), engine.score_shadow(rows)
    assert shadow is not None
    paired = pair_records(active.records(), shadow.records())
    figures = compare(paired)
    assert figures["top3_agreement"] == 1.0
    assert figures["propensity_spearman"] == pytest.approx(1.0)
    same = np.mean(active.segment_label == shadow.segment_label)
    assert figures["segment_agreement"] == pytest.approx(same)
    assert 0.0 < figures["segment_agreement"] < 1.0  # type: ignore[operator]

    ok = np.ones(len(rows), dtype=bool)
    ok[::7] = False
    by_arrays = compare(pair_batches(active, shadow, ok))
    records = [r if keep else "failed" for r, keep in zip(active.records(), ok, strict=True)]
    assert by_arrays == compare(pair_records(records, shadow.records()))

    comparison = ShadowComparison(window_rows=400)
    comparison.reset("v-active", "v-shadow")
    half = len(rows) // 2
    for part in (slice(0, half), slice(half, None)):
        comparison.add(pair_records(active.records()[part], shadow.records()[part]), 2.0, 3.0)
    got = comparison.figures()
    assert got["rows_total"] == len(rows) and got["window_rows"] == len(rows) - half  # oldest batch left
    assert got["added_latency_ms"] == 3.0 and got["active_inference_ms"] == 2.0


def test_top3_overlap_ignores_order() -> None:
    a = np.array([[1, 2, 3], [1, 2, 3]])
    b = np.array([[3, 1, 2], [1, 7, 8]])
    assert top3_overlap(a, b).tolist() == [1.0, pytest.approx(1 / 3)]


def test_cli_shadow_clear_and_promote(registry: Registry) -> None:
    import typer

    from models.cli import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    root = ["--registry", str(registry.root)]
    bad = runner.invoke(app, ["models", "shadow", "v-missing", *root])
    assert bad.exit_code == 2 and "unknown model version" in bad.output
    assert runner.invoke(app, ["models", "shadow", "v-shadow", *root]).exit_code == 0
    assert registry.shadow_version() == "v-shadow"
    assert "v-shadow" in runner.invoke(app, ["models", "shadow", *root]).output
    assert "s v-shadow" in runner.invoke(app, ["models", "list", *root]).output
    assert runner.invoke(app, ["models", "shadow", "--clear", *root]).exit_code == 0
    assert registry.shadow_version() is None
    assert runner.invoke(app, ["models", "promote", *root]).exit_code == 2
    runner.invoke(app, ["models", "shadow", "v-shadow", *root])
    promoted = runner.invoke(app, ["models", "promote", *root])
    assert promoted.exit_code == 0, promoted.output
    assert registry.active_version() == "v-shadow" and registry.shadow_version() is None
