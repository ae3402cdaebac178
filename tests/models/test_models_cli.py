"""Models CLI: offline predict through the committed default version, input validation, registry commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from models import data as D
from models.cli import register
from schemas.features import FEATURE_NAMES, PRODUCT_COUNT_INDEX, PRODUCT_IDS


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    root = typer.Typer()
    register(root)
    return root


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return D.load_matrix(D.resolve_data_path())[:400]


def _write_csv(path: Path, matrix: np.ndarray, with_id: bool, with_caravan: bool) -> None:
    names = list(FEATURE_NAMES) if with_caravan else list(FEATURE_NAMES[:-1])
    header = (["customer_id"] if with_id else []) + names
    lines = [",".join(header)]
    for i, row in enumerate(matrix):
        values = [str(v) for v in (row if with_caravan else row[:-1])]
        lines.append(",".join(([f"c{i}"] if with_id else []) + values))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_predict_with_committed_default_version(app: typer.Typer, sample: np.ndarray, tmp_path: Path) -> None:
    from models.registry import PACKAGE_REGISTRY, Registry

    source, out = tmp_path / "in.csv", tmp_path / "out.jsonl"
    _write_csv(source, sample, with_id=True, with_caravan=False)
    result = CliRunner().invoke(
        app, ["predict", "--input", str(source), "--output", str(out), "--registry", str(PACKAGE_REGISTRY)]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(sample)
    active = Registry(PACKAGE_REGISTRY).active_version()
    visible = sample.copy()
    visible[:, -1] = 0  # CARAVAN absent from the file counts as 0
    owned = visible[:, list(PRODUCT_COUNT_INDEX)] > 0
    for i, rec in enumerate(records):
        assert rec["customer_id"] == f"c{i}" and rec["model_version"] == active
        chosen = [PRODUCT_IDS.index(r["product_id"]) for r in rec["recommendations"]]
        assert len(set(chosen)) == 3 and not owned[i, chosen].any()
        assert all(0.0 <= r["probability"] <= 1.0 for r in rec["recommendations"])
        assert 0.0 <= rec["propensity"] <= 1.0 and 0.0 <= rec["segment"]["score"] <= 100.0
        assert rec["segment"]["label"] in {"high", "medium", "low"}


def test_predict_without_customer_id_uses_row_numbers(
    app: typer.Typer, sample: np.ndarray, tmp_path: Path
) -> None:
    source, out = tmp_path / "in.csv", tmp_path / "out.jsonl"
    _write_csv(source, sample[:5], with_id=False, with_caravan=True)
    result = CliRunner().invoke(app, ["predict", "--input", str(source), "--output", str(out)])
    assert result.exit_code == 0, result.output
    ids = [json.loads(line)["customer_id"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert ids == ["1", "2", "3", "4", "5"]  # strings, as customer_id is in every other output


def test_predict_bad_row_names_line_and_column(app: typer.Typer, sample: np.ndarray, tmp_path: Path) -> None:
    source, out = tmp_path / "bad.csv", tmp_path / "out.jsonl"
    _write_csv(source, sample[:4], with_id=True, with_caravan=False)
    lines = source.read_text(encoding="utf-8").splitlines()
    cells = lines[3].split(",")
    cells[1 + FEATURE_NAMES.index("MGEMLEEF")] = "9"  # documented range 1–6
    lines[3] = ",".join(cells)
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["predict", "--input", str(source), "--output", str(out)])
    assert result.exit_code == 2
    assert "line 4, column MGEMLEEF" in result.output


def test_models_list_and_activate_unknown(app: typer.Typer) -> None:
    from models.registry import PACKAGE_REGISTRY, Registry

    listed = CliRunner().invoke(app, ["models", "list", "--registry", str(PACKAGE_REGISTRY)])
    assert listed.exit_code == 0
    assert f"* {Registry(PACKAGE_REGISTRY).active_version()}" in listed.output
    bad = CliRunner().invoke(
        app, ["models", "activate", "no-such-version", "--registry", str(PACKAGE_REGISTRY)]
    )
    assert bad.exit_code == 2 and "unknown model version" in bad.output


def _files(root: Path) -> dict[str, bytes]:
    files = sorted(path for path in root.rglob("*") if path.is_file())
    return {str(path.relative_to(root)): path.read_bytes() for path in files}


def test_model_commands_keep_user_state_out_of_the_packaged_registry(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import subprocess

    from models.registry import PACKAGE_REGISTRY, Registry

    state = tmp_path / "state"
    monkeypatch.setenv("STREAMSCORE_DEV_HOME", str(state))
    monkeypatch.delenv("STREAMSCORE_MODEL_REGISTRY", raising=False)
    before = _files(PACKAGE_REGISTRY)
    shipped = Registry().active_version()
    other = next(version for version in Registry().versions() if version != shipped)

    def models(*args: str) -> str:
        result = CliRunner().invoke(app, ["models", *args])
        assert result.exit_code == 0, result.output
        return result.output

    models("activate", other)
    assert Registry().active_version() == other  # what the engines load and follow
    models("shadow", shipped)
    assert f"* {other}" in models("list") and f"s {shipped}" in models("list")
    models("shadow", "--clear")
    assert Registry().shadow_version() is None
    models("shadow", shipped)
    models("promote")
    assert (Registry().active_version(), Registry().shadow_version()) == (shipped, None)

    assert _files(PACKAGE_REGISTRY) == before
    assert sorted(path.name for path in (state / "registry").iterdir()) == ["active"]  # no empty shadow file
    root = PACKAGE_REGISTRY.parents[1]
    if shutil.which("git") and (root / ".git").exists():
        status = subprocess.run(["git", "status", "--porcelain", "--", str(PACKAGE_REGISTRY)], cwd=root,
                                capture_output=True, text=True, check=True).stdout
        assert status == ""


def test_a_configured_registry_keeps_its_own_pointers(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers.registry import shadow_registry

    registry = shadow_registry(tmp_path / "registry")
    monkeypatch.setenv("STREAMSCORE_DEV_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("STREAMSCORE_MODEL_REGISTRY", str(registry.root))
    assert CliRunner().invoke(app, ["models", "shadow", "v-shadow"]).exit_code == 0
    assert (registry.root / "shadow").read_text(encoding="utf-8") == "v-shadow\n"
    assert not (tmp_path / "state").exists()


def test_predict_prints_only_its_own_summary(sample: np.ndarray, tmp_path: Path) -> None:
    import os
    import subprocess

    from tests.helpers.stack import CLI

    source, out = tmp_path / "in.csv", tmp_path / "out.jsonl"
    _write_csv(source, sample[:3], with_id=True, with_caravan=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("TF_")}
    done = subprocess.run([*CLI, "predict", "--input", str(source), "--output", str(out), "--no-reasons"],
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    # Nothing from TensorFlow: the one summary line.
    assert done.stderr.splitlines() == [f"scored 3 rows with model {_active()} -> {out}"]
    assert done.stdout == ""


def _active() -> str:
    from models.registry import Registry

    return Registry().active_version()
