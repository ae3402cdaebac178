"""Reason codes on the real engine: TreeSHAP contributions, their ranking, meanings and the contract."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
import typer
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from typer.testing import CliRunner

from models import data as D
from models.engine import InferenceEngine
from models.reasons import TOP, meanings, top_reasons
from schemas.features import FEATURE_INDEX, FEATURE_NAMES
from schemas.messages import Prediction
from schemas.wire import EventIds, prediction_json, utc_now


@pytest.fixture(scope="module")
def engine() -> InferenceEngine:
    return InferenceEngine.load()


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return D.load_matrix(D.resolve_data_path())[:40]


def test_value_contributions_are_additive_treeshap(engine: InferenceEngine, rows: np.ndarray) -> None:
    bundle = engine._bundle
    contributions = bundle.value_contributions(rows)
    x = np.ascontiguousarray(rows[:, list(D.VALUE_COLUMNS)], dtype=np.float32)
    full = bundle.value.predict(xgb.DMatrix(x), pred_contribs=True)
    margin = bundle.value.predict(xgb.DMatrix(x), output_margin=True)
    np.testing.assert_allclose(contributions.sum(axis=1) + full[:, -1], margin, rtol=1e-4, atol=1e-4)
    propensity = bundle.propensity_contributions(rows)
    assert propensity.shape == (len(rows), 85)


def test_reasons_are_the_strongest_pushes_each_way(engine: InferenceEngine, rows: np.ndarray) -> None:
    found = engine.reasons(rows)
    bundle = engine._bundle
    prop = bundle.propensity_contributions(rows)
    value = bundle.value_contributions(rows)
    names = meanings()
    assert len(found) == len(rows)
    for i, why in enumerate(found):
        assert set(why) == {"propensity_up", "propensity_down", "segment_up", "segment_down"}
        for key, contributions, columns in (("propensity", prop[i], D.PROPENSITY_COLUMNS),
                                            ("segment", value[i], D.VALUE_COLUMNS)):
            up, down = why[f"{key}_up"], why[f"{key}_down"]
            assert 1 <= len(up) <= 3 and 1 <= len(down) <= 3
            ranked = sorted(zip(contributions, columns, strict=True), key=lambda item: -item[0])
            assert [r["feature"] for r in up] == [FEATURE_NAMES[c] for v, c in ranked[: len(up)] if v > 0]
            lowest = ranked[::-1][: len(down)]
            assert [r["feature"] for r in down] == [FEATURE_NAMES[c] for v, c in lowest if v < 0]
            for reason in up + down:
                assert reason["meaning"] == names[reason["feature"]]
                assert reason["value"] == rows[i, FEATURE_INDEX[reason["feature"]]]
            assert all(r["contribution"] > 0 for r in up) and all(r["contribution"] < 0 for r in down)


def test_reasons_ride_the_prediction_contract_and_the_fast_path(
    engine: InferenceEngine, rows: np.ndarray
) -> None:
    record = {**engine.score(rows[:1]).records()[0], "reasons": engine.reasons(rows[:1])[0]}
    event = EventIds(str(uuid4()), "c-1", "event", None)
    payload = prediction_json(event, record, utc_now())
    prediction = Prediction.model_validate_json(payload)
    assert prediction.reasons is not None and prediction.reasons["propensity_up"][0].meaning
    assert prediction.model_dump_json().encode() == payload
    old = json.loads(payload)
    del old["reasons"]  # an old producer's message still validates
    assert Prediction.model_validate(old).reasons is None


def test_predict_cli_writes_reasons(rows: np.ndarray, tmp_path: Path) -> None:
    from models.cli import register

    app = typer.Typer()
    register(app)
    source, out = tmp_path / "in.csv", tmp_path / "out.jsonl"
    header = ",".join(FEATURE_NAMES[:85])
    source.write_text(header + "\n" + "\n".join(",".join(map(str, r[:85])) for r in rows[:5]) + "\n")
    result = CliRunner().invoke(app, ["predict", "--input", str(source), "--output", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5 and all(r["reasons"]["segment_up"] for r in records)


def _row_by_row_reasons(
    contributions: np.ndarray, columns: list[int], features: np.ndarray
) -> list[tuple[list[dict[str, object]], list[dict[str, object]]]]:
    """The ranking as it was written first: one partition for all rows, then a stable sort per row."""
    k = min(TOP, contributions.shape[1])
    up_idx = np.argpartition(-contributions, k - 1, axis=1)[:, :k]
    down_idx = np.argpartition(contributions, k - 1, axis=1)[:, :k]
    found = []
    for i, row in enumerate(contributions):
        sides = []
        for chosen, sign in ((up_idx[i][np.argsort(-row[up_idx[i]], kind="stable")], 1),
                             (down_idx[i][np.argsort(row[down_idx[i]], kind="stable")], -1)):
            picked: list[dict[str, object]] = []
            for j in chosen:
                c = float(row[j])
                if c * sign <= 0.0:
                    break
                name = FEATURE_NAMES[columns[j]]
                picked.append({"feature": name, "meaning": meanings().get(name, name),
                               "value": int(features[i][columns[j]]), "contribution": round(c, 6)})
            sides.append(picked)
        found.append((sides[0], sides[1]))
    return found


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.integers(1, 12), st.integers(1, 8))
def test_top_reasons_ranks_as_row_by_row(data: st.DataObject, rows: int, width: int) -> None:
    values = st.one_of(st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.25, -1.25]), st.floats(-5, 5))  # ties, zeros
    contributions = data.draw(hnp.arrays(np.float64, (rows, width), elements=values))
    columns = data.draw(st.lists(st.integers(0, len(FEATURE_NAMES) - 1), min_size=width, max_size=width,
                                 unique=True))
    features = data.draw(hnp.arrays(np.int64, (rows, len(FEATURE_NAMES)), elements=st.integers(0, 41)))
    expected = _row_by_row_reasons(contributions, columns, features)
    assert top_reasons(contributions, columns, features) == expected
