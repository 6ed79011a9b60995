/* tiergate dashboard: renders the page named by <body data-page> from /ui/api/*, kept live by /ui/api/live.
   No framework and no build step; every value reaches the DOM as text (never as HTML). */
"use strict";

const PAGE = document.body.dataset.page;
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const main = document.getElementById("main");
const TIER_COLORS = ["#1f9d55", "#2f6fdf", "#d98a00", "#8a4fd8", "#d64545", "#0aa2b8"];
const state = { snapshot: null, charts: {}, sessions: { sort: "last_seen", offset: 0, limit: 50 },
  requests: { filter: {}, selected: null }, updates: 0 };

// ------------------------------------------------------------------ helpers
function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") n.className = v;
    else if (k === "text") n.textContent = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(n.dataset, v);
    else n.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) n.append(kid instanceof Node ? kid : String(kid));
  return n;
}
function usd(v) {
  if (v === null || v === undefined) return "–";
  const a = Math.abs(v);
  return "$" + (a === 0 ? "0.00" : a < 0.001 ? v.toFixed(6) : a < 0.01 ? v.toFixed(5) : a < 10 ? v.toFixed(4) : v.toFixed(2));
}
function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(v < 0.1 && v > 0 ? 1 : 0) + "%"; }
function ms(v) { return v === null || v === undefined ? "–" : v < 1000 ? Math.round(v) + " ms" : (v / 1000).toFixed(2) + " s"; }
function num(v) { return v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"); }
function clock(ts) { return ts ? new Date(ts * 1000).toLocaleTimeString([], { hour12: false }) : "–"; }
function stamp(ts) { return ts ? new Date(ts * 1000).toLocaleString([], { hour12: false }) : "–"; }
function ago(s) {
  if (s === null || s === undefined) return "–";
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}
function bar(share, level, marks) {
  const inner = el("span");
  inner.style.width = Math.max(0, Math.min(1, share || 0)) * 100 + "%";
  const b = el("div", { class: "bar " + (level || "") }, inner);
  for (const m of marks || []) { const i = el("i"); i.style.left = m * 100 + "%"; b.append(i); }
  return b;
}
function badge(text, kind) { return el("span", { class: "badge " + (kind || "") , text }); }
function tile(key, label, value, raw, sub) {
  return el("div", { class: "tile", dataset: { kpi: key, value: raw === null || raw === undefined ? "" : String(raw) } },
    el("div", { class: "label", text: label }), el("div", { class: "value", text: value }),
    sub ? el("div", { class: "sub", text: sub }) : null);
}
function table(headers, rows, opts) {
  const head = el("tr", {}, headers.map((h) => {
    const th = el("th", { class: (h.num ? "num " : "") + (h.sort ? "sortable " : "") + (h.sorted ? "sorted" : ""), text: h.label });
    if (h.sort) th.addEventListener("click", h.sort);
    return th;
  }));
  const body = el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { class: "empty", colspan: headers.length, text: (opts && opts.empty) || "Nothing yet." })));
  return el("div", { class: "table-wrap" }, el("table", { id: opts && opts.id }, el("thead", {}, head), body));
}
function card(title, ...kids) { return el("section", { class: "card" }, title ? el("h2", { text: title }) : null, ...kids); }
async function api(path, body) {
  const init = body === undefined ? { credentials: "same-origin" }
    : { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF }, body: JSON.stringify(body) };
  const r = await fetch(path, init);
  if (r.status === 401) { location.href = "/ui/login"; throw new Error("signed out"); }
  const data = await r.json();
  if (!r.ok) throw new Error((data.error && data.error.message) || ("HTTP " + r.status));
  return data;
}
function fail(err) { main.prepend(el("div", { class: "card error", text: "Could not load: " + err.message })); }
function tierOf(label) { const m = /tier (\d+)/.exec(label); return m ? Number(m[1]) : 5; }

// ------------------------------------------------------------------ charts (uPlot, vendored)
function chart(id, title, t, seriesList, fmt) {
  const host = document.getElementById(id);
  if (!host || typeof uPlot === "undefined") return;
  const names = seriesList.map((s) => s.label).join("|");
  const data = [t, ...seriesList.map((s) => s.values)];
  const existing = state.charts[id];
  if (existing && existing.names === names) { existing.plot.setData(data); return; }
  if (existing) existing.plot.destroy();
  host.textContent = "";
  const opts = {
    title, width: Math.max(320, host.clientWidth), height: 220,
    scales: { x: { time: true } },
    axes: [{}, { values: (u, vals) => vals.map((v) => fmt(v)), size: 84 }],
    // a dot on every minute that has data: a lone busy minute in an hour is a dot, not an invisible line
    series: [{}, ...seriesList.map((s) => ({ label: s.label, stroke: s.color, width: 2, value: (u, v) => fmt(v), spanGaps: s.spanGaps,
      points: { show: true, size: 6, fill: s.color, filter: (u, si) => u.data[si].flatMap((v, i) => (v ? [i] : [])) } }))],
  };
  state.charts[id] = { names, plot: new uPlot(opts, data, host) };
}
window.addEventListener("resize", () => {
  for (const [id, c] of Object.entries(state.charts)) {
    const host = document.getElementById(id);
    if (host) c.plot.setSize({ width: Math.max(320, host.clientWidth), height: 220 });
  }
});

// ------------------------------------------------------------------ Overview
function forecastText(b) {
  const f = b.forecast;
  if (f.status === "no limit") return "no spend limit";
  if (f.status === "exhausted") return "exhausted";
  if (f.status === "idle") return "no spend yet";
  if (f.status === "lasts") return "lasts the window at this rate";
  return "runs out at " + (f.runs_out_at - Date.now() / 1000 > 86400 ? stamp(f.runs_out_at) : clock(f.runs_out_at));
}
function renderOverview(o) {
  const r = o.rates, today = o.today;
  const saved = today.all_frontier_cost_usd > 0 ? pct(today.saved_vs_frontier_usd / today.all_frontier_cost_usd) + " of " + usd(today.all_frontier_cost_usd) : "no frontier priced";
  const on = o.emergency !== null;
  const typed = document.getElementById("emergency-reason");  // a live re-render keeps what was typed
  const reason = el("input", { id: "emergency-reason", placeholder: "reason (optional)", size: 32, value: typed ? typed.value : "" });
  document.getElementById("emergency-pill").hidden = !on;
  const sw = el("button", { id: "emergency-switch", class: on ? "secondary" : "danger", type: "button", text: on ? "Turn emergency mode off" : "Turn emergency mode on",
    onclick: async () => {
      sw.disabled = true;
      try { await api("/ui/api/emergency", { on: !on, reason: reason.value }); await refresh(); } catch (e) { fail(e); } finally { sw.disabled = false; }
    } });
  const budgets = Array.isArray(o.budgets) ? o.budgets : [];
  const budgetRows = budgets.map((b) => {
    const used = b.limit_usd ? b.spent_usd / b.limit_usd : null;
    return el("tr", { dataset: { budget: b.budget, value: b.value } },
      el("td", {}, el("strong", { text: b.budget }), b.value !== "*" ? el("span", { class: "muted", text: " · " + b.value }) : null),
      el("td", { text: b.window }),
      el("td", { class: "num", dataset: { spent: String(b.spent_usd) }, text: usd(b.spent_usd) }),
      el("td", { class: "num", text: b.limit_usd === null ? "–" : usd(b.limit_usd) }),
      el("td", {}, used === null ? el("span", { class: "muted", text: "–" }) : el("div", { class: "bar-cell" }, bar(used, used >= 1 ? "high" : used >= 0.8 ? "warn" : "ok"), el("span", { class: "num", text: pct(used) }))),
      el("td", { class: "num", text: usd(b.forecast.rate_usd_per_hour) + "/h" }),
      el("td", { dataset: { forecast: b.forecast.status } }, badge(forecastText(b), { exhausted: "bad", "runs out": "warn", lasts: "ok" }[b.forecast.status] || "")),
      el("td", {}, b.emergency ? badge("local-only", "bad") : badge(b.action, "")));
  });
  const tierRows = Object.entries(o.tiers).map(([name, t]) => el("tr", { dataset: { tier: name } },
    el("td", { class: "t-" + tierOf(name), text: name }),
    el("td", { class: "num", dataset: { requests: String(t.requests) }, text: num(t.requests) }),
    el("td", {}, el("div", { class: "bar-cell" }, bar(t.request_share), el("span", { class: "num", text: pct(t.request_share) }))),
    el("td", { class: "num", dataset: { cost: String(t.cost_usd) }, text: usd(t.cost_usd) }),
    el("td", {}, el("div", { class: "bar-cell" }, bar(t.cost_share, "warn"), el("span", { class: "num", text: pct(t.cost_share) })))));
  main.replaceChildren(
    el("section", { class: "card emergency" + (on ? " on" : ""), id: "emergency" },
      el("div", { class: "state", dataset: { on: String(on) }, text: on ? "Emergency local-only mode is ON" : "Emergency mode is off" }),
      el("div", { class: "grow muted", text: on ? o.emergency : "Every tier may serve; switch on to keep all traffic on local models." }),
      on ? null : reason, sw),
    el("div", { class: "grid tiles" },
      tile("today_cost", "Spend today", usd(today.cost_usd), today.cost_usd, today.day + " (" + o.timezone + ")"),
      tile("month_cost", "Spend this month", usd(o.month.cost_usd), o.month.cost_usd),
      tile("saved", "Saved vs all-frontier", usd(today.saved_vs_frontier_usd), today.saved_vs_frontier_usd, saved),
      tile("requests_today", "Requests today", num(today.requests), today.requests, pct(today.local_share) + " served locally"),
      tile("rpm", "Requests / min", r.requests_per_minute.toFixed(1), r.requests_per_minute, "last " + r.window_s / 60 + " min"),
      tile("error_rate", "Error rate", pct(r.error_rate), r.error_rate, r.errors + " of " + r.requests + " (5 min)"),
      tile("escalations", "Gate escalations", num(r.gate_escalations), r.gate_escalations, "answers that failed a gate (5 min)"),
      tile("latency", "Latency p50 / p95", ms(r.latency_p50_ms) + " / " + ms(r.latency_p95_ms), r.latency_p50_ms, "answered, 5 min"),
      tile("overhead", "Gateway overhead", o.overhead.mean_ms === null ? "–" : o.overhead.mean_ms.toFixed(2) + " ms", o.overhead.requests,
        o.overhead.requests ? "mean; p95 " + (o.overhead.p95_ms_at_most === null ? "above 100 ms" : "≤ " + o.overhead.p95_ms_at_most + " ms") + " (since start)" : "no request yet")),
    card("Budgets", Array.isArray(o.budgets) ? table([{ label: "Budget" }, { label: "Window" }, { label: "Spent", num: 1 }, { label: "Limit", num: 1 }, { label: "Used" }, { label: "Rate", num: 1 }, { label: "Forecast" }, { label: "Action" }], budgetRows, { id: "budgets", empty: "No budgets configured (budgets: in the config)." }) : el("p", { class: "error", text: o.budgets })),
    el("div", { class: "grid two" },
      card("Per tier today", table([{ label: "Tier" }, { label: "Requests", num: 1 }, { label: "Share" }, { label: "Cost", num: 1 }, { label: "Cost share" }], tierRows, { id: "tiers", empty: "No requests today." })),
      card("Spend per tier, last hour", el("div", { class: "chart", id: "chart-spend" }))),
    el("div", { class: "grid two" },
      card("Requests per tier, last hour", el("div", { class: "chart", id: "chart-requests" })),
      card("Latency, last hour", el("div", { class: "chart", id: "chart-latency" }))));
  drawOverviewCharts(o.series);
}
function drawOverviewCharts(s) {
  state.charts = {};
  const tiers = (m) => Object.keys(m).sort((a, b) => tierOf(a) - tierOf(b));
  chart("chart-spend", "", s.t, tiers(s.cost_by_tier).map((k) => ({ label: k, color: TIER_COLORS[tierOf(k)], values: s.cost_by_tier[k] })), (v) => (v === null ? "–" : usd(v)));
  chart("chart-requests", "", s.t, tiers(s.requests_by_tier).map((k) => ({ label: k, color: TIER_COLORS[tierOf(k)], values: s.requests_by_tier[k] })), (v) => (v === null ? "–" : num(v)));
  chart("chart-latency", "", s.t, [{ label: "p50", color: "#2f6fdf", values: s.latency_p50_ms, spanGaps: true }, { label: "p95", color: "#d64545", values: s.latency_p95_ms, spanGaps: true }], (v) => (v === null ? "–" : ms(v)));
}

// ------------------------------------------------------------------ Sessions
async function loadSessions() {
  const q = state.sessions;
  const data = await api(`/ui/api/sessions?sort=${q.sort}&limit=${q.limit}&offset=${q.offset}`);
  const sortBy = (key) => () => { q.sort = key; q.offset = 0; loadSessions().catch(fail); };
  const [warn, high] = [data.context_levels[0], data.context_levels[data.context_levels.length - 1]];
  const rows = data.sessions.map((s) => {
    const killed = s.killed_reason !== null;
    const act = el("button", { class: "small " + (killed ? "secondary" : "danger"), type: "button", dataset: { action: killed ? "revive" : "kill" }, text: killed ? "Revive" : "Kill",
      onclick: async () => {
        act.disabled = true;
        try { await api(`/ui/api/sessions/${encodeURIComponent(s.session)}/${killed ? "revive" : "kill"}`, {}); await loadSessions(); } catch (e) { fail(e); }
      } });
    return el("tr", { dataset: { session: s.session, killed: String(killed) } },
      el("td", { class: "mono", text: s.session }, s.implicit ? el("span", { class: "muted", text: " (implicit)" }) : null),
      el("td", { text: s.agent || "–" }),
      el("td", { class: "num", text: num(s.requests) }),
      el("td", { class: "num", text: num(s.prompt_tokens + s.completion_tokens) }),
      el("td", { class: "num", dataset: { cost: String(s.cost_usd) }, text: usd(s.cost_usd) }),
      el("td", { class: "num", text: ago(s.age_s) }),
      el("td", { class: "num", text: clock(s.last_seen) }),
      el("td", {}, el("div", { class: "bar-cell" }, bar(s.max_context_ratio, s.context_level === "high" ? "high" : s.context_level === "warn" ? "warn" : "ok", [warn, high]), el("span", { class: "num", text: pct(s.max_context_ratio) }))),
      el("td", {}, killed ? badge("killed", "bad") : badge("live", "ok"), killed ? el("div", { class: "fine", text: s.killed_reason }) : null),
      el("td", {}, act));
  });
  const h = (label, key, isNum) => ({ label, num: isNum, sort: key ? sortBy(key) : null, sorted: key === q.sort });
  const page = Math.floor(q.offset / q.limit) + 1, pages = Math.max(1, Math.ceil(data.total / q.limit));
  main.replaceChildren(
    el("h1", { text: "Sessions" }),
    card(null,
      el("div", { class: "toolbar" }, el("span", { class: "muted", id: "sessions-total", dataset: { total: String(data.total) }, text: `${num(data.total)} sessions held · sorted by ${q.sort.replace("_", " ")}` }), el("span", { class: "grow" }),
        ...["last_seen", "spend", "age", "context"].map((k) => el("button", { class: "small " + (k === q.sort ? "" : "secondary"), type: "button", dataset: { sort: k }, text: { last_seen: "Recent", spend: "Spend", age: "Age", context: "Context" }[k], onclick: sortBy(k) }))),
      table([h("Session"), h("Agent"), h("Requests", null, 1), h("Tokens", null, 1), h("Spend", "spend", 1), h("Age", "age", 1), h("Last seen", "last_seen", 1), h(`Context (${pct(warn)} / ${pct(high)})`, "context"), h("State"), h("")], rows, { id: "sessions", empty: "No live sessions." }),
      el("div", { class: "pager" },
        el("button", { class: "small secondary", type: "button", disabled: q.offset === 0, text: "‹ Previous", onclick: () => { q.offset = Math.max(0, q.offset - q.limit); loadSessions().catch(fail); } }),
        el("span", { class: "muted", text: `page ${page} of ${pages}` }),
        el("button", { class: "small secondary", type: "button", disabled: data.next_offset === null, text: "Next ›", onclick: () => { q.offset = data.next_offset; loadSessions().catch(fail); } }))));
}

// ------------------------------------------------------------------ Deployments
function renderDeployments(list) {
  const rows = list.map((d) => el("tr", { dataset: { deployment: d.name } },
    el("td", {}, el("strong", { text: d.name }), el("div", { class: "fine", text: d.provider + " · " + d.model })),
    el("td", { class: "t-" + d.tier, text: "tier " + d.tier + (d.local ? " · local" : "") }),
    el("td", {}, d.available ? badge("available", "ok") : badge("unavailable", "bad"), d.note ? el("div", { class: "fine", text: d.note }) : null),
    el("td", { dataset: { breaker: d.breaker } }, badge(d.breaker, { closed: "ok", open: "bad", "half-open": "warn" }[d.breaker]), d.breaker_failures ? el("span", { class: "fine", text: " " + d.breaker_failures + " failures" }) : null),
    el("td", { class: "num", dataset: { requests: String(d.hour.requests) }, text: num(d.hour.requests) }),
    el("td", { class: "num", text: pct(d.hour.error_rate) }),
    el("td", { class: "num", text: ms(d.hour.latency_p50_ms) }),
    el("td", { class: "num", text: ms(d.hour.latency_p95_ms) }),
    el("td", { class: "num", dataset: { cost: String(d.today_cost_usd) }, text: usd(d.today_cost_usd) + (d.priced ? "" : " (unpriced)") })));
  main.replaceChildren(el("h1", { text: "Deployments" }),
    card(null, table([{ label: "Deployment" }, { label: "Tier" }, { label: "Health" }, { label: "Breaker" }, { label: "Requests (1 h)", num: 1 }, { label: "Errors (1 h)", num: 1 }, { label: "p50", num: 1 }, { label: "p95", num: 1 }, { label: "Spend today", num: 1 }], rows, { id: "deployments" })));
}

// ------------------------------------------------------------------ Local models
function renderModels(m) {
  const kind = { ready: "ok", busy: "info", loading: "info", queued: "warn", unloading: "warn", stopped: "", failed: "bad" };
  if (!m.managed) {
    main.replaceChildren(el("h1", { text: "Local models" }), card(null, el("p", { class: "empty", text: "No managed local models (local_models: in the config). Local deployments served by engines you run yourself appear under Deployments." })));
    return;
  }
  const rows = m.models.map((r) => el("tr", { dataset: { model: r.name, state: r.state } },
    el("td", {}, el("strong", { text: r.name }), r.default ? badge("default", "info") : null, r.pinned ? badge("pinned", "") : null),
    el("td", {}, badge(r.state, kind[r.state] || ""), r.reason ? el("div", { class: "fine", text: r.reason }) : null),
    el("td", { class: "num", text: r.memory_mb === null ? "–" : num(r.memory_mb) + " MiB" + (r.memory_estimated ? " (est.)" : "") }),
    el("td", { class: "num", dataset: { loads: String(r.loads) }, text: num(r.loads) }),
    el("td", { class: "num", text: num(r.swaps_out) }),
    el("td", { class: "num", text: num(r.crashes) }),
    el("td", { class: "num", text: num(r.requests_served) }),
    el("td", { class: "num", text: r.in_flight + " / " + r.waiting }),
    el("td", { class: "num", text: r.load_time_s === null ? "–" : r.load_time_s.toFixed(1) + " s" }),
    el("td", { class: "num", text: clock(r.last_used) })));
  const share = m.budget_mb ? m.used_mb / m.budget_mb : 0;
  main.replaceChildren(el("h1", { text: "Local models" }),
    el("div", { class: "grid tiles" },
      el("div", { class: "tile", dataset: { kpi: "memory", value: String(m.used_mb) } }, el("div", { class: "label", text: "Memory in use" }), el("div", { class: "value", text: num(m.used_mb) + " MiB" }), el("div", { class: "sub", text: "of a " + num(m.budget_mb) + " MiB budget (" + pct(share) + ")" }), bar(share, share > 0.95 ? "high" : share > 0.8 ? "warn" : "ok")),
      tile("pressure", "GPU pressure", m.pressure ? "busy" : "none", m.pressure || "", m.pressure || "no other GPU work seen")),
    card(null, table([{ label: "Model" }, { label: "State" }, { label: "Memory", num: 1 }, { label: "Loads", num: 1 }, { label: "Swapped out", num: 1 }, { label: "Crashes", num: 1 }, { label: "Served", num: 1 }, { label: "In flight / waiting", num: 1 }, { label: "Load time", num: 1 }, { label: "Last used", num: 1 }], rows, { id: "models" })),
    card("Loads, unloads and swaps (last 24 h)", table([{ label: "When", num: 1 }, { label: "Model" }, { label: "Event" }, { label: "Details" }],
      (m.events || []).map((e) => el("tr", { dataset: { event: e.event } }, el("td", { class: "num", text: stamp(e.ts) }), el("td", { text: e.model }), el("td", {}, badge(e.event, e.event === "crash" || e.event === "crashed" ? "bad" : "info")),
        el("td", { class: "fine", text: Object.entries(e.details).map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join("  ") }))), { id: "model-events", empty: "No loads or swaps in the last day." })));
}

// ------------------------------------------------------------------ Requests
function requestsShell() {
  const f = state.requests.filter;
  const input = (name, ph) => el("input", { name, placeholder: ph, value: f[name] || "", size: 14 });
  const status = el("select", { name: "status" }, ["", "ok", "error"].map((v) => el("option", { value: v, selected: (f.status || "") === v, text: v || "any status" })));
  const form = el("form", { class: "toolbar", id: "request-filter", onsubmit: (e) => {
    e.preventDefault();
    state.requests.filter = Object.fromEntries([...new FormData(form)].filter(([, v]) => v));
    loadRequests().catch(fail);
  } }, input("agent", "agent"), input("task", "task"), input("session", "session"), status, el("button", { type: "submit", text: "Filter" }), el("span", { class: "grow" }), el("span", { class: "muted", id: "requests-count" }));
  main.replaceChildren(el("h1", { text: "Requests" }), card(null, form, el("div", { id: "requests-table" })), el("div", { id: "request-details" }));
}
async function loadRequests() {
  if (!document.getElementById("request-filter")) requestsShell();
  const qs = new URLSearchParams({ ...state.requests.filter, limit: "100" });
  const data = await api("/ui/api/requests?" + qs);
  const rows = data.requests.map((r) => el("tr", { class: "clickable" + (r.request_id === state.requests.selected ? " selected" : ""), dataset: { request: r.request_id }, onclick: () => { state.requests.selected = r.request_id; showRequest(r.request_id).catch(fail); } },
    el("td", { class: "num", text: clock(r.ts) }),
    el("td", { text: r.agent || "–" }), el("td", { text: r.task || "–" }), el("td", { class: "mono", text: r.session || "–" }),
    el("td", { text: r.deployment || "–" }), el("td", { class: "num", text: r.tier === null ? "–" : r.tier }),
    el("td", {}, badge(String(r.status), r.status < 400 ? "ok" : "bad")),
    el("td", { class: "num", text: num(r.prompt_tokens) + " / " + num(r.completion_tokens) }),
    el("td", { class: "num", dataset: { cost: String(r.cost_usd) }, text: usd(r.cost_usd) }),
    el("td", { class: "num", text: ms(r.latency_ms) }),
    el("td", { class: "fine", text: (r.reason || "").length > 70 ? r.reason.slice(0, 70) + "…" : r.reason })));
  const count = document.getElementById("requests-count");
  const older = data.next_before ? el("button", { class: "small secondary", type: "button", id: "requests-older", text: "Older ›", onclick: () => { state.requests.filter = { ...state.requests.filter, before: String(data.next_before) }; loadRequests().catch(fail); } }) : null;
  const newest = state.requests.filter.before ? el("button", { class: "small secondary", type: "button", text: "‹ Newest", onclick: () => { delete state.requests.filter.before; loadRequests().catch(fail); } }) : null;
  count.replaceChildren(`${data.requests.length} ${state.requests.filter.before ? "older" : "most recent"} `, newest || "", " ", older || "");
  document.getElementById("requests-table").replaceChildren(table([{ label: "Time", num: 1 }, { label: "Agent" }, { label: "Task" }, { label: "Session" }, { label: "Deployment" }, { label: "Tier", num: 1 }, { label: "Status" }, { label: "Tokens in / out", num: 1 }, { label: "Cost", num: 1 }, { label: "Latency", num: 1 }, { label: "Reason" }], rows, { id: "requests", empty: "No requests match." }));
}
async function showRequest(id) {
  const d = await api("/ui/api/requests/" + encodeURIComponent(id));
  const r = d.request;
  const kv = (pairs) => el("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v === null || v === undefined ? "–" : String(v) })]));
  const attempts = d.attempts.map((a) => el("tr", {}, el("td", { text: a.deployment || "–" }), el("td", { class: "num", text: a.tier === null ? "–" : a.tier }), el("td", {}, badge(String(a.status), a.status >= 400 ? "bad" : "warn")), el("td", { text: a.reason || "" }), el("td", { class: "fine", text: a.error || "" }), el("td", { class: "num", text: usd(a.cost_usd) })));
  document.getElementById("request-details").replaceChildren(card("Routing explanation · " + r.request_id,
    el("p", { class: "details", id: "request-reason", text: r.reason || "(no reason recorded)" }),
    kv([["requested model", r.requested_model], ["served by", (r.deployment || "–") + (r.provider ? " (" + r.provider + ")" : "")], ["tier", r.tier], ["status", r.status], ["error", r.error], ["fallbacks", r.fallbacks], ["tokens in / out", r.prompt_tokens + " / " + r.completion_tokens + (r.usage_estimated ? " (estimated)" : "")], ["cost", usd(r.cost_usd)], ["latency / first token", ms(r.latency_ms) + " / " + ms(r.ttft_ms)], ["protocol", r.protocol + (r.stream ? ", streamed" : "")], ["agent / task / session", [r.agent, r.task, r.session].map((x) => x || "–").join(" / ")], ["key", r.key_name], ["time", stamp(r.ts)]]),
    d.attempts.length ? el("div", {}, el("h2", { text: "Failed attempts before the answer" }), table([{ label: "Deployment" }, { label: "Tier", num: 1 }, { label: "Status" }, { label: "Reason" }, { label: "Error" }, { label: "Cost", num: 1 }], attempts)) : el("p", { class: "muted", text: "Answered by its first attempt." })));
}

// ------------------------------------------------------------------ Alerts
function renderAlerts(a) {
  const sev = { critical: "bad", warning: "warn", info: "info" };
  const rows = a.alerts.map((x) => el("tr", { dataset: { event: x.event } },
    el("td", { class: "num", text: stamp(x.ts) }), el("td", {}, badge(x.severity, sev[x.severity] || "")), el("td", { text: x.event }), el("td", { text: x.message }),
    el("td", {}, Object.keys(x.deliveries).length ? Object.entries(x.deliveries).map(([sink, st]) => el("div", {}, el("span", { class: "mono", text: sink + ": " }), badge(st.split(":")[0], st === "sent" ? "ok" : st === "sending" ? "info" : "bad"))) : el("span", { class: "muted", text: "logged (no sink configured)" }))));
  main.replaceChildren(el("h1", { text: "Alerts" }),
    card(null, el("p", { class: "muted", text: `Alerts raised since this gateway started (the last ${a.kept}), newest first. Sinks: ${a.sinks.length ? a.sinks.join(", ") : "none (alerts: in the config)"}.` }),
      table([{ label: "When", num: 1 }, { label: "Severity" }, { label: "Event" }, { label: "Message" }, { label: "Sent to" }], rows, { id: "alerts", empty: "No alerts raised." })));
}

// ------------------------------------------------------------------ live updates
function apply(snap) {
  state.snapshot = snap;
  state.updates += 1;
  document.body.dataset.updates = String(state.updates);
  document.body.dataset.snapshotTs = String(snap.ts);
  document.getElementById("emergency-pill").hidden = snap.overview.emergency === null;
  const live = document.getElementById("live");
  live.textContent = "live · " + clock(snap.ts);
  if (PAGE === "overview") renderOverview(snap.overview);
  else if (PAGE === "deployments") renderDeployments(snap.deployments);
  else if (PAGE === "models") renderModels(snap.models);
  else if (PAGE === "alerts") renderAlerts(snap.alerts);
  else if (PAGE === "sessions") loadSessions().catch(fail);
  else if (PAGE === "requests") loadRequests().catch(fail);
}
async function refresh() {
  if (PAGE === "overview") renderOverview(await api("/ui/api/overview"));
  else if (PAGE === "deployments") renderDeployments((await api("/ui/api/deployments")).deployments);
  else if (PAGE === "models") renderModels(await api("/ui/api/models"));
  else if (PAGE === "alerts") renderAlerts(await api("/ui/api/alerts"));
  else if (PAGE === "sessions") await loadSessions();
  else if (PAGE === "requests") await loadRequests();
}
function connect() {
  const live = document.getElementById("live");
  const es = new EventSource("/ui/api/live");
  es.addEventListener("snapshot", (e) => { live.className = "live on"; try { apply(JSON.parse(e.data)); } catch (err) { fail(err); } });
  es.addEventListener("problem", (e) => { live.className = "live off"; live.textContent = "stale: " + JSON.parse(e.data).message; });
  es.onerror = () => { live.className = "live off"; live.textContent = "reconnecting…"; };
}

for (const a of document.querySelectorAll("[data-nav]")) if (a.dataset.nav === PAGE) a.classList.add("active");
document.getElementById("logout").addEventListener("click", async () => { try { await api("/ui/logout", {}); } finally { location.href = "/ui/login"; } });
refresh().catch(fail).finally(connect);
