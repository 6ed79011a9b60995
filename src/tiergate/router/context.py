"""One request's state as it goes through routing, and what routing produced.

``CallContext`` is built by the pipeline per request and read by the
executor (deadline, hints, the budget hold); ``Outcome`` is the deployment
that answered, with the reason the client sees in ``X-Tiergate-Reason``.
``usage_record`` is the one place a ledger row is made from them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from tiergate.adapters.base import UpstreamReply, UpstreamStream
from tiergate.core.catalog import Deployment
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
from tiergate.guardrails.budget_hold import BudgetHold
from tiergate.guardrails.guardian import SessionState
from tiergate.observability.tracing import RequestTrace

if TYPE_CHECKING:
    from tiergate.core.gates import GateFailure
    from tiergate.router.gating import RequestGate


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
    features: RequestFeatures
    hold: BudgetHold
    hints: ClientHints = NO_HINTS
    session: SessionState | None = None  # the guardian's state for this request's session
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # run when the request is settled
    plan: RoutePlan | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    upstream_ms: float = 0.0
    notes: list[str] = field(default_factory=list)
    gate: RequestGate | None = None  # the quality gates its answers face (None: not gated)
    gate_failures: int = 0  # its answers that failed one so far
    billed: tuple[tuple[Usage, float], ...] = ()  # answers that failed a gate: paid, not served (no list per request)
    trace: RequestTrace | None = None  # what its spans need; None unless observability.tracing is set


@dataclass(slots=True)
class Outcome:
    deployment: Deployment
    candidate: Candidate
    fallbacks: int
    reason: str
    reply: UpstreamReply | None = None
    stream: UpstreamStream | None = None
    gate_failure: GateFailure | None = None  # the gate this answer failed
    attempt_ms: float = 0.0  # how long its attempt took (a failed gate's ledger row)

    @property
    def usage(self) -> Usage:
        """Tokens used so far (a stream's count grows as it is relayed)."""
        answered = self.stream if self.stream is not None else self.reply
        assert answered is not None
        return answered.usage


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


def usage_record(
    ctx: CallContext,
    d: Deployment | None,
    *,
    kind: Literal["request", "attempt", "shadow"],
    usage: Usage,
    status: int,
    ttft_ms: float | None,
    reason: str,
    error: str | None,
    fallbacks: int,
    cost: float = 0.0,
    latency_ms: float | None = None,
) -> UsageRecord:
    """The ledger row of a finished request (kind="request") or of one failed attempt."""
    ident = ctx.identity
    if latency_ms is None:
        latency_ms = (time.perf_counter() - ctx.started) * 1000
    if d is None:
        name = provider = tier = None
        local = False
    else:
        name, provider, tier, local = d.name, d.provider, d.tier, d.local
    extra = cache_tokens_extra(usage) if usage.cache_read_tokens or usage.cache_write_tokens else None
    # positional, in the record's column order (tests/unit/test_usage_record.py names every field):
    # keywords cost every request a mapping of 25 names
    return UsageRecord(
        ctx.wall_start, ctx.request_id, kind, ident.key_name, ident.agent, ident.session, ident.task,
        ctx.requested_model, name, provider, tier, local, usage.prompt_tokens, usage.completion_tokens,
        usage.estimated, cost, latency_ms, ttft_ms, status, ctx.stream, max(0, fallbacks), reason, error,
        ctx.protocol, extra,
    )  # fmt: skip


def cache_tokens_extra(usage: Usage) -> dict[str, str]:
    """Cache reads and writes ride in the row's ``extra`` JSON (no column of their own yet); reports read them."""
    return {"cache_read_tokens": str(usage.cache_read_tokens), "cache_write_tokens": str(usage.cache_write_tokens)}
