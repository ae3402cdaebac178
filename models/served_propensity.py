"""The propensity procedure's outcome as a servable model: JSON (+ XGBoost UBJ), never pickle.

A chosen naive Bayes or logistic model is an additive logistic model: its Platt map folds into the
coefficients, so serving stays the table lookup of models/propensity.py. A chosen XGBoost model or
rank-averaged ensemble is a `BoostedPropensity`: booster margin (or mean training-rank of the members)
through the Platt map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import candidates as K
from models import propensity as P
from models.selection import Procedure, platt_input

FORMAT = "streamscore.boosted-propensity.v1"
BOOSTER_FILE = "propensity_xgb.ubj"


@dataclass(frozen=True)
class BoostedPropensity:
    """sigmoid(a * input + b); input: booster margin, or logit of the members' mean training rank."""

    family: str  # "xgb" or "ensemble"
    booster: Any
    additive: P.AdditivePropensity | None  # the ensemble's logistic member (uncalibrated)
    grids: list[np.ndarray]  # quantile grids of the members' training scores (ensemble), additive first
    platt: tuple[float, float]
    info: dict[str, Any]

    def margin(self, features: np.ndarray) -> np.ndarray:
        """The booster's margin on columns 1-85."""
        return K.xgb_margin(self.booster, features, self.booster.num_boosted_rounds())

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Calibrated P(caravan) per row."""
        x = np.asarray(features)
        if self.family == "xgb":
            raw = self.margin(x)
        else:
            assert self.additive is not None
            raw = (K.cdf(self.grids[0], self.additive.logit(x)) + K.cdf(self.grids[1], self.margin(x))) / 2
        a, b = self.platt
        z = a * platt_input(K.configs([self.family])[0], raw) + b
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def save(self, directory: Path, artifact: str) -> None:
        """propensity JSON (members, grids, Platt map) and the booster in native UBJ."""
        self.booster.save_model(str(directory / BOOSTER_FILE))
        spec = {
            "format": FORMAT,
            "family": self.family,
            "booster": BOOSTER_FILE,
            "additive": self.additive.to_json() if self.additive is not None else None,
            "grids": [[float(v) for v in g] for g in self.grids],
            "platt": list(self.platt),
            "info": self.info,
        }
        (directory / artifact).write_text(json.dumps(spec, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, spec: dict[str, Any]) -> BoostedPropensity:
        """Rebuild from save() output (the booster pinned to the serving thread count)."""
        from models import boosting

        additive = P.AdditivePropensity.from_json(spec["additive"]) if spec.get("additive") else None
        return cls(
            family=spec["family"],
            booster=boosting.load(directory / spec["booster"]),
            additive=additive,
            grids=[np.asarray(g, dtype=np.float64) for g in spec["grids"]],
            platt=(float(spec["platt"][0]), float(spec["platt"][1])),
            info=dict(spec.get("info", {})),
        )


ServedPropensity = P.AdditivePropensity | BoostedPropensity


def from_procedure(proc: Procedure) -> ServedPropensity:
    """The servable form of a fitted procedure (predicts exactly what proc.predict does)."""
    fitted, (a, b) = proc.fitted, proc.platt
    info = {
        "family": fitted.config.family,
        "config": fitted.config.name,
        "platt": [a, b],
        "selection": proc.report,
    }
    if fitted.additive is not None:
        m = fitted.additive
        return P.AdditivePropensity(m.terms, m.coef * a, m.intercept * a + b, m.mean, {**m.info, **info})
    if fitted.booster is not None:
        return BoostedPropensity("xgb", fitted.booster[: fitted.rounds], None, [], (a, b), info)
    lr, xgb = fitted.members
    assert lr.additive is not None
    return BoostedPropensity("ensemble", xgb.booster[: xgb.rounds], lr.additive, fitted.grids, (a, b), info)


def save(model: ServedPropensity, directory: Path, artifact: str) -> None:
    """Write the model under directory/artifact (JSON; a booster beside it in UBJ)."""
    if isinstance(model, P.AdditivePropensity):
        P.save(model, directory / artifact)
    else:
        model.save(directory, artifact)


def load(directory: Path, artifact: str) -> ServedPropensity:
    """Read either kind by its JSON format field."""
    spec = json.loads((directory / artifact).read_text(encoding="utf-8"))
    if spec.get("format") == FORMAT:
        return BoostedPropensity.load(directory, spec)
    return P.AdditivePropensity.from_json(spec)
