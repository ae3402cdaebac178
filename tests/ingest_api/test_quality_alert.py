"""The quality alert and gauges from joined rows, and the CLI's table and reliability PNG (no engines)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from ingest_api.console.quality import QualityGauges, QualitySettings, check_alert, figures
from models import live_quality
from store.outcome_join import Joined
from streamscore.performance import quality_table, write_reliability

MANIFEST = {"metrics": {"propensity": {"auc": 0.78}, "recommender": {"dqn": {"hr3": 0.87}}}}


def _joined(n: int, informative: bool, seed: int = 3) -> Joined:
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    y = rng.random(n) < (p if informative else 0.3)
    status = np.where(y, live_quality.POSITIVE, live_quality.NEGATIVE)
    status[:5] = live_quality.PENDING
    hits = rng.random(n) < (0.9 if informative else 0.5)
    return Joined(propensity=p, scored=np.arange(n, dtype=np.float64), status=status,
                  trial_products=["car"] * n, trial_scored=np.arange(n, dtype=np.float64), trial_hits=hits,
                  unmatched=2)


def test_alert_flips_the_gauge_and_logs_the_version_and_figures(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    gauges = QualityGauges(registry)
    settings = QualitySettings(quality_alert_last_n=500, quality_alert_margin=0.05)
    assert not check_alert("v-good", MANIFEST, _joined(2000, informative=True), settings, gauges)
    with caplog.at_level(logging.WARNING, logger="ingest_api.console.quality"):
        assert check_alert("v-bad", MANIFEST, _joined(2000, informative=False), settings, gauges)
    record = next(r for r in caplog.records if r.getMessage() == "model quality below validation")
    assert record.levelno == logging.WARNING
    assert record.model_version == "v-bad" and record.validation_auc == 0.78 and record.auc < 0.73  # type: ignore[attr-defined]
    gauges.record("v-bad", figures(_joined(2000, informative=False)))
    text = generate_latest(registry).decode()
    assert 'streamscore_model_quality_alert{version="v-bad"} 1.0' in text
    assert 'streamscore_model_quality_alert{version="v-good"} 0.0' in text
    assert 'streamscore_model_quality{figure="pending",version="v-bad"} 5.0' in text
    too_few = QualitySettings(quality_alert_last_n=5000)  # fewer labelled than N: no verdict yet
    assert not check_alert("v-bad", MANIFEST, _joined(2000, informative=False), too_few, gauges)


def test_cli_table_and_reliability_png(tmp_path) -> None:
    document = {"version": "v-a", **figures(_joined(500, informative=True))}
    console = Console(record=True, width=160)
    console.print(quality_table([document, {**document, "version": "v-b"}]))
    text = console.export_text()
    assert "AUC (estimated, CBPE)" in text and "v-b" in text
    png = write_reliability([document], tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
