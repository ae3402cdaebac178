"""The evaluation report of the shipped version: readable text, products by name, "no pairs" apart from 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.evaluate import hit_rates, load_validation, per_product, write_report
from models.registry import Registry
from schemas.features import PRODUCT_IDS


def test_the_report_reads_as_text_and_names_every_product(tmp_path: Path) -> None:
    registry = Registry()
    version = registry.active_version()
    report = write_report(registry.manifest(version), load_validation(registry.path(version)), tmp_path)

    text = report.read_text(encoding="utf-8")
    assert "{'" not in text and "'}" not in text  # no Python dict printed
    assert "Final fit: dqn: " in text
    rows = [line.split(" | ")[0].lstrip("| ") for line in text.splitlines()
            if line.startswith("| ") and line.split(" | ")[0].lstrip("| ") in PRODUCT_IDS]
    assert rows == list(PRODUCT_IDS)  # the catalogue's order, not "0, 1, 10, 11, …"
    assert "| surfboard | no pairs | no pairs | no pairs |" in text  # never hidden in this split
    assert all((tmp_path / name).stat().st_size > 5_000 for name in ("gains_lift.png", "roc.png",
                                                                     "hr3_by_product.png"))


def test_per_product_figures_are_keyed_by_product_and_read_old_index_keys() -> None:
    top = np.array([[0, 1, 2], [3, 4, 5], [0, 3, 9]])
    rates = hit_rates(top, np.array([1, 7, 9]), popular=[0])
    assert rates["per_product"] == {"third_party_firms": 1.0, "trailer": 0.0, "agricultural_machines": 1.0}
    old = {"10": 0.5, "2": 0.25, "0": 1.0}  # an older manifest: index strings, sorted as text
    new = {"moped": 0.5, "third_party_agriculture": 0.25, "private_third_party": 1.0}
    assert per_product(old) == per_product(new)
    assert list(per_product(new)) == list(PRODUCT_IDS)
    assert per_product(new)["trailer"] is None and per_product({"trailer": 0.0})["trailer"] == 0.0
