"""Models: small-sample training, determinism, registry round-trip, engine invariants and hot swap."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from models import data as D
from schemas.features import PRODUCT_COUNT_INDEX

TINY_DQN = {"rounds": 4, "episodes_per_round": 128, "updates_per_round": 5, "batch_size": 64}


def _data_path() -> Path:
    """The packaged training data: a clone with nothing beside it has it too."""
    path = D.resolve_data_path()
    assert path.exists(), f"packaged CoIL training data missing at {path}"
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny registry: versions a and b (same seed) and c (another seed), trained on 500 rows."""
    from models.train import train

    root = tmp_path_factory.mktemp("registry")
    path = _data_path()
    for version, seed in (("a", 1), ("b", 1), ("c", 2)):
        train(
            data_path=path,
            seed=seed,
            registry_dir=root,
            subsample=500,
            dqn_overrides=TINY_DQN,
            version=version,
            activate=version == "a",
            cv_repeats=1,
            recommender_cv_repeats=1 if version == "a" else 0,  # the outer CVs of the recommender and
            value_cv_repeats=1 if version == "a" else 0,  # value model: once is enough here
        )
    return root


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return D.load_matrix(_data_path())[:300]


def test_registry_round_trip(registry: Path) -> None:
    from models.registry import Registry

    reg = Registry(registry)
    assert reg.versions() == ["a", "b", "c"]
    assert reg.active_version() == "a"
    manifest = reg.manifest()
    assert manifest["version"] == "a"
    assert len(manifest["data"]["sha256"]) == 64
    assert len(manifest["feature_schema"]["names"]) == 86
    assert "CARAVAN" not in manifest["feature_schema"]["propensity_columns"]
    assert {"tensorflow", "xgboost", "keras"} <= set(manifest["libraries"])
    assert manifest["thresholds"]["segment_high_min"] == 67.0
    assert 0.0 <= manifest["metrics"]["propensity"]["auc"] <= 1.0
    files = {p.suffix for p in (registry / "a").iterdir()}
    assert ".keras" in files and ".ubj" in files and ".pkl" not in files and ".pickle" not in files
    reg.activate("c")
    assert reg.active_version() == "c"
    with pytest.raises(KeyError):
        reg.activate("nope")
    assert reg.active_version() == "c"
    reg.activate("a")


def test_training_is_deterministic(registry: Path) -> None:
    import keras

    for name in ("propensity.json", "value.ubj"):
        assert (registry / "a" / name).read_bytes() == (registry / "b" / name).read_bytes(), name
    wa = keras.models.load_model(registry / "a" / "dqn.keras", compile=False).get_weights()
    wb = keras.models.load_model(registry / "b" / "dqn.keras", compile=False).get_weights()
    wc = keras.models.load_model(registry / "c" / "dqn.keras", compile=False).get_weights()
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(wa, wb, strict=True))
    assert not all(np.allclose(x, y) for x, y in zip(wa, wc, strict=True))


def test_numpy_forward_equals_keras(registry: Path, rows: np.ndarray) -> None:
    import keras

    from models import dqn

    model = keras.models.load_model(registry / "a" / "dqn.keras", compile=False)
    recommended = np.random.default_rng(0).random((len(rows), 22)) < 0.1
    state = dqn.encode(rows, recommended)
    expected = model.predict(state, verbose=0)
    np.testing.assert_allclose(dqn.forward(dqn.dense_weights(model), state), expected, rtol=1e-4, atol=1e-5)


def _check_invariants(batch: object, rows: np.ndarray) -> None:
    from models.engine import ScoreBatch

    assert isinstance(batch, ScoreBatch)
    n = len(rows)
    assert len(batch) == n and batch.product_index.shape == (n, 3)
    assert all(len(set(r)) == 3 for r in batch.product_index.tolist())
    owned = rows[:, list(PRODUCT_COUNT_INDEX)] > 0
    assert not owned[np.arange(n)[:, None], batch.product_index].any()
    assert ((batch.product_probability >= 0) & (batch.product_probability <= 1)).all()
    assert ((batch.propensity >= 0) & (batch.propensity <= 1)).all()
    assert ((batch.segment_score >= 0) & (batch.segment_score <= 100)).all()
    assert set(batch.segment_label.tolist()) <= {"high", "medium", "low"}
    high = batch.segment_label == "high"
    assert (batch.segment_score[high] >= 67).all() and (batch.segment_score[~high] < 67).all()


def test_engine_invariants_batch_and_single_row(registry: Path, rows: np.ndarray) -> None:
    from models.engine import InferenceEngine
    from schemas.messages import Recommendation, Segment

    engine = InferenceEngine.load(registry)
    batch = engine.score(rows)
    _check_invariants(batch, rows)
    single = engine.score(rows[7:8])
    _check_invariants(single, rows[7:8])
    np.testing.assert_array_equal(single.product_index[0], batch.product_index[7])
    np.testing.assert_allclose(single.propensity[0], batch.propensity[7])
    record = batch.records()[0]
    assert record["model_version"] == "a"
    assert [Recommendation(**r).product_id for r in record["recommendations"]]
    Segment(**record["segment"])


def test_hot_swap_under_concurrent_scoring(registry: Path, rows: np.ndarray) -> None:
    from models.engine import InferenceEngine, ScoreBatch
    from models.registry import Registry

    reg = Registry(registry)
    reg.activate("a")
    expected = {}
    for version in ("a", "c"):
        reg.activate(version)
        expected[version] = InferenceEngine.load(registry).score(rows)
    reg.activate("a")
    engine = InferenceEngine.load(registry)
    assert not np.array_equal(expected["a"].propensity, expected["c"].propensity)
    seen: list[tuple[int, ScoreBatch]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(offset: int) -> None:
        i = offset
        try:
            while not stop.is_set():
                start = i % (len(rows) - 50)
                seen.append((start, engine.score(rows[start : start + 50])))
                i += 37
        except BaseException as error:  # surfaced in the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(2)]
    for t in threads:
        t.start()
    try:
        for flip in range(6):
            engine.activate("c" if flip % 2 == 0 else "a")
            assert engine.model_version == ("c" if flip % 2 == 0 else "a")
        reg.activate("c")  # pointer flipped by someone else: picked up by refresh()
        assert engine.refresh() is True and engine.model_version == "c"
        assert engine.refresh() is False
    finally:
        stop.set()
        for t in threads:
            t.join()
        reg.activate("a")
    assert not errors
    versions = {batch.model_version for _, batch in seen}
    assert versions <= {"a", "c"} and len(seen) > 0
    for start, batch in seen:
        ref = expected[batch.model_version]
        np.testing.assert_array_equal(batch.product_index, ref.product_index[start : start + 50])
        np.testing.assert_allclose(batch.propensity, ref.propensity[start : start + 50])
        np.testing.assert_allclose(batch.segment_score, ref.segment_score[start : start + 50])


def test_recommendation_probabilities_non_increasing(registry: Path) -> None:
    """Along the 3 recommendations the calibrated probability never increases (all customers, 2 versions)."""
    from models.engine import InferenceEngine
    from models.registry import Registry

    matrix = D.load_matrix(_data_path())
    reg = Registry(registry)
    for version in ("a", "c"):
        engine = InferenceEngine.load(registry)
        engine.activate(version)
        batch = engine.score(matrix)
        prob = batch.product_probability
        assert prob.shape == (len(matrix), 3)
        assert (np.diff(prob, axis=1) <= 1e-12).all()
        for record in batch.records()[:500]:
            values = [r["probability"] for r in record["recommendations"]]
            assert values == sorted(values, reverse=True)
    reg.activate("a")


def test_recommend_orders_rollout_by_one_shared_score() -> None:
    """recommend() returns the roll-out's 3 products sorted by initial-state Q; calibration keeps order."""
    from models import dqn

    rng = np.random.default_rng(0)
    weights = [
        (rng.normal(size=(dqn.STATE_DIM, 16)).astype(np.float32), rng.normal(size=16).astype(np.float32)),
        (rng.normal(size=(16, 22)).astype(np.float32), rng.normal(size=22).astype(np.float32)),
    ]
    features = D.load_matrix(_data_path())[:1000]

    def q_fn(s: np.ndarray) -> np.ndarray:
        return dqn.forward(weights, s)

    rolled, _ = dqn.rollout(q_fn, features)
    actions, scores = dqn.recommend(q_fn, features)
    assert (np.sort(rolled, axis=1) == np.sort(actions, axis=1)).all()
    assert (np.diff(scores, axis=1) <= 0).all()
    calibrator = {"x": [-3.0, 0.0, 3.0], "y": [0.0, 0.2, 0.9]}
    assert (np.diff(dqn.calibrate(calibrator, scores), axis=1) <= 0).all()


def test_engine_serves_the_json_propensity_model_with_reason_codes(registry: Path, rows: np.ndarray) -> None:
    from models import propensity as P
    from models.engine import InferenceEngine
    from models.registry import Registry

    reg = Registry(registry)
    reg.activate("a")
    manifest = reg.manifest("a")
    assert manifest["propensity"]["kind"] == "additive_logistic"
    assert manifest["artifacts"]["propensity"] == "propensity.json"
    engine = InferenceEngine.load(registry)
    model = P.load(registry / "a" / "propensity.json")
    np.testing.assert_allclose(engine.score(rows).propensity, model.predict(rows))
    contrib = engine._bundle.propensity_contributions(rows)
    p = model.predict(rows)
    np.testing.assert_allclose(contrib.sum(axis=1), np.log(p / (1 - p)) - model.base_logit, atol=1e-9)


def test_gate_keeps_a_version_that_does_not_beat_the_active_one_inactive(registry: Path) -> None:
    from models.registry import Registry

    reg = Registry(registry)
    a, b, c = (reg.manifest(v)["propensity"] for v in ("a", "b", "c"))
    assert a["gate"] == {"passed": True, "reason": "no active version"}
    # b: the same rows as the active a, so the same outer folds and figures: no gain, so not activated.
    assert b["nested_cv"]["key"] == a["nested_cv"]["key"]
    assert [f["coil"] for f in b["nested_cv"]["folds"]] == [f["coil"] for f in a["nested_cv"]["folds"]]
    assert b["gate"]["passed"] is False and b["gate"]["against"] == "a" and b["gate"]["diff"] == 0.0
    # c: another 500-row subsample, so other outer folds: not comparable, kept inactive.
    assert c["nested_cv"]["key"] != a["nested_cv"]["key"]
    assert c["gate"]["passed"] is False and "not comparable" in c["gate"]["reason"]
    assert a["nested_cv"]["summary"]["selected"]["outer_folds"] == 5
    assert 0.0 <= a["nested_cv"]["summary"]["selected"]["ece"] <= 1.0
    manifest = reg.manifest("a")
    assert manifest["value"]["nested_cv"]["summary"]["outer_folds"] == 5
    assert manifest["dqn"]["nested_cv"]["summary"]["outer_folds"] == 5
    assert "nested_cv" not in reg.manifest("b")["dqn"]  # repeats 0 skip them
    assert "nested_cv" not in reg.manifest("b")["value"]
    from models.cli import train_summary

    printed = train_summary(reg.manifest("b"))
    assert "gate: not passed" in printed and "version b kept inactive" in printed
    assert "| selected |" in printed and "| active (a) |" in printed
