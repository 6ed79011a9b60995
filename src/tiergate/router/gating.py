"""The quality gates at work on one request's answers: judge a reply, hold or prefix a stream.

The executor asks ``Gates.for_request`` once per request (None: not
gated, nothing more is done) and, for each answer it gets, ``judge_reply`` or
``hold_stream``. A held stream is read to its end before anything reaches
the client and replayed from memory when it passes; a prefixed one is read
until it shows ``prefix_chars`` of answer (or ends), then relayed from where
it stands. Either way the events read are bounded by the deployment's
``max_response_mb`` and, like every stream, by its deadlines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol

from tiergate.adapters.base import UpstreamReply, UpstreamStream
from tiergate.adapters.gate_requests import expectations
from tiergate.adapters.gate_views import GATED_PROTOCOLS, StreamView, plainly_answered, reply_view
from tiergate.core.catalog import Deployment
from tiergate.core.gates import Expectations, GateFailure, GatePolicy, GateRule, judge
from tiergate.core.types import Usage, UsageRecord
from tiergate.observability.metrics import Metrics
from tiergate.router.context import CallContext, Outcome, usage_record


class LedgerSink(Protocol):
    def record(self, rec: UsageRecord) -> None: ...


class Gates:
    """The policy, and the gates of each request it covers."""

    MAX_RULES = 4096  # tasks and model names come from clients: bound the memo

    def __init__(self, policy: GatePolicy) -> None:
        self.policy = policy
        self._rules: dict[tuple[str | None, str, bool], GateRule | None] = {}  # the policy is fixed: memoised

    def for_request(
        self, protocol: str, body: dict[str, Any], *, task: str | None, model: str, routed: bool
    ) -> RequestGate | None:
        if protocol not in GATED_PROTOCOLS:
            return None
        key = (task, model, routed)
        try:
            rule = self._rules[key]
        except KeyError:
            if len(self._rules) >= self.MAX_RULES:
                self._rules.clear()
            rule = self._rules[key] = self.policy.for_request(task, model, routed=routed)
        return None if rule is None else RequestGate(self.policy, rule, protocol, body)


class RequestGate:
    """One request's gates: its rule, what its body asked for (read when first needed), the escalation
    limits. How many of its answers failed is counted on the request (CallContext.gate_failures)."""

    __slots__ = ("policy", "rule", "protocol", "body", "_expect")

    def __init__(self, policy: GatePolicy, rule: GateRule, protocol: str, body: dict[str, Any]) -> None:
        self.policy, self.rule, self.protocol, self.body = policy, rule, protocol, body
        self._expect: Expectations | None = None

    @property
    def expect(self) -> Expectations:
        if self._expect is None:
            self._expect = expectations(self.protocol, self.body)
        return self._expect

    def rule_for(self, d: Deployment) -> GateRule:
        return self.policy.for_deployment(self.rule, d.name) if self.policy.deployments else self.rule

    def may_escalate(self, failed: int) -> bool:
        return failed <= self.policy.max_escalations

    def judge_reply(self, d: Deployment, reply: UpstreamReply) -> GateFailure | None:
        rule = self.rule_for(d)
        if not rule.enabled:
            return None
        if plainly_answered(self.protocol, self.body, reply.body, rule):  # the chat lane's usual answer
            return None
        view = reply_view(self.protocol, reply.body)
        return None if view is None else judge(view, self.expect, rule)

    async def hold_stream(self, d: Deployment, s: UpstreamStream) -> tuple[UpstreamStream, GateFailure | None]:
        """The stream to relay (its read part replayed, then the rest) and the gate it failed, if any."""
        rule = self.rule_for(d)
        mode = rule.stream_mode(self.expect) if rule.enabled else "off"
        if mode == "off":
            return s, None
        reader = StreamView(self.protocol)
        held: list[bytes] = [s.first_event] if s.first_event else []
        size = len(s.first_event)
        cap = d.limits.max_response_bytes
        for ev in held:
            reader.feed(ev)
        ended = False  # the stream's last event is in hand (else the relay goes on with s.rest)
        if mode == "hold" or reader.visible < rule.prefix_chars:
            async for ev in s.rest:
                size += len(ev)
                if size > cap:  # paid for as far as it went, and not served whole: an incomplete answer
                    s.close()
                    s.status.fail(f"a held stream passed {cap / 1048576:g} MB (max_response_mb)")
                    ended = True
                    break
                held.append(ev)
                reader.feed(ev)
                if mode == "prefix" and reader.visible >= rule.prefix_chars:
                    break
            else:
                ended = True
        if s.status.error is not None and ended:
            failure: GateFailure | None = GateFailure("incomplete", s.status.error)
        elif ended:
            failure = judge(reader.finished(), self.expect, rule)
        else:  # a prefix that passed: the early gates have nothing to say about an answer under way
            failure = None
        rest = _replay(held[1:], None if ended else s.rest)
        return replace(s, first_event=held[0] if held else b"", rest=rest), failure


async def _replay(events: list[bytes], more: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    """The events read while held, then (a prefix released early) the rest as it comes."""
    for ev in events:
        yield ev
    if more is not None:
        async for ev in more:
            yield ev


class UnservedAnswers:
    """Answers that failed a gate: paid for when the request moves on, and in the ledger as billed attempts
    unless one of them is served in the end (then its request row bills it, once)."""

    def __init__(
        self,
        ledger: LedgerSink,
        metrics: Metrics,
        count_tokens: Callable[[CallContext, Deployment, Usage], Awaitable[None]],
    ) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self.count_tokens = count_tokens  # into the deployment's tpm (its rpm/tpm quota)

    async def failed(self, ctx: CallContext, outcome: Outcome, kept: Outcome | None) -> Outcome:
        """An answer failed a gate: pay for it now (its budget hold settled) and keep it in case no
        better one comes; the answer kept before it is in the ledger from here on."""
        assert ctx.gate is not None and outcome.gate_failure is not None
        d, failure = outcome.deployment, outcome.gate_failure
        ctx.gate_failures += 1
        ctx.failures.append((d.name, str(failure)))
        self.metrics.gate_failures.labels(d.name, failure.gate).inc()
        if kept is not None:
            await self.record(ctx, kept)
        if ctx.hold.budgeted:
            await ctx.hold.settle(d.usage_cost(outcome.usage), outcome.usage)
        return outcome

    async def record(self, ctx: CallContext, outcome: Outcome) -> None:
        """A paid answer that is not served: a billed attempt row, its tokens in the deployment's tpm."""
        if outcome.stream is not None:
            outcome.stream.close()
        failure = str(outcome.gate_failure)
        await self._billed(ctx, outcome.deployment, outcome.usage, failure, outcome.attempt_ms, outcome.fallbacks)

    async def cut_while_held(self, ctx: CallContext, d: Deployment, s: UpstreamStream) -> None:
        """A held stream ended by its request (the client left, the gateway stopped): what the upstream
        produced so far is paid for (the budget hold settled) and recorded, status 499."""
        s.close()
        if ctx.hold.budgeted:
            await ctx.hold.settle(d.usage_cost(s.usage), s.usage)
        failure = str(GateFailure("incomplete", "cut while held"))
        await self._billed(ctx, d, s.usage, failure, 0.0, len(ctx.failures), status=499)

    async def _billed(
        self, ctx: CallContext, d: Deployment, usage: Usage, error: str, ms: float, fallbacks: int, status: int = 200
    ) -> None:
        cost = d.usage_cost(usage)
        ctx.billed += ((usage, cost),)
        self.ledger.record(
            usage_record(
                ctx,
                d,
                kind="attempt",
                usage=usage,
                status=status,
                latency_ms=ms,
                ttft_ms=None,
                reason="gate failed",
                error=error,
                fallbacks=fallbacks,
                cost=cost,
            )
        )
        if cost:
            ident = ctx.identity
            self.metrics.per_request.spend(d.name, ident.agent, ident.task, cost)
        if d.rate:
            await self.count_tokens(ctx, d, usage)

    def serve_kept(self, ctx: CallContext, kept: Outcome) -> Outcome:
        """No better answer came: the kept one is served, saying which gate it failed."""
        assert ctx.gate is not None
        why = "no higher tier answered" if ctx.gate.may_escalate(ctx.gate_failures) else "escalations used up"
        kept.reason = f"{kept.reason}; {kept.deployment.name} failed {kept.gate_failure}; served anyway ({why})"
        kept.gate_failure = None
        return kept
