"""The dashboard's ledger reads: every one bounded by a time window and a LIMIT, and meant for a thread.

Nothing here runs per chat request: the dashboard reads what the writer has
already stored, when a signed-in operator asks (api/ui_data.py) or once per
live snapshot shared by every open page (api/ui_live.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tiergate.core.dashboard import TrafficRow
from tiergate.ledger.base import Ledger

TRAFFIC_LIMIT = 50_000  # rows of the last hour read for rates and charts; past it the oldest are left out
REQUESTS_MAX = 500  # the Requests page's largest page
ATTEMPTS_MAX = 50  # failed attempts shown with one request's explanation
MODEL_EVENTS_MAX = 20  # the Local models page's recent loads, unloads, swaps and crashes
BILLED = "(kind = 'request' OR (kind = 'attempt' AND reason = 'gate failed'))"  # what the report bills


def traffic(ledger: Ledger, *, since: float, limit: int = TRAFFIC_LIMIT) -> list[TrafficRow]:
    """Requests and failed attempts since ``since``, newest first, at most ``limit`` (the (kind, ts) index)."""
    rows = ledger.query(
        "SELECT ts, kind, deployment, tier, cost_usd, latency_ms, status, reason FROM usage "
        "WHERE kind IN ('request', 'attempt') AND ts >= ? ORDER BY ts DESC LIMIT ?",
        (since, limit),
    )
    return [
        TrafficRow(
            r["ts"],
            r["kind"],
            r["deployment"],
            r["tier"],
            r["cost_usd"] or 0.0,
            r["latency_ms"] or 0.0,
            r["status"],
            r["reason"] or "",
        )
        for r in rows
    ]


def spend(ledger: Ledger, *, since: float, until: float) -> float:
    """What was billed in [since, until): every request that reached a deployment and every gated attempt,
    as ``tiergate report`` counts it; one aggregate, no rows carried over."""
    rows = ledger.query(
        f"SELECT COALESCE(SUM(cost_usd), 0) AS spent FROM usage WHERE {BILLED} AND ts >= ? AND ts < ?",
        (since, until),
    )
    return float(rows[0]["spent"]) if rows else 0.0


def model_events(ledger: Ledger, *, since: float, limit: int = MODEL_EVENTS_MAX) -> list[dict[str, Any]]:
    """The local model manager's latest events (load, unload, swap, crash) since ``since``, newest first."""
    rows = ledger.query(
        "SELECT ts, model, event, details FROM local_model_events WHERE ts >= ? ORDER BY ts DESC LIMIT ?",
        (since, limit),
    )
    return [{**_plain(r), "details": _extra(r["details"])} for r in rows]


@dataclass(frozen=True, slots=True)
class RequestFilter:
    """The Requests page's filters; None means any. ``status`` is "ok" (< 400), "error" (>= 400) or a code."""

    agent: str | None = None
    task: str | None = None
    session: str | None = None
    status: str | None = None
    deployment: str | None = None

    def where(self) -> tuple[str, tuple[Any, ...]]:
        sql, params = ["kind = 'request'"], []
        for column in ("agent", "task", "session", "deployment"):
            value = getattr(self, column)
            if value is not None:
                sql.append(f"{column} = ?")
                params.append(value)
        if self.status == "ok":
            sql.append("status < 400")
        elif self.status == "error":
            sql.append("status >= 400")
        elif self.status is not None:
            sql.append("status = ?")
            params.append(int(self.status))
        return " AND ".join(sql), tuple(params)


REQUEST_COLUMNS = (
    "ts, request_id, key_name, agent, session, task, requested_model, deployment, provider, tier, local, "
    "prompt_tokens, completion_tokens, usage_estimated, cost_usd, latency_ms, ttft_ms, status, stream, fallbacks, "
    "reason, error, protocol"
)


def recent_requests(
    ledger: Ledger, flt: RequestFilter, *, limit: int, before: float | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` requests matching ``flt`` (older than ``before`` when given, for the next page)."""
    where, params = flt.where()
    if before is not None:
        where += " AND ts < ?"
        params = (*params, before)
    rows = ledger.query(
        f"SELECT {REQUEST_COLUMNS} FROM usage WHERE {where} ORDER BY ts DESC LIMIT ?",
        (*params, min(limit, REQUESTS_MAX)),
    )
    return [_plain(r) for r in rows]


def explanation(ledger: Ledger, request_id: str) -> dict[str, Any] | None:
    """One request's row and its failed attempts (retries, fallbacks, gate failures) in order; None if unknown."""
    rows = ledger.query(
        f"SELECT {REQUEST_COLUMNS}, kind, extra FROM usage WHERE request_id = ? ORDER BY ts LIMIT ?",
        (request_id, ATTEMPTS_MAX + 1),
    )
    found = [_plain(r) for r in rows]
    request = next((r for r in found if r["kind"] == "request"), None)
    if request is None:
        return None
    attempts = [r for r in found if r["kind"] == "attempt"]
    for r in (request, *attempts):
        r["extra"] = _extra(r.get("extra"))
    return {"request": request, "attempts": attempts}


def _extra(text: object) -> dict[str, Any]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _plain(row: Any) -> dict[str, Any]:
    """A ``sqlite3.Row`` or psycopg dict row as a plain dict."""
    return dict(row) if isinstance(row, dict) else {k: row[k] for k in row.keys()}
