"""The quality gates at work on one request's answers: judge a reply, hold or prefix a stream.

The executor asks ``RequestGate.for_request`` once per request (None: not
gated, nothing more is done) and, for each answer it gets, ``judge_reply`` or
``hold_stream``. A held stream is read to its end before anything reaches
the client and replayed from memory when it passes; a prefixed one is read
until it shows ``prefix_chars`` of answer (or ends), then relayed from where
it stands. Either way the events read are bounded by the deployment's
``max_response_mb`` and, like every stream, by its deadlines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from typing import Any

from tiergate.adapters.base import UpstreamReply, UpstreamStream
from tiergate.adapters.gate_requests import expectations
from tiergate.adapters.gate_views import GATED_PROTOCOLS, StreamView, reply_view
from tiergate.core.catalog import Deployment
from tiergate.core.errors import AttemptError
from tiergate.core.gates import Expectations, GateFailure, GatePolicy, GateRule, judge


@dataclass(slots=True)
class RequestGate:
    """One request's gates: its rule, what its body asked for, and the policy's escalation limits."""

    policy: GatePolicy
    rule: GateRule
    expect: Expectations
    protocol: str
    failed: int = 0  # answers that failed a gate so far

    @classmethod
    def for_request(
        cls, policy: GatePolicy, protocol: str, body: dict[str, Any], *, task: str | None, model: str, routed: bool
    ) -> RequestGate | None:
        if protocol not in GATED_PROTOCOLS:
            return None
        rule = policy.for_request(task, model, routed=routed)
        if rule is None:
            return None
        return cls(policy, rule, expectations(protocol, body), protocol)

    def rule_for(self, d: Deployment) -> GateRule:
        return self.policy.for_deployment(self.rule, d.name)

    @property
    def may_escalate(self) -> bool:
        return self.failed <= self.policy.max_escalations

    def judge_reply(self, d: Deployment, reply: UpstreamReply) -> GateFailure | None:
        rule = self.rule_for(d)
        if not rule.enabled:
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
        ended = True
        if mode == "hold" or reader.visible < rule.prefix_chars:
            ended = False
            async for ev in s.rest:
                size += len(ev)
                if size > cap:
                    s.close()
                    raise AttemptError("protocol", f"a held stream passed {cap / 1048576:g} MB (max_response_mb)")
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
        rest = _replay(held[1:], () if ended else s.rest)
        return replace(s, first_event=held[0] if held else b"", rest=rest), failure


async def _replay(events: list[bytes], more: Iterable[bytes] | AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for ev in events:
        yield ev
    if isinstance(more, AsyncIterator):
        async for ev in more:
            yield ev
