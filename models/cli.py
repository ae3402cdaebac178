"""Typer commands: train, predict, evaluate, `models list|activate|shadow|promote` (heavy imports inside)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

models_app = typer.Typer(
    help="Model registry: list versions, activate one, shadow and promote.", no_args_is_help=True
)
PREDICT_CHUNK = 2000


class RowError(ValueError):
    """A bad input row, with the 1-based file line and the column named."""


def read_scoring_csv(path: Path) -> tuple[list[str], Any]:
    """Read and validate a scoring CSV: (ids, (n, 86) int64 matrix); RowError names line and column.

    Ids are strings, as `customer_id` is everywhere else; without that column (or a value) the row number.
    """
    import numpy as np
    import pandas as pd

    from schemas.features import FEATURE_NAMES, FEATURE_RANGES, TARGET_NAME

    frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    columns = [str(c).strip() for c in frame.columns]
    if columns and all(c.lstrip("-").replace(".", "", 1).isdigit() for c in columns):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, header=None)  # headerless file
        columns = list(FEATURE_NAMES[: frame.shape[1]]) if frame.shape[1] in (85, 86) else columns
        if frame.shape[1] not in (85, 86):
            raise RowError(f"{path}: no header and {frame.shape[1]} columns (expected 85 or 86)")
        header_lines = 0
    else:
        header_lines = 1
    frame.columns = columns
    missing = [n for n in FEATURE_NAMES if n not in columns and n != TARGET_NAME]
    if missing:
        raise RowError(f"{path}: missing column(s): {', '.join(missing[:8])}")
    n = len(frame)
    given: list[str] = frame["customer_id"].tolist() if "customer_id" in columns else [""] * n
    ids = [cid if cid != "" else str(i + 1) for i, cid in enumerate(given)]
    matrix = np.zeros((n, len(FEATURE_NAMES)), dtype=np.int64)
    errors: list[str] = []
    for j, name in enumerate(FEATURE_NAMES):
        if name not in columns:
            continue  # CARAVAN absent counts as 0
        raw = frame[name].str.strip()
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        low, high = FEATURE_RANGES[j]
        bad = ~np.isfinite(values) | (values != np.round(values)) | (values < low) | (values > high)
        for i in np.flatnonzero(bad)[:5]:
            errors.append(
                f"line {i + 1 + header_lines}, column {name}: got {raw.iloc[i]!r}, "
                f"expected an integer {low}–{high}"
            )
        matrix[~bad, j] = values[~bad].astype(np.int64)
    if errors:
        raise RowError("\n".join(sorted(errors, key=lambda e: int(e.split(",")[0][5:]))[:20]))
    return ids, matrix


def train(
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same models."),
    output: Path | None = typer.Option(None, help="Registry directory (default: models/registry)."),
    data: Path | None = typer.Option(
        None, help="train.csv (default: $STREAMSCORE_TRAIN_DATA, else the packaged CoIL 2000 data)."
    ),
    subsample: int | None = typer.Option(None, help="Train on this many random rows (quick runs)."),
    dqn_rounds: int | None = typer.Option(None, help="Override the number of DQN collection rounds."),
    final_fit: str = typer.Option(
        "all", help="Refit XGBoost models on 'all' rows or keep the 'train' split."
    ),
    segment_high: float = typer.Option(67.0, help="Value score at or above which the label is high."),
    segment_medium: float = typer.Option(34.0, help="Value score at or above which the label is medium."),
    activate: bool = typer.Option(
        True,
        help="Point `active` at the new version if it passes the propensity gate (never with --no-activate).",
    ),
    cv_repeats: int = typer.Option(
        2, help="Repeats of the outer 5-fold nested CV of the propensity and value procedures."
    ),
    recommender_cv_repeats: int = typer.Option(
        1, help="Repeats of the outer 5-fold CV of the DQN recommender (0: skip; each repeat trains 5 DQNs)."
    ),
    from_store: bool = typer.Option(
        False, "--from-store", help="Build the training set from the feature log (docs/replay.md)."
    ),
    since: str | None = typer.Option(None, help="With --from-store: window start (ISO 8601 or an age, 30d)."),
    labels: str = typer.Option(
        "logged", help="With --from-store: 'logged' CARAVAN values or 'outcomes' (closed horizons)."
    ),
) -> None:
    """Train the models, estimate the propensity procedure by nested grouped CV, gate, write a new version."""
    import tempfile

    if from_store:
        if since is None or data is not None or not STORE_EXPORT:
            typer.echo("error: --from-store needs --since, no --data, and the streamscore CLI", err=True)
            raise typer.Exit(2)
        with tempfile.TemporaryDirectory(prefix="streamscore-train-") as scratch:
            try:
                path, source = STORE_EXPORT[0](since, labels, Path(scratch))
            except ValueError as error:
                typer.echo(f"error: {error}", err=True)
                raise typer.Exit(2) from error
            _train(seed, output, path, subsample, dqn_rounds, final_fit, segment_high, segment_medium,
                   activate, cv_repeats, recommender_cv_repeats, source)
        return
    _train(seed, output, data, subsample, dqn_rounds, final_fit, segment_high, segment_medium, activate,
           cv_repeats, recommender_cv_repeats, None)


STORE_EXPORT: list[Callable[[str, str, Path], tuple[Path, dict[str, Any]]]] = []
"""Set by the CLI root (streamscore/train_store.py): write train.csv from the feature log into a directory."""


def _train(
    seed: int, output: Path | None, data: Path | None, subsample: int | None, dqn_rounds: int | None,
    final_fit: str, segment_high: float, segment_medium: float, activate: bool, cv_repeats: int,
    recommender_cv_repeats: int, source: dict[str, Any] | None,
) -> None:
    """Run the training protocol with a progress bar; record the data source in the manifest when given."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from models import train as training
    from models.dqn import DQNConfig

    overrides: dict[str, Any] = {"rounds": dqn_rounds} if dqn_rounds else {}
    total = (dqn_rounds or DQNConfig().rounds) + 7
    thresholds = {"segment_high_min": segment_high, "segment_medium_min": segment_medium}
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task("train", total=total)
        version = training.train(
            data_path=data,
            seed=seed,
            registry_dir=output,
            subsample=subsample,
            dqn_overrides=overrides,
            final_fit=final_fit,
            activate=activate,
            cv_repeats=cv_repeats,
            recommender_cv_repeats=recommender_cv_repeats,
            thresholds=thresholds,
            progress=lambda stage, n: bar.update(task, advance=n, description=stage),
        )
    from models.registry import Registry

    registry = Registry(output)
    if source is not None:
        manifest = registry.manifest(version)
        manifest["data"]["source"] = source
        registry.write_manifest(registry.path(version), manifest)
    typer.echo(train_summary(registry.manifest(version), activate))


def train_summary(manifest: dict[str, Any], activate: bool = True) -> str:
    """What `train` prints: the propensity choice, the nested-CV table, the gate's verdict, the metrics."""
    from models.cv import SCALING, markdown

    version, metrics, prop = manifest["version"], manifest["metrics"], manifest["propensity"]
    pm, rec = metrics["propensity"], metrics["recommender"]["dqn"]
    nested, gate = prop["nested_cv"], prop["gate"]
    active = activate and gate["passed"]
    lines = [
        f"propensity: {prop['config']} (one-standard-error rule; "
        f"Platt a, b = {prop['platt'][0]:.3f}, {prop['platt'][1]:.3f})",
        "nested grouped CV (outer folds):",
        markdown(nested["summary"], {}),
        SCALING,
        f"gate: {'passed' if gate['passed'] else 'not passed'}: {gate['reason']}",
    ]
    value = manifest["value"].get("nested_cv", {}).get("summary")
    if value:
        lines.append(
            f"value score Spearman (outer folds, {value['outer_folds']}): {value['spearman']:.4f} "
            f"± {value['spearman_spread']:.4f} "
            f"(folds {value['spearman_min']:.4f}–{value['spearman_max']:.4f}); chosen {value['chosen']}"
        )
    recommender = manifest["dqn"].get("nested_cv", {}).get("summary")
    if recommender:
        lines.append(
            f"recommender HR@3 (outer folds, {recommender['outer_folds']}): " + recommender_line(recommender)
        )
    if not active:
        lines.append(f"version {version} kept inactive" + ("" if activate else " (--no-activate)"))
    lines.append(
        f"version {version}{' (active)' if active else ''}: validation AUC {pm['auc']:.3f}, "
        f"top-20% buyers {pm['top20_buyers']}/{pm['buyers']}, HR@3 {rec['hr3']:.3f} "
        f"(outside top-3 {rec['hr3_outside_top3']:.3f}), value Spearman {metrics['value']['spearman']:.3f}"
    )
    return "\n".join(lines)


def recommender_line(summary: dict[str, Any]) -> str:
    """HR@3 overall and outside the top 3, one random hidden product and all pairs, mean ± spread."""
    parts = []
    for protocol in ("one_random", "all_pairs"):
        for metric, label in (("hr3", "HR@3"), ("hr3_outside_top3", "outside top 3")):
            s = summary[f"{protocol}.dqn.{metric}"]
            parts.append(f"{protocol} {label} {s['mean']:.3f} ± {s['spread']:.3f}")
    return "; ".join(parts)


def predict(
    input: Path = typer.Option(..., "--input", "-i", exists=True, dir_okay=False, help="CSV to score."),
    output: Path = typer.Option(..., "--output", "-o", help="JSON Lines output file."),
    registry: Path | None = typer.Option(None, help="Registry directory (default: models/registry)."),
    reasons: bool = typer.Option(True, help="Add each row's reason codes (TreeSHAP; slower)."),
) -> None:
    """Score a CSV offline with the inference engine; a bad row fails the run with exit code 2."""
    import orjson

    from models.engine import InferenceEngine

    try:
        ids, matrix = read_scoring_csv(input)
    except RowError as error:
        typer.echo(f"error: invalid input {input}:\n{error}", err=True)
        raise typer.Exit(2) from error
    engine = InferenceEngine.load(registry)
    with output.open("wb") as handle:
        for start in range(0, len(ids), PREDICT_CHUNK):
            chunk = matrix[start : start + PREDICT_CHUNK]
            records = engine.score(chunk).records()
            if reasons:
                why = engine.reasons(chunk)
                records = [{**r, "reasons": w} for r, w in zip(records, why, strict=True)]
            for cid, record in zip(ids[start : start + PREDICT_CHUNK], records, strict=True):
                handle.write(orjson.dumps({"customer_id": cid, **record}) + b"\n")
    typer.echo(f"scored {len(ids)} rows with model {engine.model_version} -> {output}", err=True)


def evaluate(
    output: Path = typer.Option(Path("artifacts/report"), help="Report directory."),
    registry: Path | None = typer.Option(None, help="Registry directory (default: models/registry)."),
    version: str | None = typer.Option(None, help="Version to report on (default: active)."),
) -> None:
    """Write the markdown report with gains/lift, ROC and HR@3-by-product plots for a version."""
    from models.evaluate import load_validation, write_report
    from models.registry import Registry

    reg = Registry(registry)
    name = version or reg.active_version()
    path = write_report(reg.manifest(name), load_validation(reg.path(name)), output)
    typer.echo(f"report written to {path}")


@models_app.command("list")
def list_versions(registry: Path | None = typer.Option(None, help="Registry directory.")) -> None:
    """List registry versions; the active one is marked with *, the shadow with s."""
    from models.registry import Registry

    reg = Registry(registry)
    try:
        active = reg.active_version()
    except FileNotFoundError:
        active = ""
    shadow = reg.shadow_version()
    for name in reg.versions():
        m = reg.manifest(name).get("metrics", {})
        auc = m.get("propensity", {}).get("auc", float("nan"))
        hr3 = m.get("recommender", {}).get("dqn", {}).get("hr3", float("nan"))
        mark = "*" if name == active else "s" if name == shadow else " "
        typer.echo(f"{mark} {name}  auc={auc:.3f} hr3={hr3:.3f}")


@models_app.command("activate")
def activate_version(
    version: str, registry: Path | None = typer.Option(None, help="Registry directory.")
) -> None:
    """Point `active` at VERSION (running engines pick it up on their next refresh)."""
    from models.registry import Registry

    try:
        Registry(registry).activate(version)
    except KeyError as error:
        typer.echo(f"error: {error.args[0]}", err=True)
        raise typer.Exit(2) from error
    typer.echo(f"active version: {version}")


@models_app.command("shadow")
def shadow_version(
    version: str | None = typer.Argument(None, help="Version to score alongside the active one."),
    clear: bool = typer.Option(False, "--clear", help="Stop shadowing."),
    registry: Path | None = typer.Option(None, help="Registry directory."),
) -> None:
    """Mark VERSION as the shadow (scored on live traffic, never served), or --clear it; no VERSION: show."""
    from models.registry import Registry

    reg = Registry(registry)
    if clear and version is not None:
        typer.echo("error: give either VERSION or --clear", err=True)
        raise typer.Exit(2)
    try:
        if clear:
            reg.clear_shadow()
        elif version is not None:
            reg.set_shadow(version)
    except (KeyError, ValueError) as error:
        typer.echo(f"error: {error.args[0]}", err=True)
        raise typer.Exit(2) from error
    typer.echo(f"shadow version: {reg.shadow_version() or 'none'}")


REPLAY_GATE: list[Callable[[str], str | None]] = []
"""Set by the CLI root (streamscore/replay.py): why a version's replays do not allow promoting it, or None."""


@models_app.command("promote")
def promote_shadow(
    version: str | None = typer.Argument(None, help="Version to make active (default: the shadow)."),
    require_replay: bool = typer.Option(
        False, "--require-replay",
        help="Refuse unless a recent replay of the version passes the thresholds (docs/replay.md).",
    ),
    registry: Path | None = typer.Option(None, help="Registry directory."),
) -> None:
    """Make VERSION (default: the shadow) active, no longer shadowed (engines swap at their next refresh)."""
    from models.registry import Registry

    reg = Registry(registry)
    target = version or reg.shadow_version()
    if target is None:
        typer.echo("error: no shadow version to promote", err=True)
        raise typer.Exit(2)
    if require_replay:
        problem = REPLAY_GATE[0](target) if REPLAY_GATE else "the replay check is not available here"
        if problem is not None:
            typer.echo(f"error: {target} not promoted: {problem}", err=True)
            raise typer.Exit(2)
    try:
        if target == reg.shadow_version():
            reg.promote()
            origin = "promoted from shadow"
        else:
            reg.activate(target)
            origin = "activated"
    except (KeyError, LookupError) as error:
        typer.echo(f"error: {error.args[0]}", err=True)
        raise typer.Exit(2) from error
    typer.echo(f"active version: {target} ({origin})")


def register(app: typer.Typer) -> None:
    """Attach the model commands to the root `streamscore` app."""
    app.command("train")(train)
    app.command("predict")(predict)
    app.command("evaluate")(evaluate)
    app.add_typer(models_app, name="models")


if __name__ == "__main__":  # pragma: no cover
    root = typer.Typer()
    register(root)
    sys.exit(root())
