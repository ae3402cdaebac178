// StreamScore dashboard: polls /api/v1/dashboard/stats with X-API-Key and draws plain SVG/canvas charts.
"use strict";

const POLL_MS = 1000;
const HISTORY = 90;
const SVG_NS = "http://www.w3.org/2000/svg";
const rates = { in: [], out: [] };
let timer = null;
// The key lives in this page's memory only: never in the URL, history or the browser's session files.
let apiKey = null;
// STREAMSCORE_TRACE_URL_TEMPLATE as the last stats poll gave it (null: trace ids shown as plain text).
let traceUrlTemplate = null;
const TRACE_ID = /^[0-9a-f]{32}$/;

const $ = (id) => document.getElementById(id);
const fmt = (n, digits = 0) => (n === null || n === undefined || Number.isNaN(n)) ? "–"
  : Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
// A latency of 0 means no samples in the window (idle), not an instantaneous pipeline.
const ms = (n) => (n === null || n === undefined || !(n > 0)) ? "—" : fmt(n, 2);
const lag = (n) => (n === null || n === undefined) ? "–" : (n < 0 ? "unknown" : fmt(n));
const pct = (n) => (n === null || n === undefined) ? "–" : `${(100 * n).toFixed(1)} %`;
// 24-hour clock time: 8 characters in every locale, so the column never cuts it off.
const clock = (iso) => iso ? new Date(iso).toLocaleTimeString("en-GB", { hour12: false }) : "–";
// A segment as the CLI shows it (streamscore.demo.segment_text): the number is the value percentile.
const segmentText = (label, score) => `${label} (value percentile ${fmt(score)})`;
const TOP_SHARE = 0.2;

function refuseKeyInUrl() {
  // Old links carried the key in the fragment, which browsers keep in history: it is dropped, unused.
  if (!/key=/.test(location.hash)) return "";
  window.history.replaceState(null, "", location.pathname);
  return "links that carry the key are not used (they stay in the browser's history): paste the key here";
}

function setStatus(state, text) {
  const el = $("status");
  el.dataset.state = state;
  el.textContent = text;
}

function askForKey(message) {
  clearTimeout(timer);
  $("board").hidden = true;
  $("key-form").hidden = false;
  $("key-error").textContent = message || "";
  setStatus("error", "API key needed");
  $("key-input").focus();
}

async function poll() {
  const key = apiKey;
  if (!key) { askForKey(""); return; }
  try {
    const response = await fetch("/api/v1/dashboard/stats", { headers: { "X-API-Key": key }, cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => ({}));
      apiKey = null;
      askForKey((body.error && body.error.message) || `the API answered ${response.status}`);
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    setStatus("live", `live · ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    setStatus("error", `cannot load stats: ${error.message}`);
  }
  timer = setTimeout(poll, POLL_MS);
  if (Date.now() - qualityAt > QUALITY_MS) { qualityAt = Date.now(); pollQuality(key); }
}

// Live quality is a join over stored predictions and outcomes: asked for once a minute, not every second.
const QUALITY_MS = 60000;
let qualityAt = 0;

async function pollQuality(key) {
  try {
    const response = await fetch("/api/v1/models/performance", { headers: { "X-API-Key": key }, cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    renderQuality(await response.json());
  } catch (error) {
    $("quality-caveat").textContent = `cannot load live quality: ${error.message}`;
  }
}

function renderQuality(active) {
  const shadow = active.shadow;
  $("quality-active").textContent = active.version;
  $("quality-shadow").textContent = shadow ? shadow.version : "no shadow";
  const rows = [
    ["labelled · pending", (d) => `${fmt(d.labelled)} · ${fmt(d.pending)}`],
    ["unmatched outcomes", (d) => fmt(d.unmatched)],
    ["AUC realised", (d) => fmt(d.propensity.auc, 3)],
    ["AUC estimated (CBPE)", (d) => d.estimated.auc === null ? "–" : `${fmt(d.estimated.auc, 3)} ± ${fmt(d.estimated.auc_error, 3)}`],
    ["buyers in top 20 % realised", (d) => fmt(d.propensity.top20_buyers, 1)],
    ["buyers in top 20 % estimated", (d) => fmt(d.estimated.top20_buyers, 1)],
    ["lift at 20 %", (d) => fmt(d.propensity.lift, 2)],
    ["ECE", (d) => fmt(d.propensity.ece, 3)],
    ["HR@3", (d) => pct(d.recommender.hr3)],
  ];
  const body = $("quality").tBodies[0];
  body.replaceChildren();
  for (const [name, pick] of rows) {
    const tr = document.createElement("tr");
    for (const text of [name, pick(active), shadow ? pick(shadow) : "–"]) {
      const td = document.createElement("td"); td.textContent = text; tr.append(td);
    }
    body.append(tr);
  }
  $("quality-caveat").textContent = active.estimated.caveat;
  renderReliability([active, shadow].filter(Boolean));
}

function renderReliability(documents) {
  const root = $("reliability");
  root.replaceChildren();
  const L = 34, T = 8, W = 262, H = 160;
  const x = (p) => L + p * W, y = (r) => T + H - r * H;
  root.append(svg("rect", { x: L, y: T, width: W, height: H, fill: "none", stroke: "#263341" }));
  for (const t of [0, 0.5, 1]) {
    root.append(svg("text", { x: x(t) - 8, y: T + H + 14 }, `${t}`));
    root.append(svg("text", { x: 2, y: y(t) + 3 }, `${t}`));
  }
  root.append(svg("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(1), stroke: "#6e7f91", "stroke-dasharray": "4 4" }));
  const colors = ["#4cc2ff", "#d29922"];
  documents.forEach((d, i) => {
    const bins = d.propensity.reliability.filter((b) => b.count > 0);
    const points = bins.map((b) => `${x(b.mean_predicted).toFixed(1)},${y(b.observed).toFixed(1)}`).join(" ");
    if (points) root.append(svg("polyline", { points, fill: "none", stroke: colors[i], "stroke-width": 2 }));
    root.append(svg("text", { x: L + 6, y: T + 14 + 14 * i, fill: colors[i] }, d.version));
  });
}

function render(stats) {
  $("board").hidden = false;
  $("key-form").hidden = true;
  const { scorer, sink } = stats;
  $("rate-in").textContent = fmt(scorer.rate_in);
  $("rate-out").textContent = fmt(sink.rate_out);
  $("events-in").textContent = fmt(scorer.events_in);
  $("events-out").textContent = fmt(sink.events_out);
  $("lag").textContent = lag(scorer.lag < 0 || sink.lag < 0 ? -1 : scorer.lag + sink.lag);
  $("lag-scorer").textContent = lag(scorer.lag);
  $("lag-sink").textContent = lag(sink.lag);
  $("in-flight").textContent = fmt((scorer.in_flight || 0) + (sink.in_flight || 0));
  $("p50").textContent = ms(scorer.p50_ms);
  $("p99").textContent = ms(scorer.p99_ms);
  $("sink-p99").textContent = ms(sink.p99_ms);
  $("dlq").textContent = fmt(scorer.dlq + sink.dlq);
  const mode = scorer.guarantee ? ` (${scorer.guarantee})` : "";
  $("instances").textContent = `${scorer.instances} scorer${mode} · ${sink.instances} sink instance(s)`;
  push(rates.in, scorer.rate_in);
  push(rates.out, sink.rate_out);
  spark($("spark-in"), rates.in, "#4cc2ff");
  spark($("spark-out"), rates.out, "#3fb950");
  renderSegments(stats.segments, stats.model.version);
  renderModel(stats.model);
  traceUrlTemplate = stats.trace_url_template || null;
  renderPredictions(stats.recent_predictions);
  renderBatches(stats.batches);
  renderShadow(stats.shadow);
  renderDrift(stats.drift);
}

function push(series, value) {
  series.push(value || 0);
  if (series.length > HISTORY) series.shift();
}

function spark(canvas, series, color) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const max = Math.max(1, ...series);
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  series.forEach((v, i) => {
    const x = (i / (HISTORY - 1)) * width;
    const y = height - 2 - (v / max) * (height - 4);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function renderSegments(segments, version) {
  const root = $("segments");
  root.replaceChildren();
  $("segments-scope").textContent = `all stored predictions${version ? ` of ${version}` : ""}`;
  const labels = ["high", "medium", "low"];
  const total = labels.reduce((s, l) => s + (segments[l] || 0), 0);
  const colors = { high: "#3fb950", medium: "#d29922", low: "#6e7f91" };
  labels.forEach((label, i) => {
    const n = segments[label] || 0;
    const y = 10 + i * 36;
    // The bar leaves 110 units on its right: room for "1,234,567 (100 %)".
    const w = total ? (n / total) * 150 : 0;
    root.append(svg("text", { x: 0, y: y + 14 }, label));
    root.append(svg("rect", { x: 50, y, width: 150, height: 20, rx: 3, fill: "#263341" }));
    root.append(svg("rect", { x: 50, y, width: w, height: 20, rx: 3, fill: colors[label], "data-segment": label }));
    root.append(svg("text", { x: 206, y: y + 14, id: `segment-${label}` },
      `${fmt(n)}${total ? ` (${Math.round((100 * n) / total)} %)` : ""}`));
  });
}

function renderModel(model) {
  $("model-version").textContent = model.version || "–";
  const m = model.metrics || {};
  const rows = [
    ["AUC (propensity)", fmt(m.auc, 3)], ["precision", pct(m.precision)], ["recall", pct(m.recall)],
    ["F1", fmt(m.f1, 3)], ["accuracy", pct(m.accuracy)], ["buyers in top 20 %", pct(topShare(model).gains)],
    ["HR@3 DQN", pct(m.hr3_dqn)], ["HR@3 popularity", pct(m.hr3_popularity)],
    ["value Spearman", fmt(m.value_spearman, 3)],
  ];
  const dl = $("model-metrics");
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    dl.append(dt, dd);
  }
  renderGains(model.gains || [], topShare(model));
}

// The one "buyers in the top 20 %" figure of both cards: the model's own, else read off the curve.
function topShare(model) {
  const m = model.metrics || {};
  if (m.top20_recall !== undefined && m.top20_recall !== null) {
    return { share: TOP_SHARE, gains: m.top20_recall, lift: m.top20_recall / TOP_SHARE };
  }
  const points = [{ share: 0, gains: 0 }, ...(model.gains || [])];
  const after = points.findIndex((p) => p.share >= TOP_SHARE);
  if (after <= 0) return { share: TOP_SHARE, gains: null, lift: null };
  const a = points[after - 1], b = points[after];
  const gains = a.gains + ((b.gains - a.gains) * (TOP_SHARE - a.share)) / (b.share - a.share);
  return { share: TOP_SHARE, gains, lift: gains / TOP_SHARE };
}

function renderGains(points, top) {
  const root = $("gains-chart");
  root.replaceChildren();
  const L = 34, T = 8, W = 262, H = 160;
  const x = (s) => L + s * W, y = (g) => T + H - g * H;
  root.append(svg("rect", { x: L, y: T, width: W, height: H, fill: "none", stroke: "#263341" }));
  for (const t of [0, 0.5, 1]) {
    root.append(svg("text", { x: x(t) - 10, y: T + H + 14 }, `${t * 100}%`));
    root.append(svg("text", { x: 2, y: y(t) + 3 }, `${t * 100}%`));
  }
  root.append(svg("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(1), stroke: "#6e7f91", "stroke-dasharray": "4 4" }));
  if (!points.length) {
    root.append(svg("text", { x: L + 60, y: T + H / 2 }, "no validation data for this version"));
    $("lift-note").textContent = "";
    return;
  }
  const path = [[0, 0], ...points.map((p) => [p.share, p.gains])]
    .map(([s, g]) => `${x(s).toFixed(1)},${y(g).toFixed(1)}`).join(" ");
  root.append(svg("polyline", { points: path, fill: "none", stroke: "#4cc2ff", "stroke-width": 2, id: "gains-line" }));
  $("lift-note").textContent =
    `Contacting the top ${Math.round(top.share * 100)} % finds ${pct(top.gains)} of buyers ` +
    `(lift ${fmt(top.lift, 2)}); dashed line = random.`;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  if (text instanceof Node) td.append(text); else { td.textContent = text; td.title = text; }
  tr.append(td);
}

function renderPredictions(predictions) {
  const body = $("predictions").querySelector("tbody");
  body.replaceChildren();
  for (const p of predictions) {
    const tr = document.createElement("tr");
    cell(tr, p.customer_id);
    cell(tr, p.top && p.top.product_id ? `${p.top.product_id} (${fmt(p.top.probability, 2)})` : "–");
    cell(tr, fmt(p.propensity, 3), "num");
    const seg = document.createElement("span");
    seg.className = `seg ${p.segment}`;
    seg.textContent = segmentText(p.segment, p.segment_score);
    cell(tr, seg);
    cell(tr, p.source);
    cell(tr, clock(p.scored_at), "time");
    cell(tr, traceLink(p.trace_id));
    body.append(tr);
  }
}

// A trace id as a link into the trace viewer (the operator's template), or as text; "–" when not traced.
function traceLink(traceId) {
  if (!traceId || !TRACE_ID.test(traceId)) return "–";
  const el = document.createElement(traceUrlTemplate ? "a" : "span");
  el.className = "trace";
  el.textContent = traceId;
  el.title = traceId;
  if (traceUrlTemplate) {
    el.href = traceUrlTemplate.split("{trace_id}").join(traceId);
    el.target = "_blank";
    el.rel = "noopener noreferrer";
  }
  return el;
}

async function lookUpCustomer(customerId) {
  const state = $("customer-state");
  $("customer-figures").hidden = true;
  showState(state, "idle", "looking up…");
  const url = `/api/v1/predictions/${encodeURIComponent(customerId)}?history=1`;
  const response = await fetch(url, { headers: { "X-API-Key": apiKey }, cache: "no-store" }).catch(() => null);
  if (!response || !response.ok) {
    const body = response ? await response.json().catch(() => ({})) : {};
    showState(state, "unavailable", (body.error && body.error.message) || "the lookup failed");
    return;
  }
  const last = (await response.json()).decisions[0];
  showState(state, "live", `${customerId}: event ${last.event_id}`);
  $("customer-scored").textContent = last.scored_at;
  $("customer-model").textContent = last.model_version;
  $("customer-propensity").textContent = fmt(last.propensity, 3);
  $("customer-segment").textContent = segmentText(last.segment.label, last.segment.score);
  const trace = traceLink(last.trace_id);
  $("customer-trace").replaceChildren(trace === "–" ? "not sampled (no trace stored)" : trace);
  $("customer-figures").hidden = false;
}

function renderBatches(batches) {
  const body = $("batches").querySelector("tbody");
  body.replaceChildren();
  for (const b of batches) {
    const tr = document.createElement("tr");
    cell(tr, b.task_id.slice(0, 8));
    cell(tr, b.status);
    const wrap = document.createElement("span");
    const bar = document.createElement("span");
    bar.className = `bar ${b.status}`;
    const fill = document.createElement("span");
    fill.style.width = `${Math.min(100, Math.round(100 * b.progress))}%`;
    bar.append(fill);
    wrap.append(bar, document.createTextNode(`${Math.round(100 * b.progress)}%`));
    cell(tr, wrap);
    cell(tr, `${fmt(b.rows_scored)}/${fmt(b.rows_valid)}${b.rows_invalid ? ` (+${fmt(b.rows_invalid)} invalid)` : ""}`, "num");
    cell(tr, clock(b.created_at), "time");
    body.append(tr);
  }
}

function showState(el, state, text) {
  el.dataset.state = state;
  el.textContent = text;
  el.hidden = !text;
}

const SHADOW_STATES = {
  no_shadow: "no shadow set",
  no_live_traffic: "no live traffic yet: no scorer has scored with the shadow",
};

function renderShadow(shadow) {
  const figures = $("shadow-figures");
  if (!shadow) { showState($("shadow-state"), "idle", "no shadow figures from this API"); figures.hidden = true; return; }
  $("shadow-version").textContent = shadow.shadow || "none";
  $("shadow-active").textContent = shadow.active || "–";
  const live = shadow.state === "live";
  figures.hidden = !live;
  showState($("shadow-state"), shadow.state,
    live ? "" : shadow.state === "unavailable" ? (shadow.reason || "scorer stats unavailable")
      : (SHADOW_STATES[shadow.state] || shadow.state));
  if (!live) return;
  $("shadow-top3").textContent = pct(shadow.top3_agreement);
  $("shadow-spearman").textContent = fmt(shadow.propensity_spearman, 3);
  $("shadow-segments").textContent = pct(shadow.segment_agreement);
  $("shadow-latency").textContent = fmt(shadow.added_latency_ms, 2);
  $("shadow-active-ms").textContent = fmt(shadow.active_inference_ms, 2);
  $("shadow-rows").textContent = fmt(shadow.rows);
}

const DRIFT_ROWS = 10;
const DRIFT_STATES = {
  no_live_traffic: "no live traffic yet",
  warming_up: "warming up: too few live rows for a PSI yet",
};

function renderDrift(drift) {
  const table = $("drift");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  if (!drift) { showState($("drift-state"), "idle", "no drift figures from this API"); table.hidden = true; return; }
  $("drift-threshold").textContent = fmt(drift.threshold, 2);
  const live = drift.state === "live";
  table.hidden = !live;
  const flagged = drift.flagged.length;
  showState($("drift-state"), live ? (flagged ? "flagged" : "live") : drift.state,
    live ? `${flagged ? `${flagged} feature(s) drifted` : "no feature drifted"} · ${fmt(drift.window_rows)} live rows`
      : drift.state === "unavailable" ? (drift.reason || "scorer stats unavailable")
        : (DRIFT_STATES[drift.state] || drift.state));
  if (!live) return;
  const top = drift.features.filter((f) => f.psi !== null).slice(0, Math.max(DRIFT_ROWS, flagged));
  const scale = Math.max(2 * drift.threshold, ...top.map((f) => f.psi));
  for (const f of top) {
    const tr = document.createElement("tr");
    tr.dataset.feature = f.feature;
    if (f.flagged) tr.className = "flagged";
    cell(tr, f.feature);
    cell(tr, fmt(f.psi, 3), "num psi");
    const bar = document.createElement("span");
    bar.className = `bar psi${f.flagged ? " flagged" : ""}`;
    const fill = document.createElement("span");
    fill.style.width = `${Math.min(100, Math.round((100 * f.psi) / scale))}%`;
    bar.append(fill);
    cell(tr, bar);
    const badge = document.createElement("span");
    if (f.flagged) { badge.className = "badge"; badge.textContent = "drifted"; }
    cell(tr, badge);
    body.append(tr);
  }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = $("key-input").value.trim();
  $("key-input").value = "";
  poll();
});

$("customer-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const customerId = $("customer-input").value.trim();
  if (customerId && apiKey) lookUpCustomer(customerId);
});

askForKey(refuseKeyInUrl());
