"""GET /metrics: the scrape-time series gathered from what the gateway already holds, then rendered.

Budgets and breakers are read as /health reads them; sessions, local models and
queues from the objects that keep them; GPUs through the cached nvidia-smi probe.
Nothing here runs per request.
"""

from __future__ import annotations

import time
from pathlib import Path

from tiergate.api.gateway import Gateway
from tiergate.config.checks import missing_model_files
from tiergate.core.errors import StateUnavailable
from tiergate.observability.scrape import (
    MIB,
    BudgetReading,
    DeploymentReading,
    LocalModelReading,
    ScrapeSnapshot,
)

HOLDS_MEMORY = frozenset({"loading", "ready", "busy", "unloading"})


async def gather(gw: Gateway) -> ScrapeSnapshot:
    from tiergate.api.admin import budget_status  # admin imports this module for its handler

    try:
        rows = await budget_status(gw)
    except StateUnavailable:  # an outage: the budgets are absent from this scrape, the rest is not
        rows = []
    budgets = tuple(
        BudgetReading(
            str(r["budget"]),
            str(r["value"]),
            str(r["window"]),
            float(r["spent_usd"]),  # type: ignore[arg-type]
            float(r["reserved_usd"]),  # type: ignore[arg-type]
            None if r["limit_usd"] is None else float(r["limit_usd"]),  # type: ignore[arg-type]
        )
        for r in rows
    )
    states = gw.sessions.states.values()
    killed = sum(1 for s in states if s.killed_reason is not None)
    local_rows = gw.local.status() if gw.local is not None else []
    local_state = {r["name"]: r["state"] for r in local_rows}
    breakers = gw.state.breaker_snapshot(now=time.time(), cooldown_s=gw.config.routing.breaker_cooldown_s)
    gone = missing_model_files(gw.config, Path.is_file)
    deployments = tuple(
        DeploymentReading(
            name,
            str(d.tier),
            d.provider,
            d.local,
            up=name not in breakers
            and d.local_model not in gone
            and (d.local_model is None or local_state.get(d.local_model) != "failed"),
        )
        for name, d in gw.catalog.deployments.items()
    )
    local_models = tuple(
        LocalModelReading(r["name"], r["state"], int(r["memory_mb"] or 0) * MIB, r["state"] in HOLDS_MEMORY)
        for r in local_rows
    )
    cfg = gw.config.local_models
    queues = {
        "concurrency_limit": gw.limits.queued if gw.limits is not None else 0,
        "local_model": gw.local.waiting if gw.local is not None else 0,
    }
    per_request = gw.metrics.per_request
    totals = {
        name: (per_request.tokens.get((name, "out"), 0), h.total)
        for name, h in dict(per_request.latency).items()
        if (d := gw.catalog.deployments.get(name)) is not None and d.local
    }
    return ScrapeSnapshot(
        budgets=budgets,
        sessions_live=len(gw.sessions.states) - killed,
        sessions_killed=killed,
        deployments=deployments,
        local_models=local_models,
        local_memory_budget_bytes=cfg.budget_mb * MIB if cfg is not None else None,
        queues=queues,
        gpus=tuple(await gw.metrics.gpu.readings()),
        local_tokens_per_second=gw.metrics.scraped.throughput.update(totals),
    )
