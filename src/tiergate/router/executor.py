"""Carry out a RoutePlan: retries, breakers, fallback, escalation, streaming failover.

For each candidate in order: ask the breaker, call the adapter, and on a
retryable failure retry the same deployment with backoff (honouring
Retry-After up to ``max_retry_after_s``) while the request's deadline
allows; then move on. A refused connection is definitive: no retry, the
breaker opens at once. A stream fails over until its first event is in
hand, because nothing has reached the client before that. Every failed
attempt and every finished request becomes a ledger record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from tiergate.adapters.base import UpstreamReply, UpstreamStream
from tiergate.config.schema import RoutingConfig
from tiergate.core.catalog import Catalog, Deployment
from tiergate.core.errors import (
    AllCandidatesFailed,
    AttemptError,
    BudgetExceeded,
    ModelNotReady,
    NoCandidate,
    UpstreamRejected,
)
from tiergate.core.money import BudgetLine, conservative_tokens, reserved_output
from tiergate.core.types import (
    NO_HINTS,
    Candidate,
    ClientHints,
    Identity,
    RequestFeatures,
    RoutePlan,
    Usage,
    UsageRecord,
)
from tiergate.guardrails.budgets import BudgetGuard, Constraints
from tiergate.local.manager import LocalModelManager
from tiergate.observability.metrics import Metrics
from tiergate.router.policy import Planner, WorldSnapshot, decide
from tiergate.state.base import SharedState

log = logging.getLogger("tiergate.executor")
WAITABLE = ("stopped", "queued", "loading")  # local model states a request may wait out (local_models.load_wait_s)


class Adapter(Protocol):
    async def complete(self, d: Deployment, body: dict[str, Any], *, timeout_s: float,
                       hints: ClientHints = NO_HINTS) -> UpstreamReply: ...

    async def stream(self, d: Deployment, body: dict[str, Any], *, timeout_s: float,
                     hints: ClientHints = NO_HINTS) -> UpstreamStream: ...


class LedgerSink(Protocol):
    def record(self, rec: UsageRecord) -> None: ...




@dataclass(slots=True)
class CallContext:
    request_id: str
    identity: Identity
    requested_model: str
    protocol: str
    stream: bool
    started: float  # perf_counter at arrival
    wall_start: float
    deadline: float  # perf_counter
    hints: ClientHints = NO_HINTS
    features: RequestFeatures | None = None
    reserved: list[BudgetLine] = field(default_factory=list)  # budget lines held by the winning attempt
    session: Any = None  # the guardian's SessionState for this request
    budget_refusals: list[tuple[Any, str, Deployment]] = field(default_factory=list)  # (budget, why, skipped)
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # run when the request is settled
    plan: RoutePlan | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    upstream_ms: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Outcome:
    deployment: Deployment
    candidate: Candidate
    fallbacks: int
    reason: str
    reply: UpstreamReply | None = None
    stream: UpstreamStream | None = None


def summarize_failures(failures: list[tuple[str, str]]) -> str:
    """'a failed 3x (500 boom), b failed (refused)': one phrase per deployment, in order."""
    by_name: dict[str, list[str]] = {}
    for name, err in failures:
        by_name.setdefault(name, []).append(err)
    parts = []
    for name, errs in by_name.items():
        times = f" {len(errs)}x" if len(errs) > 1 else ""
        parts.append(f"{name} failed{times} ({errs[-1][:80]})")
    return ", ".join(parts)


class Executor:
    def __init__(
        self,
        *,
        catalog: Catalog,
        routing: RoutingConfig,
        state: SharedState,
        ledger: LedgerSink,
        metrics: Metrics,
        adapters: Mapping[tuple[str, str], Adapter],
        budgets: BudgetGuard | None = None,
        local: LocalModelManager | None = None,
        context_reroute_at: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.budgets = budgets
        self.local = local
        self.context_reroute_at = context_reroute_at
        self.catalog = catalog
        self.routing = routing
        self.state = state
        self.ledger = ledger
        self.metrics = metrics
        self.adapters = adapters
        self.clock = clock
        self.planner = Planner(catalog)
        self._budgeted = budgets is not None and bool(budgets.budgets)  # else no reservation to make per attempt
        self._shown_open: set[str] = set()  # deployments whose tiergate_breaker_open gauge reads 1
        for name in catalog.deployments:  # every deployment is on the dashboard from the start, at 0
            metrics.child(metrics.breaker_open, name).set(0)
        self._reachable = {client: frozenset(api for (c, api) in adapters if c == client) for (client, _) in adapters}

    def snapshot(self, protocol: str, constraints: Constraints | None = None) -> WorldSnapshot:
        unavailable = self.state.breaker_snapshot(now=self.clock(), cooldown_s=self.routing.breaker_cooldown_s)
        reachable = self._reachable.get(protocol, frozenset())
        c = constraints or Constraints()
        local_down = self._local_unavailable()
        if local_down or c.blocked:
            unavailable = {**unavailable, **local_down, **c.blocked}
        return WorldSnapshot(
            unavailable=unavailable, reachable_apis=reachable, local_only_reason=c.local_only,
            tier_cap=c.tier_cap, tier_cap_reason=c.tier_cap_reason, context_reroute_at=self.context_reroute_at,
        )

    def _local_unavailable(self) -> dict[str, str]:
        if self.local is None:
            return {}
        down = self.local.unavailable()
        if self.local.cfg.load_wait_s > 0:
            # requests may wait for a load (acquire waits up to load_wait_s): keep those models in the plan
            down = {m: why for m, why in down.items() if not why.startswith(WAITABLE)}
        return {d.name: f"{d.local_model} {down[d.local_model]}" for d in self.catalog.deployments.values()
                if d.local_model is not None and d.local_model in down}

    def plan(self, features: RequestFeatures, protocol: str, constraints: Constraints | None = None) -> RoutePlan:
        world = self.snapshot(protocol, constraints)
        try:
            plan = self.planner.decide(features, world)
        except NoCandidate:
            self._load_on_demand(features, world, None)
            raise
        self._load_on_demand(features, world, plan)
        return plan

    def _load_on_demand(self, features: RequestFeatures, world: WorldSnapshot, plan: RoutePlan | None) -> None:
        """A managed local model this request would have preferred starts loading (the request goes on now)."""
        if self.local is None:
            return
        local_down = self._local_unavailable()
        if not local_down:
            return
        ideal = decide(features, self.catalog,
                       replace(world, unavailable={k: v for k, v in world.unavailable.items() if k not in local_down}))
        chosen = plan.candidates[0].deployment if plan and plan.candidates else None
        for c in ideal.candidates:
            if c.deployment == chosen:
                return
            d = self.catalog.deployments[c.deployment]
            if d.local_model is not None and c.deployment in local_down:
                self.local.request_load(d.local_model)
                return

    async def _reserve(self, ctx: CallContext, d: Deployment, body: dict[str, Any]) -> dict[str, Any] | None:
        """Hold the worst-case cost against every budget; None when a budget says skip this candidate."""
        if self.budgets is None or ctx.features is None:  # run() calls this only when budgets are configured
            return body
        f = ctx.features
        lines = self.budgets.lines_for(ctx.identity, d, f.prompt_tokens_est, f.max_tokens)
        why, refusing = await self.budgets.reserve(lines)
        if why is not None:
            if refusing is not None and refusing.budget.action == "reject":
                raise BudgetExceeded(why)
            ctx.notes.append(f"skipped {d.name}: {why}")
            ctx.budget_refusals.append((refusing, why, d))
            return None
        ctx.reserved = lines
        if f.max_tokens is None and any(ln.limit_usd and ln.amount_usd > 0 for ln in lines):
            # the reservation assumed this many output tokens: make the upstream honour it
            body = {**body, "max_tokens": reserved_output(d, None, conservative_tokens(f.prompt_tokens_est))}
        return body

    async def _release(self, ctx: CallContext) -> None:
        if self.budgets is not None and ctx.reserved:
            await self.budgets.release(ctx.reserved)
            ctx.reserved = []

    async def run(self, ctx: CallContext, plan: RoutePlan, body: dict[str, Any]) -> Outcome:
        r = self.routing
        ctx.plan = plan
        for candidate in plan.candidates:
            d = self.catalog.deployments[candidate.deployment]
            if not await self.state.breaker_admit(d.name, now=self.clock(), cooldown_s=r.breaker_cooldown_s):
                ctx.failures.append((d.name, "breaker open"))
                continue
            adapter = self.adapters[(ctx.protocol, d.api)]
            attempt_body = await self._reserve(ctx, d, body) if self._budgeted else body
            if attempt_body is None:
                continue
            try:
                if d.local_model is not None and self.local is not None:
                    outcome = await self._managed_attempts(ctx, d, candidate, adapter, attempt_body)
                else:
                    outcome = await self._attempts(ctx, d, candidate, adapter, attempt_body)
            except BaseException:
                await self._release(ctx)
                raise
            if outcome is not None:
                return outcome
            await self._release(ctx)
        detail = "; ".join(f"{n}: {e}" for n, e in ctx.failures) or "no candidate could be tried"
        if ctx.notes and not ctx.failures:
            detail = "; ".join(ctx.notes)
        raise AllCandidatesFailed(f"every candidate failed: {detail}", failures=list(ctx.failures))

    async def _managed_attempts(self, ctx: CallContext, d: Deployment, candidate: Candidate, adapter: Adapter,
                                body: dict[str, Any]) -> Outcome | None:
        """Hold the local model (no eviction, counted as in use) for the call, or the whole stream."""
        assert self.local is not None and d.local_model is not None
        hold = self.local.acquire(d.local_model)
        try:
            await hold.__aenter__()
        except ModelNotReady as exc:
            ctx.failures.append((d.name, str(exc)))
            return None
        outcome = None
        try:
            outcome = await self._attempts(ctx, d, candidate, adapter, body)
        finally:
            if outcome is not None and outcome.stream is not None:
                ctx.cleanups.append(lambda: hold.__aexit__(None, None, None))
            else:
                await hold.__aexit__(None, None, None)
        return outcome

    async def _attempts(self, ctx: CallContext, d: Deployment, candidate: Candidate, adapter: Adapter,
                        body: dict[str, Any]) -> Outcome | None:
        """Try one deployment with retries; the outcome, or None to move on to the next candidate."""
        r = self.routing
        for attempt in range(r.num_retries + 1):
            remaining = ctx.deadline - time.perf_counter()
            if remaining <= 0:
                ctx.failures.append((d.name, "request timeout reached"))
                break
            timeout_s = min(d.timeout_s or r.attempt_timeout_s, remaining)
            t0 = time.perf_counter()
            try:
                if ctx.stream:
                    s = await adapter.stream(d, body, timeout_s=timeout_s, hints=ctx.hints)
                    ctx.upstream_ms += s.upstream_ms_to_first
                    ctx.notes += s.notes
                    await self.state.breaker_success(d.name)
                    return self._outcome(ctx, d, candidate, stream=s)
                reply = await adapter.complete(d, body, timeout_s=timeout_s, hints=ctx.hints)
                ctx.upstream_ms += reply.upstream_ms
                ctx.notes += reply.notes
                await self.state.breaker_success(d.name)
                return self._outcome(ctx, d, candidate, reply=reply)
            except AttemptError as err:
                ctx.upstream_ms += (time.perf_counter() - t0) * 1000
                if err.client_fault:
                    same = d.api == ctx.protocol or (d.api == "openai-chat" and ctx.protocol == "openai-embeddings")
                    raise UpstreamRejected(f"{d.name} rejected the request: {err.message}", status=err.status or 400,
                                           deployment=d.name, body=err.body if same else None) from None
                await self._attempt_failed(ctx, d, err, t0)
                delay = self._retry_delay(err, attempt, ctx)
                if delay is None:
                    break
                await asyncio.sleep(delay)
        return None

    def _retry_delay(self, err: AttemptError, attempt: int, ctx: CallContext) -> float | None:
        """Seconds to wait before retrying the same deployment, or None to move on."""
        r = self.routing
        if not err.retryable or attempt >= r.num_retries:
            return None
        delay = r.retry_backoff_s * (2**attempt)
        if err.retry_after is not None:
            if err.retry_after > r.max_retry_after_s:
                return None
            delay = max(delay, err.retry_after)
        if time.perf_counter() + delay >= ctx.deadline:
            return None
        return delay

    async def _attempt_failed(self, ctx: CallContext, d: Deployment, err: AttemptError, t0: float) -> None:
        summary = err.summary()
        ctx.failures.append((d.name, summary))
        self.metrics.attempt_failures.labels(d.name, err.kind).inc()
        state = await self.state.breaker_failure(
            d.name, now=self.clock(), threshold=self.routing.breaker_failures, error=summary,
            definitive=err.kind == "refused",
        )
        if state.opened_at is not None:
            self.metrics.child(self.metrics.breaker_open, d.name).set(1)
            self._shown_open.add(d.name)
        self.ledger.record(
            self._record(ctx, d, kind="attempt", usage=Usage(), status=err.status or 502,
                         latency_ms=(time.perf_counter() - t0) * 1000, ttft_ms=None,
                         reason="attempt failed", error=summary, fallbacks=len(ctx.failures) - 1)
        )

    def _outcome(self, ctx: CallContext, d: Deployment, c: Candidate, *, reply=None, stream=None) -> Outcome:
        if d.name in self._shown_open:  # the gauge changes only when a breaker does, not per request
            self._shown_open.discard(d.name)
            self.metrics.child(self.metrics.breaker_open, d.name).set(0)
        reason = c.reason
        if ctx.plan is not None and ctx.plan.skipped:
            rank = next((i for i, x in enumerate(ctx.plan.candidates) if x.deployment == c.deployment), 0)
            passed = [f"{s.deployment} ({s.reason})" for s in ctx.plan.skipped if s.rank <= rank][:3]
            if passed:
                reason = f"{reason}; skipped {', '.join(passed)}"
        if ctx.failures:
            reason = f"{reason}; after {summarize_failures(ctx.failures)}"
            self.metrics.child(self.metrics.fallbacks, d.name).inc()
        if ctx.notes:
            reason = f"{reason}; {'; '.join(ctx.notes)}"
        return Outcome(d, c, len(ctx.failures), reason, reply=reply, stream=stream)

    async def settle(
        self, ctx: CallContext, outcome: Outcome, *, usage: Usage, status: int, ttft_ms: float | None,
        error: str | None = None,
    ) -> float:
        """Record the finished request and turn its budget reservation into the real cost; returns the cost."""
        d = outcome.deployment
        cost = d.cost(usage.prompt_tokens, usage.completion_tokens)
        if self.budgets is not None and ctx.reserved:
            lines, ctx.reserved = ctx.reserved, []
            await self.budgets.settle(lines, cost)
        total_s = time.perf_counter() - ctx.started
        rec = self._record(ctx, d, kind="request", usage=usage, status=status, latency_ms=total_s * 1000,
                           ttft_ms=ttft_ms, reason=outcome.reason, error=error, fallbacks=outcome.fallbacks, cost=cost)
        self.ledger.record(rec)
        self.metrics.per_request.answered(
            d.name, str(d.tier), str(status), seconds=total_s, tokens_in=usage.prompt_tokens,
            tokens_out=usage.completion_tokens, cost=cost, ttft_s=None if ttft_ms is None else ttft_ms / 1000)
        return cost

    def record_failure(self, ctx: CallContext, *, status: int, error: str, reason: str) -> None:
        """A request that never reached a deployment (no candidate, all failed, rejected)."""
        self.ledger.record(
            self._record(ctx, None, kind="request", usage=Usage(), status=status,
                         latency_ms=(time.perf_counter() - ctx.started) * 1000, ttft_ms=None,
                         reason=reason, error=error, fallbacks=len(ctx.failures))
        )
        self.metrics.per_request.count("none", "", str(status))

    def _record(
        self, ctx: CallContext, d: Deployment | None, *, kind: str, usage: Usage, status: int, latency_ms: float,
        ttft_ms: float | None, reason: str, error: str | None, fallbacks: int, cost: float = 0.0,
    ) -> UsageRecord:
        ident = ctx.identity
        return UsageRecord(
            ts=ctx.wall_start, request_id=ctx.request_id, kind=kind, key_name=ident.key_name,  # type: ignore[arg-type]
            agent=ident.agent, session=ident.session, task=ident.task, requested_model=ctx.requested_model,
            deployment=d.name if d else None, provider=d.provider if d else None, tier=d.tier if d else None,
            local=bool(d and d.local), prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            usage_estimated=usage.estimated, cost_usd=cost, latency_ms=latency_ms, ttft_ms=ttft_ms, status=status,
            stream=ctx.stream, fallbacks=max(0, fallbacks), reason=reason, error=error, protocol=ctx.protocol,
        )
