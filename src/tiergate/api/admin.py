"""Operator endpoints: /health (open), /metrics and /admin/* (master key)."""

from __future__ import annotations

import asyncio
import fnmatch
import time
from pathlib import Path

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from tiergate.api.common import JSON, query_count, read_json_object
from tiergate.api.config_view import masked_config
from tiergate.api.edge import EdgeRoutes
from tiergate.api.gateway import GATEWAY, Gateway
from tiergate.api.metrics_scrape import gather
from tiergate.config.checks import missing_model_files
from tiergate.core.errors import BadRequest, Forbidden, StateUnavailable
from tiergate.guardrails.alerts import emergency_alert
from tiergate.guardrails.budgets import EMERGENCY_FLAG, LATCH


async def health(request: web.Request) -> web.Response:
    """Liveness plus what an operator needs at a glance; reveals no secrets."""
    gw = request.app[GATEWAY]
    breakers = gw.state.breaker_snapshot(now=time.time(), cooldown_s=gw.config.routing.breaker_cooldown_s)
    gone = missing_model_files(gw.config, Path.is_file)  # a model whose file is missing never loads
    down = {
        n: f"missing file: {gone[d.local_model]}" for n, d in gw.catalog.deployments.items() if d.local_model in gone
    }
    down.update(breakers)
    try:
        budgets: list[dict[str, object]] | str = await budget_status(gw)
    except StateUnavailable as exc:  # /health must answer during an outage: it is how operators see it
        budgets = f"unavailable: {exc.message}"
    dependencies = gw.outages.health() if gw.outages is not None else {}
    ledger = gw.ledger.health()
    writer = ledger.get("writer") or {}  # failing or behind: usage is not being recorded (docs/guardrails.md)
    body = {
        "status": "ok"
        if all(d["ok"] for d in dependencies.values()) and not (writer.get("failing") or writer.get("behind"))
        else "degraded",
        "dependencies": dependencies,
        "budget_updates_to_reconcile": gw.budgets.pending_reconcile,
        "uptime_s": round(time.time() - gw.started_at, 1),
        "deployments": {
            name: {"tier": d.tier, "local": d.local, "available": name not in down, "note": down.get(name)}
            for name, d in gw.catalog.deployments.items()
        },
        "unpriced_deployments": gw.catalog.unpriced(),  # cloud, no price known: their calls are recorded at $0
        "ledger_pending": gw.ledger.pending(),
        "ledger": ledger,
        "emergency": await gw.state.flag(EMERGENCY_FLAG),
        "local_models": {r["name"]: r["state"] for r in gw.local.status()} if gw.local is not None else {},
        "budgets": budgets,
        "emergency_budgets": [b["budget"] for b in budgets if b["emergency"]] if isinstance(budgets, list) else [],
    }
    return web.Response(body=orjson.dumps(body), content_type=JSON)


async def budget_status(gw: Gateway) -> list[dict[str, object]]:
    """Each budget's counters in its current window (identity-free scopes only: global, deployment, provider)."""
    from tiergate.core.money import counter_key
    from tiergate.core.windows import window_key

    out = []
    now = time.time()
    for b in gw.config.budgets:
        wk = window_key(b.window, now, gw.config.timezone)
        values = (
            ["*"]
            if b.scope == "global"
            else (
                [
                    d.name
                    for d in gw.catalog.deployments.values()
                    if b.scope == "deployment"
                    and (
                        fnmatch.fnmatchcase(d.name, b.match or "")
                        or d.name in gw.catalog.aliases.get(b.match or "", ())
                    )
                ]
                + [
                    p
                    for p in {d.provider for d in gw.catalog.deployments.values()}
                    if b.scope == "provider" and fnmatch.fnmatchcase(p, b.match or "")
                ]
            )
        )
        for v in values:
            spent, reserved, calls = await gw.state.budget_usage(counter_key(b, wk, v))
            emergency = b.action == "local-only" and (
                (b.limit_usd is not None and spent + reserved >= b.limit_usd)
                or await gw.state.flag(f"{LATCH}{counter_key(b, wk, v)}") is not None
            )
            out.append(
                {
                    "budget": b.id,
                    "value": v,
                    "window": wk,
                    "emergency": emergency,
                    "spent_usd": round(spent, 6),
                    "reserved_usd": round(reserved, 6),
                    "calls": calls,
                    "limit_usd": b.limit_usd,
                    "max_calls": b.max_calls,
                    "action": b.action,
                }
            )
    return out


def _require_master(gw: Gateway, request: web.Request) -> None:
    if not gw.keys.is_admin(gw.keys.identify(request.headers, request.remote).key_name):
        raise Forbidden("admin endpoints need the master key or an admin key ('tiergate keys create --admin')")


async def emergency(request: web.Request) -> web.Response:
    """GET the emergency (local-only) switch, or POST {"on": bool, "reason": str} to flip it."""
    gw = request.app[GATEWAY]
    _require_master(gw, request)
    if request.method == "POST":
        _, body = await read_json_object(request)
        on = body.get("on")
        if not isinstance(on, bool):
            raise BadRequest("'on' must be true or false", param="on")
        reason = str(body.get("reason") or "switched on by an operator") if on else None
        await switch_emergency(gw, reason, source="admin")
    reason = await gw.state.flag(EMERGENCY_FLAG)
    return web.Response(body=orjson.dumps({"on": reason is not None, "reason": reason}), content_type=JSON)


async def switch_emergency(gw: Gateway, reason: str | None, *, source: str) -> None:
    """Emergency (local-only) mode on with ``reason``, or off for None: in the ledger (every replica and the
    CLI follow), in shared state at once, and the same alert as `tiergate emergency`."""
    await asyncio.to_thread(gw.ledger.set_flag, EMERGENCY_FLAG, reason)
    await gw.state.set_flag(EMERGENCY_FLAG, reason)
    gw.alerts.emit(emergency_alert(reason, source=source))


SESSIONS_PAGE, SESSIONS_MAX_PAGE = 100, 1000


async def sessions(request: web.Request) -> web.Response:
    """GET ?limit=N&offset=M: the sessions this gateway holds, most recently seen first, a page at a time."""
    gw = request.app[GATEWAY]
    _require_master(gw, request)
    limit = max(1, query_count(request, "limit", SESSIONS_PAGE, SESSIONS_MAX_PAGE))
    offset = query_count(request, "offset", 0, 10**9)
    total, page = gw.sessions.page(limit=limit, offset=offset)
    body = {
        "sessions": [session_dict(s) for s in page],
        "total": total,
        "offset": offset,
        "limit": limit,
        "next_offset": offset + len(page) if offset + len(page) < total else None,
    }
    return web.Response(body=orjson.dumps(body), content_type=JSON)


def session_dict(s: object) -> dict[str, object]:
    fields = (
        "session",
        "key_name",
        "agent",
        "first_seen",
        "last_seen",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "max_context_ratio",
        "killed_reason",
        "killed_at",
        "implicit",
    )
    return {f: getattr(s, f) for f in fields}


async def kill_sessions(request: web.Request) -> web.Response:
    """POST {"session": ID} | {"agent": A} | {"over_usd": X}, optional "reason" and "include_default".

    An id the ledger never saw: 404. A bulk kill spares implicit (default) sessions unless
    "include_default" is true, and lists them under "spared".
    """
    gw = request.app[GATEWAY]
    _require_master(gw, request)
    _, body = await read_json_object(request)
    sel = {k: body.get(k) for k in ("session", "agent", "over_usd") if body.get(k) is not None}
    if not sel:
        raise BadRequest("give one of 'session', 'agent' or 'over_usd'")
    for name, kind in (("session", str), ("agent", str), ("over_usd", (int, float))):
        if name in sel and (not isinstance(sel[name], kind) or isinstance(sel[name], bool)):
            raise BadRequest(f"'{name}' must be a {'number' if name == 'over_usd' else 'string'}", param=name)
    include = body.get("include_default", False)
    if not isinstance(include, bool):
        raise BadRequest("'include_default' must be true or false", param="include_default")
    reason = str(body.get("reason") or "killed by an operator")
    kills = await gw.sessions.kill(reason, include_implicit=include, **sel)
    return web.Response(body=orjson.dumps({"killed": kills.killed, "spared": kills.spared}), content_type=JSON)


async def revive_session(request: web.Request) -> web.Response:
    """POST /admin/sessions/{session}/revive: lift its kill; it starts afresh. 404 for an unknown id."""
    gw = request.app[GATEWAY]
    _require_master(gw, request)
    sid = request.match_info["session"]
    revived = await gw.sessions.revive(sid)
    return web.Response(body=orjson.dumps({"session": sid, "revived": revived}), content_type=JSON)


async def local_models(request: web.Request) -> web.Response:
    """Each managed local model: state, memory, last used, requests served, load time."""
    gw = request.app[GATEWAY]
    _require_master(gw, request)
    rows = gw.local.status() if gw.local is not None else []
    return web.Response(body=orjson.dumps(rows), content_type=JSON)


async def metrics(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    gw.keys.identify(request.headers, request.remote)
    gw.metrics.ledger_pending.set(gw.ledger.pending())
    gw.metrics.scraped.snapshot = await gather(gw)
    return web.Response(body=gw.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def admin_config(request: web.Request) -> web.Response:
    """The effective config with every secret masked, and the resolved tiers, aliases and tasks.

    Tiers are keyed by their number as a string: JSON keys are strings (an int key was the 500).
    """
    gw = request.app[GATEWAY]
    _require_master(gw, request)
    body = {
        "config": masked_config(gw.config),
        "tiers": {str(tier): names for tier, names in gw.catalog.tiers().items()},
        "aliases": dict(gw.catalog.aliases),
        "tasks": dict(gw.catalog.tasks),
    }
    return web.Response(body=orjson.dumps(body), content_type=JSON)


def add_routes(routes: EdgeRoutes) -> None:
    routes.get("/health", health)
    routes.get("/metrics", metrics)
    routes.get("/admin/config", admin_config)
    routes.add("*", "/admin/emergency", emergency)
    routes.get("/admin/sessions", sessions)
    routes.get("/admin/models", local_models)
    routes.post("/admin/sessions/kill", kill_sessions)
    routes.post("/admin/sessions/{session:.+}/revive", revive_session)
