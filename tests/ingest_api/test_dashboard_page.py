"""The dashboard page in Chromium, fed fixed figures: idle, unknown lag, long rows in a narrow card, the
shadow and drift panels' empty and unavailable states (built by the API's own functions), one "buyers in
the top 20 %" figure, whole numbers and names, and every tile saying what it counts and in which unit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ingest_api.console.model_metrics import model_summary
from ingest_api.console.scorer_stats import StatsRead, drift_report, shadow_status
from ingest_api.main import create_app
from ingest_api.settings import ApiSettings
from tests.helpers.browser import browser_session, wait_until
from tests.helpers.served import served_without_lifespan

ROLE = {"instances": 1, "events_in": 0, "events_out": 0, "dlq": 0, "batches": 0, "lag": 0, "in_flight": 0,
        "p50_ms": 0.0, "p99_ms": 0.0, "rate_in": 0.0, "rate_out": 0.0}
LONGEST_PRODUCT = "third_party_agriculture"  # the longest of schemas.features.PRODUCT_IDS
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
VIEWER = "http://jaeger.test:16686/trace/{trace_id}"


def _stats(read: StatsRead = ({}, None), shadow: str | None = None, **scorer: Any) -> dict[str, Any]:
    prediction = {"event_id": "e", "customer_id": "customer-with-a-rather-long-identifier-0000000042",
                  "model_version": "v20260101-000000", "source": "batch", "propensity": 0.123456,
                  "segment": "high", "segment_score": 92.4,
                  "top": {"product_id": LONGEST_PRODUCT, "probability": 0.4},
                  "scored_at": "2026-12-01T22:00:00.123Z", "trace_id": TRACE_ID}
    batch = {"task_id": "2b0c1f1e-0000-4000-8000-000000000000", "status": "completed", "filename": "x.csv",
             "rows_valid": 123_456, "rows_invalid": 7_890, "rows_scored": 123_456, "rows_dead": 0,
             "progress": 1.0, "created_at": "2026-12-01T22:00:00Z", "finished_at": None}
    return {"generated_at": 0, "scorer": {**ROLE, **scorer}, "sink": dict(ROLE), "instances": [],
            "model": {"version": "v1", "metrics": {}, "gains": []},
            "segments": {"high": 1, "medium": 0, "low": 0},
            "recent_predictions": [prediction] * 20, "batches": [batch] * 10,
            "shadow": shadow_status("v1", shadow, read).model_dump(),
            "drift": drift_report(read).model_dump()}


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with served_without_lifespan(create_app(ApiSettings())) as url, browser_session(offline=True) as driver:
        driver.set_window_size(1000, 900)  # a laptop: the two tables share one row of cards, or stack
        driver.get(f"{url}/dashboard")
        wait_until(lambda: driver.execute_script("return typeof render === 'function'"), 20, "the script")
        yield driver


def _text(driver: Any, element_id: str) -> str:
    text: str = driver.find_element("id", element_id).text
    return text


def test_idle_latency_is_a_dash_and_unknown_lag_says_so(page: Any) -> None:
    page.execute_script("render(arguments[0])", _stats(lag=-1))
    assert _text(page, "p50") == "—" and _text(page, "p99") == "—" and _text(page, "sink-p99") == "—"
    assert _text(page, "lag") == "unknown" and _text(page, "lag-scorer") == "unknown"
    page.execute_script("render(arguments[0])", _stats(p50_ms=1.234, p99_ms=5.5, lag=12))
    assert _text(page, "p50") == "1.23" and _text(page, "lag") == "12"


@pytest.mark.parametrize("width", [1400, 1000, 700])
def test_tables_fit_their_cards(page: Any, width: int) -> None:
    page.set_window_size(width, 900)
    page.execute_script("render(arguments[0])", _stats())
    for table in ("predictions", "batches"):
        sizes = page.execute_script(
            "const t = document.getElementById(arguments[0]); const card = t.closest('.card');"
            "return [t.getBoundingClientRect().right, card.getBoundingClientRect().right,"
            " card.scrollWidth, card.clientWidth, document.documentElement.scrollWidth, window.innerWidth];",
            table)
        table_right, card_right, scroll, client, page_width, viewport = sizes
        assert table_right <= card_right + 0.5 and scroll <= client, (table, width, sizes)
        assert page_width <= viewport, (table, width, sizes)


def test_shadow_and_drift_panels_say_when_there_is_nothing_to_show(page: Any) -> None:
    page.execute_script("render(arguments[0])", _stats())
    assert _text(page, "shadow-state") == "no shadow set" and _text(page, "shadow-version") == "none"
    assert not page.find_element("id", "shadow-figures").is_displayed()
    assert _text(page, "drift-state") == "no live traffic yet"
    assert not page.find_element("id", "drift").is_displayed()
    page.execute_script("render(arguments[0])", _stats(shadow="v2"))
    assert _text(page, "shadow-state").startswith("no live traffic yet")
    assert _text(page, "shadow-version") == "v2"


def test_an_unreadable_stats_store_is_a_state_not_an_error(page: Any) -> None:
    reason = "scorer stats store unavailable: TimeoutError"
    page.execute_script("render(arguments[0])", _stats((None, reason), shadow="v2"))
    assert _text(page, "shadow-state") == reason and _text(page, "drift-state") == reason
    assert page.find_element("css selector", "#shadow-state").get_attribute("data-state") == "unavailable"
    assert not page.find_element("id", "shadow-figures").is_displayed()
    assert not page.find_element("id", "drift").is_displayed()


def _render(page: Any, stats: dict[str, Any]) -> None:
    page.execute_script("render(arguments[0])", stats)


def test_buyers_in_the_top_20_percent_is_one_figure_in_both_cards(page: Any) -> None:
    """The served model's own manifest and gains curve: the metrics card and the lift note agree."""
    from models.registry import Registry

    version = Registry(None).active_version()
    model = model_summary(None, version)
    expected = f"{100 * model['metrics']['top20_recall']:.1f} %"
    _render(page, {**_stats(), "model": model})
    card = page.execute_script(
        "const dt = [...document.querySelectorAll('#model-metrics dt')]"
        ".find((d) => d.textContent === 'buyers in top 20 %'); return dt.nextElementSibling.textContent;")
    assert card == expected
    assert f"top 20 % finds {expected} of buyers" in _text(page, "lift-note")

    # Without the figure in the manifest both cards read it off the curve, between its points.
    curve = [{"share": 0.1, "gains": 0.4, "lift": 4.0}, {"share": 0.25, "gains": 0.7, "lift": 2.8},
             {"share": 1.0, "gains": 1.0, "lift": 1.0}]
    _render(page, {**_stats(), "model": {"version": "v1", "metrics": {"auc": 0.7}, "gains": curve}})
    assert "top 20 % finds 60.0 % of buyers (lift 3.00)" in _text(page, "lift-note")
    assert "60.0 %" in _text(page, "model-metrics")


def test_segment_counts_fit_their_chart(page: Any) -> None:
    _render(page, {**_stats(), "segments": {"high": 12_345, "medium": 67_890, "low": 1_234_567}})
    for label in ("high", "medium", "low"):
        text, right, width = page.execute_script(
            "const t = document.getElementById(arguments[0]); const box = t.getBBox();"
            "return [t.textContent, box.x + box.width, t.ownerSVGElement.viewBox.baseVal.width];",
            f"segment-{label}")
        assert text.endswith(" %)") and right <= width, (label, text, right, width)
    assert _text(page, "segment-low") == "1,234,567 (94 %)"


@pytest.mark.parametrize("width", [1400, 1000, 700])
def test_recent_predictions_show_product_segment_and_time_whole(page: Any, width: int) -> None:
    page.set_window_size(width, 900)
    _render(page, _stats())
    cells = page.execute_script(
        "return [...document.querySelectorAll('#predictions tbody tr:first-child td')]"
        ".map((td) => [td.innerText, td.scrollWidth, td.clientWidth]);")
    for text, scroll, client in cells:
        assert scroll <= client, (width, text, scroll, client)  # nothing cut off, nothing ellipsised
    product, segment, scored = cells[1][0], cells[3][0], cells[5][0]
    assert product.replace("\n", "") == f"{LONGEST_PRODUCT} (0.40)"
    assert segment.replace("\n", " ") == "high (value percentile 92)"  # as the CLI writes it
    assert len(scored) == 8 and scored[2] == scored[5] == ":", scored


def test_tiles_say_what_they_count_and_in_which_unit(page: Any) -> None:
    stats = _stats(p50_ms=3.2, p99_ms=8.0, lag=0, in_flight=700, events_in=5_000)
    stats["sink"] = {**stats["sink"], "in_flight": 300, "events_out": 4_000}
    _render(page, stats)
    tiles = [tile.text for tile in page.find_elements("css selector", ".tile")]
    events_in, stored, lag, latency, dead = tiles
    assert "5,000 since the running scorers started" in events_in
    assert "4,000 since the running sinks started" in stored
    assert "1,000 in flight" in lag  # stored trails events by what the batches hold, though the lag is 0
    assert "3.20ms p50" in latency
    assert "p99 8.00 ms, both per micro-batch" in latency
    assert "ms per batch" in latency.splitlines()[-1]
    assert "since the running scorers and sinks started" in dead
    assert _text(page, "segments-scope") == "all stored predictions of v1"


def test_live_quality_panel_shows_active_beside_shadow_with_the_reliability_curve(page: Any) -> None:
    import numpy as np

    from ingest_api.console.quality import figures
    from store.outcome_join import Joined

    rng = np.random.default_rng(5)
    p = rng.random(400)
    status = np.where(rng.random(400) < p, 1, 0)
    joined = Joined(propensity=p, scored=np.zeros(400), status=status, trial_products=["car", "fire"],
                    trial_scored=np.zeros(2), trial_hits=np.array([True, False]), unmatched=3)
    active = {"version": "v-active", **figures(joined)}
    shadow = {**active, "version": "v-shadow"}
    page.execute_script("render(arguments[0])", _stats())  # the board shows once stats arrive
    page.execute_script("renderQuality(arguments[0])", {**active, "shadow": shadow})
    assert _text(page, "quality-active") == "v-active" and _text(page, "quality-shadow") == "v-shadow"
    table = _text(page, "quality")
    assert "AUC estimated (CBPE)" in table and "50.0 %" in table and "unmatched outcomes 3 3" in table
    assert page.execute_script("return document.querySelectorAll('#reliability polyline').length") == 2
    assert "calibrated" in _text(page, "quality-caveat")


def _trace_cell(page: Any) -> Any:
    return page.find_element("css selector", "#predictions tbody tr:first-child td:last-child")


def test_a_prediction_s_trace_id_links_to_the_configured_viewer_or_is_plain_text(page: Any) -> None:
    _render(page, {**_stats(), "trace_url_template": VIEWER})
    (link,) = _trace_cell(page).find_elements("css selector", "a")
    assert link.text == TRACE_ID and link.get_attribute("href") == VIEWER.format(trace_id=TRACE_ID)
    _render(page, {**_stats(), "trace_url_template": None})
    assert _trace_cell(page).text == TRACE_ID and not _trace_cell(page).find_elements("css selector", "a")
    stats = _stats()
    stats["recent_predictions"] = [{**stats["recent_predictions"][0], "trace_id": None}]
    _render(page, stats)
    assert _trace_cell(page).text == "–"


def test_a_customer_s_last_prediction_shows_its_trace_link(page: Any) -> None:
    """The lookup reads `?history=1` (the page's fetch answers with a document of the route's own model)."""
    from ingest_api.routes.history import DecisionHistory

    decision = {"event_id": "2b0c1f1e-0000-4000-8000-000000000001", "model_version": "v1",
                "recommendations": [{"product_id": "car", "name": "Car", "probability": 0.5}] * 3,
                "propensity": 0.25, "segment": {"label": "high", "score": 91.0},
                "scored_at": "2026-12-01T22:00:00Z", "source": "api", "trace_id": TRACE_ID}
    history = DecisionHistory.model_validate(
        {"customer_id": "c-42", "decisions": [decision], "features_included": False}).model_dump(mode="json")
    _render(page, {**_stats(), "trace_url_template": VIEWER})
    page.execute_script(
        "window.asked = null; apiKey = 'k';"
        "const body = JSON.stringify(arguments[0]);"
        "window.fetch = async (url) => { window.asked = url; return new Response(body,"
        " {status: 200, headers: {'Content-Type': 'application/json'}}); };", history)
    page.find_element("id", "customer-input").send_keys("c-42")
    page.find_element("css selector", "#customer-form button").click()
    wait_until(lambda: page.find_element("id", "customer-figures").is_displayed(), 5, "the lookup")
    assert page.execute_script("return window.asked") == "/api/v1/predictions/c-42?history=1"
    link = page.find_element("css selector", "#customer-trace a")
    assert link.get_attribute("href") == VIEWER.format(trace_id=TRACE_ID)
    assert _text(page, "customer-propensity") == "0.250"
