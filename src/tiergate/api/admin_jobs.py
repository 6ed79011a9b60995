"""Operator endpoints for scheduled jobs (master key): list, history, run now, pause and resume.

A run asked for here is queued in the ledger and claimed by the first
gateway's scheduler to poll (this one or another replica), so it runs once;
pause and resume are ledger flags every replica reads each tick.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import web

from tiergate.api.admin import _require_master
from tiergate.api.common import JSON, query_count
from tiergate.api.edge import EdgeRoutes
from tiergate.api.gateway import GATEWAY, Gateway
from tiergate.config.jobs import JobConfig
from tiergate.config.references import listed
from tiergate.core.errors import NotFound
from tiergate.ledger.job_runs import PAUSE_FLAG, JobRuns, job_overview

HISTORY_MAX = 1000


def _runs(gw: Gateway) -> JobRuns:
    return JobRuns(gw.ledger, owner="admin")


def _job(gw: Gateway, name: str) -> JobConfig:
    for j in gw.config.jobs:
        if j.name == name:
            return j
    raise NotFound(f"no job named {name!r}; configured jobs: {listed(j.name for j in gw.config.jobs)}")


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON)


async def list_jobs(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    _require_master(gw, request)
    rows = await asyncio.to_thread(
        job_overview, gw.config.jobs, _runs(gw), default_tz=gw.config.timezone, now=time.time()
    )
    return _json({"jobs": rows})


async def history(request: web.Request) -> web.Response:
    """GET ?job=NAME&limit=N: run records, newest first."""
    gw = request.app[GATEWAY]
    _require_master(gw, request)
    name = request.query.get("job")
    if name is not None:
        _job(gw, name)
    limit = max(1, query_count(request, "limit", 50, HISTORY_MAX))
    rows = await asyncio.to_thread(_runs(gw).history, name, limit=limit)
    return _json({"runs": rows})


async def run_now(request: web.Request) -> web.Response:
    """POST: queue one run now; 202 with its run id (GET /admin/jobs/runs/{run_id} for the outcome)."""
    gw = request.app[GATEWAY]
    _require_master(gw, request)
    job = _job(gw, request.match_info["name"])
    run_id = await asyncio.to_thread(_runs(gw).request, job.name, now=time.time())
    return _json({"job": job.name, "run_id": run_id, "status": "requested"}, status=202)


async def run_record(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    _require_master(gw, request)
    run_id = request.match_info["run_id"]
    rec = await asyncio.to_thread(_runs(gw).run, run_id)
    if rec is None:
        raise NotFound(f"no job run {run_id!r}")
    return _json(rec)


async def pause(request: web.Request) -> web.Response:
    return await _set_paused(request, True)


async def resume(request: web.Request) -> web.Response:
    return await _set_paused(request, False)


async def _set_paused(request: web.Request, paused: bool) -> web.Response:
    gw = request.app[GATEWAY]
    _require_master(gw, request)
    job = _job(gw, request.match_info["name"])
    await asyncio.to_thread(gw.ledger.set_flag, PAUSE_FLAG + job.name, "1" if paused else None)
    return _json({"job": job.name, "paused": paused})


def add_routes(routes: EdgeRoutes) -> None:
    routes.get("/admin/jobs", list_jobs)
    routes.get("/admin/jobs/history", history)
    routes.get("/admin/jobs/runs/{run_id}", run_record)
    routes.post("/admin/jobs/{name}/run", run_now)
    routes.post("/admin/jobs/{name}/pause", pause)
    routes.post("/admin/jobs/{name}/resume", resume)
