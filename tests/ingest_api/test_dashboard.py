"""The dashboard: rate maths, the stats endpoint, and the page in headless Chromium on a live stack."""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from ingest_api.console.data import RateTracker
from models.engine import InferenceEngine
from tests.helpers.browser import browser_session
from tests.helpers.browser import wait_until as _wait
from tests.helpers.drift import SHIFTED, shifted_training_rows
from tests.helpers.registry import shadow_registry
from tests.helpers.stack import Launched, launched_stack, write_feature_csv
from tests.helpers.stats import DASHBOARD_DB, private_db

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "artifacts" / "dashboard.png"


def test_rates_come_from_each_instance_s_own_timestamps() -> None:
    tracker = RateTracker()
    assert tracker.update("stats:scorer:a", 100.0, 1_000, 900).rate_in == 0.0  # first sample: no rate yet
    sample = tracker.update("stats:scorer:a", 102.0, 5_000, 4_900)
    assert (sample.rate_in, sample.rate_out) == (2_000.0, 2_000.0)
    again = tracker.update("stats:scorer:a", 102.0, 5_000, 4_900)  # polled twice within one write period
    assert again.rate_in == 2_000.0
    restarted = tracker.update("stats:scorer:a", 103.0, 10, 10)  # counters reset: never negative
    assert restarted.rate_in == 0.0
    tracker.forget_except(set())
    assert tracker.update("stats:scorer:a", 104.0, 50, 50).rate_in == 0.0


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, postgres_admin_url: str, redis_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    home = tmp_path_factory.mktemp("dash")
    with launched_stack(kafka_bootstrap, postgres_admin_url, redis_url, home) as running:
        yield running


class EventPump:
    """Posts feature events to the API from a thread until stopped, so the dashboard has traffic."""

    def __init__(self, stack: Launched, rows: list[list[int]], prefix: str) -> None:
        self.sent = 0
        self._stop = threading.Event()
        self._client = httpx.Client(base_url=stack.api_url, headers={"X-API-Key": stack.api_key}, timeout=30)
        self._events = [{"customer_id": f"{prefix}{i}", "features": row} for i, row in enumerate(rows)]
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._client.post("/api/v1/events", json=self._events).raise_for_status()
            self.sent += len(self._events)
            time.sleep(0.25)

    def __enter__(self) -> EventPump:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._client.close()


def _rows(tmp_path: Path, count: int) -> list[list[int]]:
    """Real CoIL rows when the training data is around (a realistic screenshot), else random in-range rows."""
    try:
        from models.data import resolve_data_path

        path = resolve_data_path()
    except FileNotFoundError:
        path = write_feature_csv(tmp_path / "rows.csv", rows=count, seed=11)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))[1:count + 1]
    return [[int(v) for v in row] for row in rows]


def _stats(stack: Launched) -> dict[str, Any]:
    response = httpx.get(
        f"{stack.api_url}/api/v1/dashboard/stats", headers={"X-API-Key": stack.api_key}, timeout=30
    )
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def test_stats_endpoint_needs_scope_read(stack: Launched) -> None:
    anonymous = httpx.get(f"{stack.api_url}/api/v1/dashboard/stats")
    assert anonymous.status_code == 401
    assert httpx.get(f"{stack.api_url}/dashboard").status_code == 200  # the page itself is public


def test_stats_follow_the_pipeline(stack: Launched, tmp_path: Path, unique_id: str) -> None:
    before = _stats(stack)
    assert before["model"]["version"] and before["model"]["metrics"]["auc"] > 0.5
    gains = before["model"]["gains"]
    assert gains and gains[-1]["gains"] == pytest.approx(1.0) and gains[-1]["share"] == pytest.approx(1.0)
    with EventPump(stack, _rows(tmp_path, 100), f"st{unique_id}-") as pump:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = _stats(stack)
            stored = now["sink"]["events_out"] - before["sink"]["events_out"]
            counted = sum(now["segments"].values()) > sum(before["segments"].values())  # within their TTL
            if stored >= 300 and now["scorer"]["rate_in"] > 0 and counted:
                break
            time.sleep(0.5)
    assert pump.sent >= 300
    assert now["scorer"]["instances"] >= 1 and now["sink"]["instances"] >= 1
    assert now["scorer"]["events_in"] > before["scorer"]["events_in"]
    assert now["scorer"]["rate_in"] > 0 and now["scorer"]["p99_ms"] > 0
    assert sum(now["segments"].values()) > sum(before["segments"].values())
    assert any(p["customer_id"].startswith(f"st{unique_id}-") for p in now["recent_predictions"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with browser_session() as driver:
        yield driver


def _text(browser: Any, element_id: str) -> str:
    text: str = browser.find_element("id", element_id).text
    return text


def _number(text: str) -> float:
    return float(text.replace(",", "")) if text not in ("", "–", "—", "unknown") else -1.0


def _sign_in(browser: Any, stack: Launched) -> None:
    """Open the dashboard and paste the key into its form, as a user does."""
    browser.get(f"{stack.api_url}/dashboard")
    form = _wait(lambda: browser.find_element("id", "key-form").is_displayed() and
                 browser.find_element("id", "key-form"), 20, "the key form")
    browser.find_element("id", "key-input").send_keys(stack.api_key)
    form.submit()
    _wait(lambda: _text(browser, "status").startswith("live"), 20, "the page to go live")


def test_dashboard_page_shows_live_numbers_that_move(
    stack: Launched, browser: Any, tmp_path: Path, unique_id: str
) -> None:
    _sign_in(browser, stack)
    assert "key" not in browser.current_url
    stored = browser.execute_script("return JSON.stringify(sessionStorage) + JSON.stringify(localStorage)")
    assert stack.api_key not in stored  # in the page's memory only
    assert _text(browser, "model-version") == _stats(stack)["model"]["version"]
    assert browser.find_element("id", "gains-line").get_attribute("points").count(",") > 10

    upload = write_feature_csv(tmp_path / "batch.csv", rows=300, customer_prefix=f"uib{unique_id}-")
    with upload.open("rb") as handle:
        httpx.post(f"{stack.api_url}/api/v1/predict/batch", headers={"X-API-Key": stack.api_key},
                   files={"file": ("batch.csv", handle, "text/csv")}, timeout=60).raise_for_status()
    with EventPump(stack, _rows(tmp_path, 150), f"ui{unique_id}-"):
        _wait(lambda: _number(_text(browser, "events-in")) >= 0, 20, "a number in events-in")
        start_in = _number(_text(browser, "events-in"))
        moved = _wait(lambda: _number(_text(browser, "events-in")) > start_in
                      and _number(_text(browser, "rate-in")) > 0
                      and _number(_text(browser, "events-out")) > 0, 60, "events-in and rate-in to move")
        assert moved
        _wait(lambda: f"ui{unique_id}-" in _text(browser, "predictions"), 30, "our predictions in the table")
        _wait(lambda: _number(_text(browser, "p99")) > 0, 20, "inference latency")
        _wait(lambda: "completed" in _text(browser, "batches"), 30, "the batch task with its progress")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
    labels = ("high", "medium", "low")
    segments = [_number(_text(browser, f"segment-{label}").split(" ")[0]) for label in labels]
    assert sum(segments) > 0


def test_a_link_with_the_key_is_not_used_and_the_page_has_a_strict_csp(stack: Launched, browser: Any) -> None:
    browser.get("about:blank")  # from /dashboard itself, a new fragment would not load the page again
    browser.get(f"{stack.api_url}/dashboard#key={stack.api_key}")
    _wait(lambda: "not used" in _text(browser, "key-error"), 20, "the page to refuse the link")
    assert "key=" not in browser.current_url  # taken out of the address bar and this history entry
    assert not browser.find_element("id", "board").is_displayed()
    csp = httpx.get(f"{stack.api_url}/dashboard", timeout=30).headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp


def test_dashboard_asks_for_a_key_and_rejects_a_wrong_one(stack: Launched, browser: Any) -> None:
    browser.get(f"{stack.api_url}/dashboard")
    form = _wait(lambda: browser.find_element("id", "key-form").is_displayed() and
                 browser.find_element("id", "key-form"), 20, "the key form")
    browser.find_element("id", "key-input").send_keys("ssk_wrong")
    form.submit()
    _wait(lambda: "401" in _text(browser, "key-error") or "invalid" in _text(browser, "key-error").lower()
          or "key" in _text(browser, "key-error").lower(), 20, "an error message")
    assert not browser.find_element("id", "board").is_displayed()


@pytest.fixture
def shadow_stack(kafka_bootstrap: str, postgres_admin_url: str, redis_url: str,
                 tmp_path: Path) -> Iterator[tuple[Launched, Path]]:
    """A stack on its own registry (v-active, v-shadow) and Redis database: its scorer alone reports."""
    registry = shadow_registry(tmp_path / "registry")
    stats_url = private_db(redis_url, DASHBOARD_DB)
    with redis.from_url(stats_url) as client:  # a crashed earlier run's hashes live on for their TTL
        for key in client.scan_iter(match="stats:*"):
            client.delete(key)
    env = {"STREAMSCORE_MODEL_REGISTRY": str(registry.root), "STREAMSCORE_MODEL_REFRESH_SECONDS": "0.5"}
    with launched_stack(kafka_bootstrap, postgres_admin_url, stats_url, tmp_path / "home", env) as running:
        yield running, registry.root


def _get(stack: Launched, path: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.api_url}{path}", headers={"X-API-Key": stack.api_key}, timeout=30)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def _pct(value: float) -> str:
    """As the page's pct() writes a share."""
    return f"{100 * value:.1f} %"


def test_dashboard_shows_the_live_shadow_comparison_and_the_drifted_features(
    shadow_stack: tuple[Launched, Path], browser: Any, unique_id: str
) -> None:
    stack, registry_root = shadow_stack
    _sign_in(browser, stack)
    assert _text(browser, "shadow-state") == "no shadow set"
    assert _text(browser, "drift-state") == "no live traffic yet"

    headers = {"X-API-Key": stack.api_key}
    httpx.post(f"{stack.api_url}/api/v1/models/shadow", json={"version": "v-shadow"}, headers=headers,
               timeout=60).raise_for_status()
    _wait(lambda: _text(browser, "shadow-version") == "v-shadow", 20, "the shadow version on the page")
    assert _text(browser, "shadow-state").startswith("no live traffic yet")
    time.sleep(3.0)  # the scorer follows the shadow pointer within its 0.5 s refresh
    rows = shifted_training_rows(2000, seed=1)
    events = [{"customer_id": f"sh{unique_id}-{i}", "features": row.tolist()} for i, row in enumerate(rows)]
    for start in range(0, len(events), 500):
        httpx.post(f"{stack.api_url}/api/v1/events", json=events[start:start + 500], headers=headers,
                   timeout=60).raise_for_status()

    shadow = _wait(lambda: (s := _get(stack, "/api/v1/models/shadow"))["rows"] >= len(rows) and s, 60,
                   "the scorer to compare every row")
    drift = _wait(lambda: (d := _get(stack, "/api/v1/models/drift"))["window_rows"] >= len(rows)
                  and d["state"] == "live" and d, 30, "the scorer's drift window")
    # The two versions share products and propensity and differ in segment thresholds only.
    engine = InferenceEngine.load(registry_root, follow_shadow=True)
    shadowed = engine.score_shadow(rows)
    assert shadowed is not None
    expected_segments = float(np.mean(engine.score(rows).segment_label == shadowed.segment_label))
    assert shadow["state"] == "live" and shadow["rows"] == len(rows)
    assert shadow["segment_agreement"] == pytest.approx(expected_segments, abs=1e-6)
    assert shadow["top3_agreement"] == 1.0 and shadow["propensity_spearman"] == pytest.approx(1.0)
    assert set(drift["flagged"]) == set(SHIFTED)

    _wait(lambda: _text(browser, "shadow-rows") == f"{len(rows):,}", 20, "the comparison on the page")
    assert not browser.find_element("id", "shadow-state").is_displayed()
    assert _text(browser, "shadow-top3") == _pct(1.0) and _text(browser, "shadow-spearman") == "1.000"
    assert _text(browser, "shadow-segments") == _pct(expected_segments)
    assert float(_text(browser, "shadow-latency")) > 0
    _wait(lambda: _text(browser, "drift-state").startswith(f"{len(SHIFTED)} feature(s) drifted"), 20,
          "the drift panel")
    # One read of the table (the page redraws it every poll): feature, flagged, PSI text, row text.
    table = browser.execute_script(
        "return [...document.querySelectorAll('#drift tbody tr')].map((tr) =>"
        " [tr.dataset.feature, tr.classList.contains('flagged'), tr.querySelector('td.psi').textContent,"
        " tr.textContent]);")
    assert {name for name, flagged, _, _ in table if flagged} == set(SHIFTED)
    assert all(("drifted" in text) == flagged for _, flagged, _, text in table)
    psi = {f["feature"]: f["psi"] for f in _get(stack, "/api/v1/models/drift")["features"]}
    assert table and all(shown == f"{psi[name]:,.3f}" for name, _, shown, _ in table)
    assert [name for name, _, _, _ in table][: len(SHIFTED)] == drift["flagged"]  # most drifted first
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT.with_name("dashboard-shadow-drift.png")))
