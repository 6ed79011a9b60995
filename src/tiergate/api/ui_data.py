"""What each dashboard page shows, computed from the ledger and the state the gateway already holds.

Read when a page asks (or once per live tick for every open page), never on the
chat path: budgets from shared state (as /health reads them), sessions from
the session tracker, breakers from shared state, local models from their
manager, alerts from the dispatcher's ring, and the ledger through the bounded
reads of ledger/dashboard.py, run in a thread because SQLite and psycopg block.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tiergate.api.admin import budget_status, session_dict
from tiergate.api.gateway import Gateway
from tiergate.config.checks import missing_model_files
from tiergate.core import breaker as br
from tiergate.core import dashboard as dash
from tiergate.core.errors import StateUnavailable
from tiergate.core.windows import window_bounds
from tiergate.guardrails.budgets import EMERGENCY_FLAG
from tiergate.ledger import dashboard as reads
from tiergate.ledger.report import Report, build_report, day_of

RATE_WINDOW_S = 300.0  # the Overview's tiles: the last five minutes
CHART_SPAN_S = 3600.0  # the charts: the last hour, a bucket a minute
BUCKET_S = 60.0
HOLDING_MEMORY = ("loading", "ready", "busy", "unloading")  # local model states that hold their memory


EVENTS_SPAN_S = 86400.0  # the Local models page's events: the last day


@dataclass(frozen=True, slots=True)
class LedgerFigures:
    today: Report
    month_usd: float
    rows: list[dash.TrafficRow]
    model_events: list[dict[str, Any]]


def _ledger_figures(gw: Gateway, now: float) -> LedgerFigures:
    """Today's report, this month's spend, the last hour's rows, the local models' last events: the
    blocking part, in one thread hop."""
    tz = gw.config.timezone
    today = build_report(gw.ledger, day_of(now, tz), catalog=gw.catalog, tz=tz)
    start, end = window_bounds("month", now, tz)
    month = reads.spend(gw.ledger, since=start, until=end)
    rows = reads.traffic(gw.ledger, since=now - CHART_SPAN_S)
    events = reads.model_events(gw.ledger, since=now - EVENTS_SPAN_S) if gw.local is not None else []
    return LedgerFigures(today, month, rows, events)


async def snapshot(gw: Gateway) -> dict[str, Any]:
    """Every live page's figures at once: what the live stream pushes and the JSON endpoints serve."""
    now = time.time()
    f = await asyncio.to_thread(_ledger_figures, gw, now)
    today, month, rows = f.today, f.month_usd, f.rows
    return {
        "ts": now,
        "overview": await _overview(gw, now, today, month, rows),
        "deployments": _deployments(gw, now, today, rows),
        "models": {**models(gw), "events": f.model_events},
        "alerts": alerts(gw),
        "sessions_total": len(gw.sessions.states),
    }


async def _overview(
    gw: Gateway, now: float, today: Report, month: float, rows: list[dash.TrafficRow]
) -> dict[str, Any]:
    try:
        budgets: list[dict[str, Any]] | str = await budgets_forecast(gw, now)
    except StateUnavailable as exc:
        budgets = f"unavailable: {exc.message}"
    series = dash.series(rows, now=now, span_s=CHART_SPAN_S, bucket_s=BUCKET_S)
    tiers = today.by_tier
    return {
        "today": {
            "day": today.since,
            "cost_usd": today.cost_usd,
            "requests": today.requests,
            "failed_requests": today.failed_requests,
            "gate_failures": today.gate_failures,
            "prompt_tokens": today.prompt_tokens,
            "completion_tokens": today.completion_tokens,
            "local_share": today.local_share,
            "frontier_deployment": today.frontier_deployment,
            "all_frontier_cost_usd": today.all_frontier_cost_usd,
            "saved_vs_frontier_usd": today.saved_vs_frontier_usd,
        },
        "month": {"cost_usd": month},
        "tiers": {
            name: {
                "requests": g.requests,
                "cost_usd": g.cost_usd,
                "request_share": dash.shares({k: v.requests for k, v in tiers.items()})[name],
                "cost_share": dash.shares({k: v.cost_usd for k, v in tiers.items()})[name],
            }
            for name, g in sorted(tiers.items())
        },
        "rates": asdict(dash.rates(rows, now=now, window_s=RATE_WINDOW_S)),
        "overhead": overhead(gw),
        "series": asdict(series),
        "budgets": budgets,
        "emergency": await gw.state.flag(EMERGENCY_FLAG),
        "timezone": gw.config.timezone,
    }


def overhead(gw: Gateway) -> dict[str, Any]:
    """The gateway's own time per answered request (total minus upstream) since it started, from the
    histogram /metrics already keeps: p50 and p95 as the upper bounds of their buckets, and the mean."""
    m = gw.metrics.per_request
    counts, bounds = list(m.overhead.counts), m.overhead_bounds
    n = sum(counts)

    def ms(v: float | None) -> float | None:
        return None if v is None else (v * 1000.0 if v != float("inf") else None)

    return {
        "requests": n,
        "mean_ms": m.overhead.total / n * 1000.0 if n else None,
        "p50_ms_at_most": ms(dash.bucket_quantile(bounds, counts, 50)),
        "p95_ms_at_most": ms(dash.bucket_quantile(bounds, counts, 95)),
    }


async def budgets_forecast(gw: Gateway, now: float) -> list[dict[str, Any]]:
    """Each budget's counters (as /health shows them) and when it runs out at its window's rate so far."""
    windows = {b.id: b.window for b in gw.config.budgets}
    out = []
    for row in await budget_status(gw):
        start, end = window_bounds(windows[str(row["budget"])], now, gw.config.timezone)
        limit = row["limit_usd"]
        f = dash.forecast(
            float(row["spent_usd"]),  # type: ignore[arg-type]
            float(limit) if isinstance(limit, int | float) else None,
            window_start=start,
            window_end=end,
            now=now,
        )
        out.append({**row, "window_start": start, "window_end": end, "forecast": asdict(f)})
    return out


def _deployments(gw: Gateway, now: float, today: Report, rows: list[dash.TrafficRow]) -> list[dict[str, Any]]:
    cooldown = gw.config.routing.breaker_cooldown_s
    breakers = gw.state.breaker_states()
    unavailable = gw.state.breaker_snapshot(now=now, cooldown_s=cooldown)
    gone = missing_model_files(gw.config, Path.is_file)
    traffic = dash.by_deployment(r for r in rows if r.ts >= now - CHART_SPAN_S)
    local = {r["name"]: r["state"] for r in gw.local.status()} if gw.local is not None else {}
    out = []
    for name, d in sorted(gw.catalog.deployments.items(), key=lambda kv: (kv[1].tier, kv[0])):
        state = breakers.get(name)
        t = traffic.get(name, dash.DeploymentTraffic())
        note = unavailable.get(name) or (f"missing file: {gone[d.local_model]}" if d.local_model in gone else None)
        spent = today.by_deployment.get(name)
        out.append(
            {
                "name": name,
                "provider": d.provider,
                "model": d.model,
                "tier": d.tier,
                "local": d.local,
                "available": note is None,
                "note": note,
                "breaker": br.status(state, now=now, cooldown_s=cooldown) if state is not None else "closed",
                "breaker_failures": state.failures if state is not None else 0,
                "last_error": state.last_error if state is not None else "",
                "local_model_state": local.get(d.local_model) if d.local_model else None,
                "hour": asdict(t),
                "today_cost_usd": spent.cost_usd if spent is not None else 0.0,
                "today_requests": spent.requests if spent is not None else 0,
                "priced": d.priced,
            }
        )
    return out


def models(gw: Gateway) -> dict[str, Any]:
    """The local model manager's own status rows, and their memory against the budget."""
    if gw.local is None or gw.config.local_models is None:
        return {"managed": False, "models": [], "budget_mb": None, "used_mb": 0, "pressure": None}
    rows = gw.local.status()
    used = sum(r["memory_mb"] or 0 for r in rows if r["state"] in HOLDING_MEMORY)
    return {
        "managed": True,
        "models": rows,
        "budget_mb": gw.config.local_models.budget_mb,
        "used_mb": used,
        "pressure": gw.local.pressure_reason(),
    }


def alerts(gw: Gateway) -> dict[str, Any]:
    """The alerts this gateway raised since it started, newest first (a bounded ring), and where they go."""
    return {
        "alerts": [asdict(a) for a in reversed(gw.alerts.history)],
        "sinks": [s.type for s in gw.alerts.sinks],
        "kept": gw.alerts.history.maxlen,
    }


def sessions(gw: Gateway, *, sort: str, limit: int, offset: int) -> dict[str, Any]:
    """One page of the sessions the tracker holds, in ``sort`` order, with context use against the alert levels."""
    now = time.time()
    levels = tuple(gw.config.guardian.context_alert_at) or (0.8, 0.95)
    total, page = gw.sessions.page(limit=limit, offset=offset, sort=sort)
    rows = []
    for s in page:
        row = session_dict(s)
        row["age_s"] = now - s.first_seen
        row["context_level"] = dash.context_level(s.max_context_ratio, levels)
        rows.append(row)
    return {
        "sessions": rows,
        "total": total,
        "offset": offset,
        "limit": limit,
        "sort": sort,
        "context_levels": list(levels),
        "next_offset": offset + len(page) if offset + len(page) < total else None,
    }
