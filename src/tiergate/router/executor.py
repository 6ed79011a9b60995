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
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from math import ceil
from typing import TYPE_CHECKING, Any

from tiergate.adapters.base import Adapter, UpstreamReply, UpstreamStream
from tiergate.config.gates import ShadowConfig
from tiergate.config.schema import RoutingConfig
from tiergate.core.catalog import Catalog, Deployment
from tiergate.core.errors import (
    AllCandidatesFailed,
    AttemptError,
    ModelNotReady,
    NoCandidate,
    RateLimited,
    StateUnavailable,
    UpstreamRejected,
)
from tiergate.core.gates import DEFAULT_POLICY, GatePolicy
from tiergate.core.limits import end_tokens, refusal_message
from tiergate.core.types import (
    Candidate,
    RequestFeatures,
    RoutePlan,
    Usage,
)
from tiergate.guardrails.budgets import NO_CONSTRAINTS, Constraints
from tiergate.observability.metrics import Metrics
from tiergate.router.context import (
    CallContext,
    Outcome,
    summarize_failures,
    usage_record,
)
from tiergate.router.gating import Gates, LedgerSink, UnservedAnswers
from tiergate.router.local_placement import load_on_demand, local_unavailable, routed_by_tier
from tiergate.router.policy import Planner, WorldSnapshot
from tiergate.router.shadow import ShadowRunner
from tiergate.state.base import SharedState

if TYPE_CHECKING:  # the manager runs engines (processes, health checks); routing only asks it questions
    from tiergate.local.manager import LocalModelManager

log = logging.getLogger("tiergate.executor")


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
        local: LocalModelManager | None = None,
        context_reroute_at: float | None = None,
        gates: GatePolicy = DEFAULT_POLICY,
        shadow: ShadowConfig | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.local = local
        self.gates = Gates(gates)
        self.context_reroute_at = context_reroute_at
        self.catalog = catalog
        self.routing = routing
        self.state = state
        self.ledger = ledger
        self.metrics = metrics
        self.adapters = adapters
        self.clock = clock
        self.sleep = sleep  # tests record backoff and Retry-After waits instead of sleeping
        self.planner = Planner(catalog)
        self.unserved = UnservedAnswers(ledger, metrics, self.count_served_tokens)
        self.shadow = (
            ShadowRunner(shadow, catalog=catalog, adapters=adapters, ledger=ledger, timeout_s=routing.attempt_timeout_s)
            if shadow is not None
            else None
        )
        self._shown_open: set[str] = set()  # deployments whose tiergate_breaker_open gauge reads 1
        for name in catalog.deployments:  # every deployment is on the dashboard from the start, at 0
            metrics.child(metrics.breaker_open, name).set(0)
        self._reachable = {client: frozenset(api for (c, api) in adapters if c == client) for (client, _) in adapters}
        self._calm: dict[str, WorldSnapshot] = {}  # by protocol: nothing unavailable, blocked or capped

    def snapshot(self, protocol: str, constraints: Constraints | None = None) -> WorldSnapshot:
        unavailable = self.state.breaker_snapshot(now=self.clock(), cooldown_s=self.routing.breaker_cooldown_s)
        reachable = self._reachable.get(protocol, frozenset())
        c = constraints or NO_CONSTRAINTS
        local_down = local_unavailable(self.local, self.catalog)
        if local_down or c.blocked:
            unavailable = {**unavailable, **local_down, **c.blocked}
        elif not unavailable and c.local_only is None and c.tier_cap is None and not c.tier_cap_reason:
            calm = self._calm.get(protocol)  # the usual world: one object per protocol, never mutated
            if calm is None:
                calm = self._calm[protocol] = WorldSnapshot(
                    reachable_apis=reachable, context_reroute_at=self.context_reroute_at
                )
            return calm
        return WorldSnapshot(
            unavailable=unavailable,
            reachable_apis=reachable,
            local_only_reason=c.local_only,
            tier_cap=c.tier_cap,
            tier_cap_reason=c.tier_cap_reason,
            context_reroute_at=self.context_reroute_at,
        )

    def plan(self, features: RequestFeatures, protocol: str, constraints: Constraints | None = None) -> RoutePlan:
        world = self.snapshot(protocol, constraints)
        try:
            plan = self.planner.decide(features, world)
        except NoCandidate:
            load_on_demand(self.local, self.catalog, features, world, None)
            raise
        return load_on_demand(self.local, self.catalog, features, world, plan) or plan

    async def run(self, ctx: CallContext, plan: RoutePlan, body: dict[str, Any]) -> Outcome:
        """The first candidate whose answer passes the gates; every failed candidate's reservation is released.

        An answer that fails a gate is paid for (its budget settled) and kept: the request escalates
        (to the next tier, or the next candidate) while escalations remain, and when no better answer
        comes, the kept one is served rather than an error.
        """
        r = self.routing
        hold = ctx.hold
        ctx.plan = plan
        f = ctx.features
        if ctx.gate is None and self.gates.policy.apply_to != "none":
            routed = routed_by_tier(f.model, self.catalog)
            ctx.gate = self.gates.for_request(ctx.protocol, body, task=ctx.identity.task, model=f.model, routed=routed)
        rate_waits: list[float] = []  # candidates skipped at their own rpm/tpm: how long until each has room
        kept: Outcome | None = None  # the last answer that failed a gate, not yet in the ledger
        floor = -1  # after a failed gate, only candidates above this tier (escalate_to: next_tier)
        try:
            for candidate in plan.candidates:
                if candidate.tier <= floor:
                    continue
                d = self.catalog.deployments[candidate.deployment]
                if not await self.state.breaker_admit(d.name, now=self.clock(), cooldown_s=r.breaker_cooldown_s):
                    ctx.failures.append((d.name, "breaker open"))
                    continue
                if d.rate:
                    wait_s = await self._rate_refusal(ctx, d)
                    if wait_s is not None:
                        rate_waits.append(wait_s)
                        continue
                adapter = self.adapters[(ctx.protocol, d.api)]
                if hold.budgeted:
                    refused = await hold.reserve(d)
                    if refused is not None:
                        ctx.notes.append(f"skipped {d.name}: {refused}")
                        continue
                try:  # inline, not through _answer: one coroutine less on the chat lane
                    if d.local_model is not None and self.local is not None:
                        outcome = await self._managed_attempts(ctx, d, candidate, adapter, body)
                    else:
                        outcome = await self._attempts(ctx, d, candidate, adapter, body)
                except BaseException:
                    await hold.release()
                    raise
                if outcome is None:
                    if hold.budgeted:
                        await hold.release()
                    continue
                if outcome.gate_failure is not None and outcome.gate_failure.gate == "reasoning_starved":
                    kept = await self.unserved.failed(ctx, outcome, kept)  # billed; once more with more room
                    outcome = await self._starved_retry(ctx, d, candidate, adapter, body) or outcome
                if outcome.gate_failure is None:
                    if kept is not None:
                        await self.unserved.record(ctx, kept)
                    return outcome
                if outcome is not kept:
                    kept = await self.unserved.failed(ctx, outcome, kept)
                if ctx.gate is None or not ctx.gate.may_escalate(ctx.gate_failures):
                    break
                if self.gates.policy.escalate_to == "next_tier":
                    floor = candidate.tier
        except BaseException:
            if kept is not None:  # paid for: in the ledger whatever ends the request
                await self.unserved.record(ctx, kept)
            raise
        if kept is not None:
            return self.unserved.serve_kept(ctx, kept)
        detail = "; ".join(f"{n}: {e}" for n, e in ctx.failures) or "no candidate could be tried"
        if ctx.notes and not ctx.failures:
            detail = "; ".join(ctx.notes)
        if rate_waits and len(rate_waits) == len(ctx.failures):  # every one at its rate limit: come back later
            raise RateLimited(
                f"every candidate is at its rate limit: {detail}", retry_after=max(1, ceil(min(rate_waits)))
            )
        raise AllCandidatesFailed(f"every candidate failed: {detail}", failures=list(ctx.failures))

    async def _answer(
        self, ctx: CallContext, d: Deployment, candidate: Candidate, adapter: Adapter, body: dict[str, Any]
    ) -> Outcome | None:
        """One candidate's answer (its retries included), or None with its reservation released (as run
        does inline for the first answer)."""
        try:
            if d.local_model is not None and self.local is not None:
                outcome = await self._managed_attempts(ctx, d, candidate, adapter, body)
            else:
                outcome = await self._attempts(ctx, d, candidate, adapter, body)
        except BaseException:
            await ctx.hold.release()
            raise
        if outcome is None and ctx.hold.budgeted:
            await ctx.hold.release()
        return outcome

    async def _starved_retry(
        self, ctx: CallContext, d: Deployment, candidate: Candidate, adapter: Adapter, body: dict[str, Any]
    ) -> Outcome | None:
        """A reasoning model's starved answer: the same deployment once more, its max_tokens raised (the
        failed answer is billed already); None when no larger allowance is possible, affordable or answered."""
        more = d.starved_allowance(ctx.features.max_tokens, self.gates.policy.starved_retry_factor)
        if more is None or ctx.gate is None or not ctx.gate.may_escalate(ctx.gate_failures):
            return None
        roomier = replace(d, reasoning_floor=more)  # the adapters raise max_tokens to a floor
        if ctx.hold.budgeted:
            refused = await ctx.hold.reserve(roomier)
            if refused is not None:
                ctx.notes.append(f"no retry of {d.name} with max_tokens {more}: {refused}")
                return None
        ctx.notes.append(f"{d.name} retried with max_tokens {more}")
        return await self._answer(ctx, roomier, candidate, adapter, body)

    async def _rate_refusal(self, ctx: CallContext, d: Deployment) -> float | None:
        """Count the request in the deployment's own rpm/tpm; when it is at one, say so in the failures and
        return the seconds until it has room. With the shared state unreachable it is not counted (noted)."""
        try:
            refused = await self.state.limit_admit(
                d.rate, now=self.clock(), tokens=ctx.features.prompt_tokens_est, lease=ctx.request_id, lease_ttl_s=60
            )
        except StateUnavailable:
            ctx.notes.append(f"{d.name}'s rate limit unchecked: the shared state is unreachable")
            return None
        if refused is None:
            return None
        i, wait_s = refused
        ctx.failures.append((d.name, refusal_message(d.rate[i], tokens=ctx.features.prompt_tokens_est)))
        return wait_s

    async def count_served_tokens(self, ctx: CallContext, d: Deployment, usage: Usage) -> None:
        """A served request's tokens beyond its estimate at admission (its completion) into its deployment's tpm."""
        tokens = end_tokens(ctx.features.prompt_tokens_est, usage)
        with contextlib.suppress(StateUnavailable):  # uncounted, as admission is during an outage
            await self.state.limit_release(d.rate, now=self.clock(), tokens=tokens, lease=ctx.request_id)

    async def _managed_attempts(
        self, ctx: CallContext, d: Deployment, candidate: Candidate, adapter: Adapter, body: dict[str, Any]
    ) -> Outcome | None:
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

                async def release() -> None:
                    await hold.__aexit__(None, None, None)

                ctx.cleanups.append(release)
            else:
                await hold.__aexit__(None, None, None)
        return outcome

    async def _attempts(
        self, ctx: CallContext, d: Deployment, candidate: Candidate, adapter: Adapter, body: dict[str, Any]
    ) -> Outcome | None:
        """Try one deployment with retries; the outcome, or None to move on to the next candidate."""
        r = self.routing
        cap = ctx.hold.output_cap(d) if ctx.hold.budgeted else None
        for attempt in range(r.num_retries + 1):
            remaining = ctx.deadline - time.perf_counter()
            if remaining <= 0:
                ctx.failures.append((d.name, "request timeout reached"))
                break
            if attempt and not await self.state.breaker_admit(
                d.name, now=self.clock(), cooldown_s=r.breaker_cooldown_s
            ):
                # the breaker opened while this request waited to retry (its own or others' failures):
                # in-flight work stops trying a dead deployment too
                ctx.failures.append((d.name, "breaker open"))
                break
            timeout_s = min(d.timeout_s or r.attempt_timeout_s, remaining)
            t0 = time.perf_counter()
            try:
                if ctx.stream:
                    s = await adapter.stream(d, body, timeout_s=timeout_s, hints=ctx.hints, output_cap=cap)
                    ctx.upstream_ms += s.upstream_ms_to_first
                    ctx.notes += s.notes
                    await self.state.breaker_success(d.name)
                    if ctx.gate is not None:
                        outcome = await self._gated_stream(ctx, d, candidate, s, t0)
                    else:
                        outcome = self._outcome(ctx, d, candidate, stream=s)
                    if ctx.trace is not None:
                        ctx.trace.attempt(d, t0, "ok" if outcome.gate_failure is None else "gate_failed")
                    return outcome
                reply = await adapter.complete(d, body, timeout_s=timeout_s, hints=ctx.hints, output_cap=cap)
                ctx.upstream_ms += reply.upstream_ms
                ctx.notes += reply.notes
                await self.state.breaker_success(d.name)
                outcome = self._outcome(ctx, d, candidate, reply=reply)
                if ctx.gate is not None:
                    outcome.gate_failure = ctx.gate.judge_reply(d, reply)
                    outcome.attempt_ms = (time.perf_counter() - t0) * 1000
                if ctx.trace is not None:
                    ctx.trace.attempt(d, t0, "ok" if outcome.gate_failure is None else "gate_failed")
                return outcome
            except AttemptError as err:
                ctx.upstream_ms += (time.perf_counter() - t0) * 1000
                if err.client_fault:
                    same = d.api == ctx.protocol or (d.api == "openai-chat" and ctx.protocol == "openai-embeddings")
                    raise UpstreamRejected(
                        f"{d.name} rejected the request: {err.message}",
                        status=err.status or 400,
                        deployment=d.name,
                        body=err.body if same else None,
                    ) from None
                if err.unsupported:  # 501, 404: not what it does; no retry, and its health is not in doubt
                    self._attempt_unsupported(ctx, d, err, t0)
                    break
                await self._attempt_failed(ctx, d, err, t0)
                delay = self._retry_delay(err, attempt, ctx)
                if delay is None:
                    break
                await self.sleep(delay)
        return None

    async def _gated_stream(
        self, ctx: CallContext, d: Deployment, candidate: Candidate, s: UpstreamStream, t0: float
    ) -> Outcome:
        """Hold (or prefix) the stream for the gates. Whatever interrupts the hold, what the upstream
        produced so far is paid for and recorded."""
        assert ctx.gate is not None
        t_hold = time.perf_counter()
        try:
            held, failure = await ctx.gate.hold_stream(d, s)
        except BaseException:
            await self.unserved.cut_while_held(ctx, d, s)
            raise
        ctx.upstream_ms += (time.perf_counter() - t_hold) * 1000
        outcome = self._outcome(ctx, d, candidate, stream=held)
        outcome.gate_failure, outcome.attempt_ms = failure, (time.perf_counter() - t0) * 1000
        return outcome

    def _retry_delay(self, err: AttemptError, attempt: int, ctx: CallContext) -> float | None:
        """Seconds to wait before retrying the same deployment, or None to move on."""
        r = self.routing
        if not err.retryable or attempt >= r.num_retries:
            return None
        delay: float = r.retry_backoff_s * (2**attempt)
        if err.retry_after is not None:
            if err.retry_after > r.max_retry_after_s:
                return None
            delay = max(delay, err.retry_after)
        if time.perf_counter() + delay >= ctx.deadline:
            return None
        return delay

    def _attempt_unsupported(self, ctx: CallContext, d: Deployment, err: AttemptError, t0: float) -> None:
        """Recorded like a failure, but the breaker is not told: the deployment is not unwell."""
        self._record_attempt(ctx, d, err, t0, kind="unsupported", status=501, reason="not supported there")

    async def _attempt_failed(self, ctx: CallContext, d: Deployment, err: AttemptError, t0: float) -> None:
        summary = err.summary()
        state = await self.state.breaker_failure(
            d.name,
            now=self.clock(),
            threshold=self.routing.breaker_failures,
            error=summary,
            definitive=err.kind == "refused",
        )
        if state.opened_at is not None:
            self.metrics.child(self.metrics.breaker_open, d.name).set(1)
            self._shown_open.add(d.name)
        self._record_attempt(ctx, d, err, t0, kind=err.kind, status=502, reason="attempt failed")

    def _record_attempt(
        self, ctx: CallContext, d: Deployment, err: AttemptError, t0: float, *, kind: str, status: int, reason: str
    ) -> None:
        """One failed attempt: in the request's failures (its reason), the metric and a ledger row."""
        summary = err.summary()
        ctx.failures.append((d.name, f"unsupported: {summary}" if kind == "unsupported" else summary))
        self.metrics.attempt_failures.labels(d.name, kind).inc()
        if ctx.trace is not None:  # error.type: the upstream's status, else how it failed (timeout, refused...)
            ctx.trace.attempt(d, t0, "failed", str(err.status) if err.status else kind)
        self.ledger.record(
            usage_record(
                ctx,
                d,
                kind="attempt",
                usage=Usage(),
                status=err.status or status,
                latency_ms=(time.perf_counter() - t0) * 1000,
                ttft_ms=None,
                reason=reason,
                error=summary,
                fallbacks=len(ctx.failures) - 1,
            )
        )

    def _outcome(
        self,
        ctx: CallContext,
        d: Deployment,
        c: Candidate,
        *,
        reply: UpstreamReply | None = None,
        stream: UpstreamStream | None = None,
    ) -> Outcome:
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
            if ctx.gate_failures and d is self.catalog.deployments.get(d.name):  # not a starved retry's copy
                reason = f"{reason}; escalated to tier {c.tier} on a failed gate"
        if ctx.notes:
            reason = f"{reason}; {'; '.join(ctx.notes)}"
        return Outcome(d, c, len(ctx.failures), reason, reply, stream)  # positional: no kwargs dict per request
