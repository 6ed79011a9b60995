"""The request service: admit → plan → run → settle, with no HTTP in sight.

A client surface (``api/``) parses its wire format into ``RequestFeatures``
and a body, calls ``RequestPipeline.open`` and renders the ``Answer`` it
gets back in the client's format. Everything between — rate and
concurrency limits, the guardian, the budget hold, planning, running the
plan, re-planning when a budget tightened, recording what happened — is
here, once, for every surface.

A request that ends without an answer is recorded here before its error
propagates; a request that got an answer is recorded by ``Answer.finish``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from tiergate.core.catalog import Deployment
from tiergate.core.errors import (
    AllCandidatesFailed,
    BudgetExceeded,
    NoCandidate,
    TiergateError,
)
from tiergate.core.privacy import PrivacyRules, rule_local_only
from tiergate.core.types import NO_HINTS, ClientHints, Identity, RequestFeatures, Usage
from tiergate.guardrails.budget_hold import BudgetHold
from tiergate.guardrails.budgets import BudgetGuard
from tiergate.guardrails.limits import Admission, LimitGuard
from tiergate.guardrails.sessions import SessionTracker
from tiergate.ledger.base import Ledger
from tiergate.observability.metrics import Metrics
from tiergate.observability.tracing import Tracing
from tiergate.pipeline.answer import Answer
from tiergate.router.context import CallContext, Outcome, usage_record
from tiergate.router.executor import Executor

TASK_PREFIX = "task/"


def _any_rule(rules: PrivacyRules) -> bool:
    return bool(rules.local_only_keys or rules.local_only_agents or rules.local_only_tasks or rules.local_only_models)


def effective_identity(ident: Identity, model: str) -> Identity:
    """A ``task/<type>`` model name sets the request's task, as X-Tiergate-Task would."""
    if model.startswith(TASK_PREFIX):
        return dataclasses.replace(ident, task=model[len(TASK_PREFIX) :].lower())
    return ident


@dataclasses.dataclass(slots=True)
class PipelineRequest:
    """What a surface hands the pipeline: who asks, what routing needs, and the body to forward."""

    request_id: str
    identity: Identity
    features: RequestFeatures
    body: dict[str, Any]
    protocol: str
    started: float  # perf_counter when the request arrived
    hints: ClientHints = NO_HINTS


class RequestPipeline:
    def __init__(
        self,
        *,
        executor: Executor,
        budgets: BudgetGuard | None,
        sessions: SessionTracker,
        limits: LimitGuard | None,
        ledger: Ledger,
        metrics: Metrics,
        request_timeout_s: float,
        privacy: PrivacyRules | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.executor = executor
        self.budgets = budgets
        self.sessions = sessions
        self.limits = limits
        self.ledger = ledger
        self.metrics = metrics
        self.request_timeout_s = request_timeout_s
        self.privacy = privacy if privacy is not None and _any_rule(privacy) else None
        self.tracing = tracing  # None: no tracing work at all on the request path

    def context(self, req: PipelineRequest) -> CallContext:
        f, why = req.features, None
        ident = self.sessions.identify(req.identity)  # a request without a session counts in its implicit one
        if self.privacy is not None and not f.local_only:
            why = rule_local_only(self.privacy, ident, f.model)
            if why is not None:  # config can only make a request stricter
                f = dataclasses.replace(f, local_only=True)
        # in field order (request_id, identity, requested_model, protocol, stream, started, wall_start,
        # deadline, features, hold, hints): a class called with keywords builds a dict of them per request
        ctx = CallContext(
            req.request_id,
            ident,
            f.model,
            req.protocol,
            f.stream,
            req.started,
            time.time(),
            time.perf_counter() + self.request_timeout_s,
            f,
            BudgetHold(self.budgets, ident, f),
            req.hints,
        )
        if why is not None:
            ctx.notes.append(why)
        if self.tracing is not None:
            ctx.trace = self.tracing.begin(req.started)
        return ctx

    async def open(self, req: PipelineRequest) -> Answer:
        """Route the request to the first deployment that answers; the Answer settles itself when finished.

        Raises the TiergateError that ended it otherwise, already recorded in the ledger, with
        nothing left reserved and the concurrency slot freed. Limits, guardian, budgets, plan and
        run are one coroutine: each awaited layer costs every request on every resume.
        """
        ctx = self.context(req)
        f, hold = ctx.features, ctx.hold
        admission: Admission | None = None
        if self.limits is not None:
            try:
                admission = await self.limits.admit(ctx.identity, f.prompt_tokens_est)
            except TiergateError as err:
                self.record_failure(ctx, status=err.status, error=err.message, reason="rate limited")
                raise
        try:
            try:
                ctx.session = await self.sessions.admit(ctx.identity)
                constraints = await hold.check() if hold.guard is not None else hold.constraints
                try:
                    plan = self.executor.plan(f, ctx.protocol, constraints)
                except NoCandidate as exc:
                    if constraints.rejecting_blocks:
                        raise BudgetExceeded(exc.message, retry_after=constraints.blocks_retry_after) from None
                    raise
                if plan.warning is not None:  # an unknown task: the client also gets X-Tiergate-Warning
                    self.metrics.unknown_tasks.inc()
                try:
                    outcome = await self.executor.run(ctx, plan, req.body)
                except AllCandidatesFailed:
                    # a budget refused a reservation mid-flight: take its action (local-only, downgrade), route again
                    if not await hold.tighten():
                        raise
                    outcome = await self.executor.run(ctx, self.executor.plan(f, ctx.protocol, constraints), req.body)
            except TiergateError as err:  # a request that ends without a deployment is still recorded
                self.record_failure(ctx, status=err.status, error=err.message, reason="not routed")
                raise
            except asyncio.CancelledError:
                # the client left, or a graceful stop's drain ran out, before any answer: still one row
                self.record_failure(ctx, status=499, error="cancelled before an answer", reason="not answered")
                raise
            if ctx.session is not None:
                d = outcome.deployment
                self.sessions.observe_context(ctx.session, f.prompt_tokens_est, d.context_window, d.name)
        except BaseException:
            await hold.release()
            if admission is not None:
                assert self.limits is not None
                await self.limits.release(admission, None)
            raise
        return Answer(self, ctx, outcome, admission)

    def record_failure(self, ctx: CallContext, *, status: int, error: str, reason: str) -> None:
        """A request that never reached a deployment (limited, no candidate, all failed, rejected)."""
        self.ledger.record(
            usage_record(
                ctx,
                None,
                kind="request",
                usage=Usage(),
                status=status,
                ttft_ms=None,
                reason=reason,
                error=error,
                fallbacks=len(ctx.failures),
            )
        )
        self.metrics.per_request.count("none", "", str(status))
        if ctx.trace is not None:
            self._traced(ctx, None, Usage(), status, 0.0, error)

    def _traced(
        self, ctx: CallContext, d: Deployment | None, usage: Usage, status: int, cost: float, error: str | None
    ) -> None:
        assert self.tracing is not None and ctx.trace is not None
        self.tracing.finish(
            ctx.trace,
            request_id=ctx.request_id,
            protocol=ctx.protocol,
            requested_model=ctx.requested_model,
            deployment=d,
            usage=usage,
            status=status,
            cost=cost,
            error=error,
        )

    async def settle(
        self, ctx: CallContext, outcome: Outcome, *, usage: Usage, status: int, ttft_ms: float | None, error: str | None
    ) -> float:
        """Record the answered request, turn its reservation into the real cost; returns the cost."""
        d = outcome.deployment
        cost = d.usage_cost(usage)  # cache reads and writes at their own prices
        if ctx.hold.budgeted:  # nothing was reserved otherwise
            await ctx.hold.settle(cost, usage)
        total_s = time.perf_counter() - ctx.started
        self.ledger.record(
            usage_record(
                ctx,
                d,
                kind="request",
                usage=usage,
                status=status,
                ttft_ms=ttft_ms,
                reason=outcome.reason,
                error=error,
                fallbacks=outcome.fallbacks,
                cost=cost,
                latency_ms=total_s * 1000,
            )
        )
        self.metrics.per_request.answered(
            d.name,
            str(d.tier),
            str(status),
            seconds=total_s,
            tokens_in=usage.prompt_tokens,
            tokens_out=usage.completion_tokens,
            cost=cost,
            ttft_s=None if ttft_ms is None else ttft_ms / 1000,
            agent=ctx.identity.agent,
            task=ctx.identity.task,
        )
        if ctx.trace is not None:
            self._traced(ctx, d, usage, status, cost, error)
        if d.rate:
            await self.executor.count_served_tokens(ctx, d, usage)
        while ctx.cleanups:
            await ctx.cleanups.pop()()
        if ctx.session is not None:
            spent, paid = usage, cost
            for u, c in ctx.billed:  # answers that failed a gate: the session paid for them too
                spent, paid = (
                    Usage(spent.prompt_tokens + u.prompt_tokens, spent.completion_tokens + u.completion_tokens),
                    paid + c,
                )
            await self.sessions.settle(ctx.session, spent, paid)
        if self.executor.shadow is not None and status == 200:
            self.executor.shadow.offer(ctx, outcome)  # in the background: the client's answer is not held
        return cost
