"""The dashboard: rate maths, the stats endpoint, and the page in headless Chromium on a live stack."""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest_api.dashboard_data import RateTracker
from tests.helpers.browser import browser_session
from tests.helpers.browser import wait_until as _wait
from tests.helpers.stack import Launched, launched_stack, write_feature_csv

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
            if stored >= 300 and now["scorer"]["rate_in"] > 0:
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


def test_dashboard_page_shows_live_numbers_that_move(
    stack: Launched, browser: Any, tmp_path: Path, unique_id: str
) -> None:
    browser.get(f"{stack.api_url}/dashboard#key={stack.api_key}")
    _wait(lambda: _text(browser, "status").startswith("live"), 20, "the page to go live")
    assert "key=" not in browser.current_url  # the key is taken out of the address bar
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


def test_dashboard_asks_for_a_key_and_rejects_a_wrong_one(stack: Launched, browser: Any) -> None:
    browser.get(f"{stack.api_url}/dashboard")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{stack.api_url}/dashboard")
    form = _wait(lambda: browser.find_element("id", "key-form").is_displayed() and
                 browser.find_element("id", "key-form"), 20, "the key form")
    browser.find_element("id", "key-input").send_keys("ssk_wrong")
    form.submit()
    _wait(lambda: "401" in _text(browser, "key-error") or "invalid" in _text(browser, "key-error").lower()
          or "key" in _text(browser, "key-error").lower(), 20, "an error message")
    assert not browser.find_element("id", "board").is_displayed()
