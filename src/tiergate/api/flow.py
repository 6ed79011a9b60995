"""The request flow both client protocols share: plan, execute, answer, settle the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tiergate.api.common import header_value
from tiergate.api.gateway import Gateway
from tiergate.core.errors import (
    AllCandidatesFailed,
    BudgetExceeded,
    NoCandidate,
    TiergateError,
)
from tiergate.core.types import Identity, RequestFeatures, Usage
from tiergate.router.executor import CallContext, Outcome

log = logging.getLogger("tiergate.api")


def new_context(gw: Gateway, request: web.Request, ident: Identity, *, model: str, stream: bool, protocol: str) -> CallContext:
    now = time.perf_counter()
    return CallContext(
        request_id=request["request_id"], identity=ident, requested_model=model, protocol=protocol, stream=stream,
        started=request.get("started", now), wall_start=time.time(), deadline=now + gw.config.routing.request_timeout_s,
    )


def route_headers(ctx: CallContext, outcome: Outcome) -> dict[str, str]:
    d = outcome.deployment
    return {
        "X-Request-ID": ctx.request_id,
        "X-Tiergate-Deployment": d.name,
        "X-Tiergate-Tier": str(d.tier),
        "X-Tiergate-Reason": header_value(outcome.reason),
    }


def effective_identity(ident: Identity, model: str) -> Identity:
    if model.startswith("task/"):
        return dataclasses.replace(ident, task=model[len("task/"):])
    return ident


async def route(gw: Gateway, ctx: CallContext, features: RequestFeatures, body: dict[str, Any]) -> Outcome:
    """Guardian, budgets, plan and execute; a request that ends without a deployment is still recorded."""
    ctx.features = features
    try:
        ctx.session = await gw.sessions.admit(ctx.identity)
        constraints = await gw.budgets.constraints(ctx.identity)
        if constraints.reject:
            raise BudgetExceeded(f"{constraints.reject}; the budget's action is reject")
        try:
            plan = gw.executor.plan(features, ctx.protocol, constraints)
        except NoCandidate as exc:
            if constraints.rejecting_blocks:
                raise BudgetExceeded(exc.message) from None
            raise
        try:
            outcome = await gw.executor.run(ctx, plan, body)
        except AllCandidatesFailed:
            # a budget refused a reservation mid-flight: take its action (local-only, downgrade) and route again
            if not await gw.budgets.tighten(constraints, ctx.budget_refusals):
                raise
            ctx.budget_refusals.clear()
            outcome = await gw.executor.run(ctx, gw.executor.plan(features, ctx.protocol, constraints), body)
    except TiergateError as err:
        gw.executor.record_failure(ctx, status=err.status, error=err.message, reason="not routed")
        raise
    gw.sessions.observe_context(ctx.session, features.prompt_tokens_est, outcome.deployment.context_window,
                                outcome.deployment.name)
    return outcome


async def limited(gw: Gateway, request: web.Request, ctx: CallContext, features: RequestFeatures,
                  body: dict[str, Any], *, error_event: Any = None) -> web.StreamResponse:
    """Route and answer under the rate and concurrency limits (handlers call this only when some are set).

    Admitted before the guardian and budgets; whatever happens next (an answer, an error, a stream the
    client walks away from) releases the concurrency slot and adds the completion tokens, exactly once.
    """
    limits = gw.limits
    assert limits is not None
    try:
        admission = await limits.admit(ctx.identity, features.prompt_tokens_est)
    except TiergateError as err:
        gw.executor.record_failure(ctx, status=err.status, error=err.message, reason="rate limited")
        raise
    outcome: Outcome | None = None
    released = admission is None

    async def release() -> None:
        nonlocal released
        if not released:
            released = True
            await limits.release(admission, usage_of(outcome))  # type: ignore[arg-type]

    try:
        outcome = await route(gw, ctx, features, body)
        if features.stream:
            # freed before the client can see the answer end: its next request must find the slot free
            return await relay_stream(gw, request, ctx, outcome, error_event=error_event, on_complete=release)
        reply = outcome.reply
        assert reply is not None
        return await finish_plain(gw, ctx, outcome, reply.body, reply.usage, reply.content_type)
    finally:
        await release()


def usage_of(outcome: Outcome | None) -> Usage | None:
    """Tokens a routed request used so far (a stream's count grows as it relays); None if never routed."""
    if outcome is None:
        return None
    answered = outcome.stream if outcome.stream is not None else outcome.reply
    return answered.usage if answered is not None else None


async def settle(gw: Gateway, ctx: CallContext, outcome: Outcome, *, usage: Usage, status: int,
                 ttft_ms: float | None, error: str | None = None) -> float:
    cost = await gw.executor.settle(ctx, outcome, usage=usage, status=status, ttft_ms=ttft_ms, error=error)
    while ctx.cleanups:
        await ctx.cleanups.pop()()
    if ctx.session is not None:
        await gw.sessions.settle(ctx.session, usage, cost)
    return cost


async def finish_plain(
    gw: Gateway, ctx: CallContext, outcome: Outcome, body: bytes, usage: Usage, ctype: str
) -> web.Response:
    cost = await settle(gw, ctx, outcome, usage=usage, status=200, ttft_ms=None)
    headers = route_headers(ctx, outcome)
    headers["X-Tiergate-Cost-USD"] = f"{cost:.8f}"
    overhead_ms = max(0.0, (time.perf_counter() - ctx.started) * 1000 - ctx.upstream_ms)
    headers["X-Tiergate-Overhead-Ms"] = f"{overhead_ms:.3f}"
    gw.metrics.per_request.observe_overhead(overhead_ms / 1000)
    headers["Content-Type"] = header_value(ctype)  # a plain header: aiohttp's content_type= would parse it again
    return web.Response(body=body, status=200, headers=headers)


async def relay_stream(
    gw: Gateway, request: web.Request, ctx: CallContext, outcome: Outcome, *, error_event: Any = None,
    on_complete: Callable[[], Awaitable[None]] | None = None,
) -> web.StreamResponse:
    """Forward events as they arrive; settle the ledger exactly once however the stream ends.

    ``on_complete`` runs once the answer is complete and before the client can know it: ahead of
    the event that completes it ([DONE], message_stop; SDKs stop reading there), or at the latest
    before the final bytes. Limits free the request's concurrency slot in it.
    """
    s = outcome.stream
    assert s is not None
    headers = route_headers(ctx, outcome)
    headers["Cache-Control"] = "no-cache"
    status, error = 200, None
    ttft_ms = (time.perf_counter() - ctx.started) * 1000
    overhead_ms = max(0.0, ttft_ms - ctx.upstream_ms)  # gateway time until the first event, known before headers go
    headers["X-Tiergate-Overhead-Ms"] = f"{overhead_ms:.3f}"
    gw.metrics.per_request.observe_overhead(overhead_ms / 1000)
    resp = web.StreamResponse(status=200, headers=headers)
    resp.content_type = "text/event-stream"
    delivered = False  # every event written: a client that hangs up during write_eof got the whole answer
    try:
        await resp.prepare(request)
        if s.first_event:
            if on_complete is not None and s.status.completed:
                await on_complete()
                on_complete = None
            await resp.write(s.first_event)
        async for ev in s.rest:
            if on_complete is not None and s.status.completed:
                await on_complete()
                on_complete = None
            await resp.write(ev)
        if s.status.error is not None:
            status, error = 502, s.status.error
            if error_event is not None:
                await resp.write(error_event(error))
        delivered = True
        if on_complete is not None:
            await on_complete()
        await resp.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        if not delivered:
            status, error = 499, "client closed the connection"
        s.close()
        raise
    except Exception as exc:  # noqa: BLE001 - headers are sent: end the stream in-band, never a second response
        log.exception("stream relay failed (request %s)", ctx.request_id)
        status, error = 500, f"internal error: {type(exc).__name__}"
        s.close()
        with contextlib.suppress(Exception):
            if error_event is not None:
                await resp.write(error_event(error))
            await resp.write_eof()
    finally:
        await settle(gw, ctx, outcome, usage=s.usage, status=status, ttft_ms=ttft_ms, error=error)
    return resp
