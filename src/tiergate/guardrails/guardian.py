"""Session guardian: pure verdicts that stop a runaway agent session.

Budgets cap spend per calendar window; the guardian caps one session
(a single agent run), which is where loops burn money. Everything here is a
function of the session's totals and the clock, so the caller owns the
state, persistence and alerting (see ``tiergate.guardrails.sessions``).

Precedence in :func:`admit`: a kill is final (until the caller drops the
session), then idleness (the caller starts afresh), then the limits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class GuardianRules:
    session_max_usd: float | None = None
    session_max_age_s: float | None = None
    session_idle_ttl_s: float = 86400
    context_alert_at: tuple[float, ...] = (0.8, 0.95)


@dataclass(slots=True)
class SessionState:
    session: str
    key_name: str
    agent: str | None
    first_seen: float
    last_seen: float
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    max_context_ratio: float = 0.0
    killed_reason: str | None = None
    context_alerts_sent: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Literal["allow", "kill", "expire"]
    reason: str = ""


ALLOW = Verdict("allow")


def admit(state: SessionState | None, rules: GuardianRules, now: float) -> Verdict:
    """Before a request: may this session go on?"""
    if state is None:
        return ALLOW
    if state.killed_reason:
        return Verdict("kill", state.killed_reason)
    idle = now - state.last_seen
    if idle > rules.session_idle_ttl_s:
        ttl = _dur(rules.session_idle_ttl_s)
        return Verdict("expire", f"session {state.session} idle {_dur(idle)} > session_idle_ttl {ttl}")
    over = _over_spend(state, rules)
    if over:
        return Verdict("kill", over)
    age = now - state.first_seen
    if rules.session_max_age_s is not None and age > rules.session_max_age_s:
        cap = _dur(rules.session_max_age_s)
        return Verdict("kill", f"session {state.session} is {_dur(age)} old > session_max_age {cap}")
    return ALLOW


def after_request(state: SessionState, rules: GuardianRules) -> Verdict:
    """After settling a request's cost: kill once the session has spent more than its maximum."""
    if state.killed_reason:
        return Verdict("kill", state.killed_reason)
    over = _over_spend(state, rules)
    return Verdict("kill", over) if over else ALLOW


def context_alerts_due(state: SessionState, ratio: float, rules: GuardianRules) -> tuple[float, ...]:
    """Thresholds this prompt/window ratio reaches that were not yet alerted in this session (ascending)."""
    sent = set(state.context_alerts_sent)
    return tuple(sorted(t for t in set(rules.context_alert_at) if ratio >= t and t not in sent))


def expired(states: Iterable[SessionState], rules: GuardianRules, now: float) -> list[str]:
    """Sessions idle past the TTL, for the caller to drop from memory."""
    return [s.session for s in states if now - s.last_seen > rules.session_idle_ttl_s]


def _over_spend(state: SessionState, rules: GuardianRules) -> str:
    cap = rules.session_max_usd
    if cap is None or not state.cost_usd > cap:
        return ""
    return f"session {state.session} spent ${_usd(state.cost_usd)} > session_max_usd ${cap:g}"


def _usd(x: float) -> str:
    """Cents for real money, more digits for small sums so '$0.00 > $0.001' never happens."""
    return f"{x:.2f}" if x >= 1 else f"{x:.4f}"


def _dur(seconds: float) -> str:
    """Two units at most, the smaller dropped when zero: 90 -> '1m30s', 28800 -> '8h'."""
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds:.3g}s"
    s = int(seconds)
    for big, big_n, small, small_n in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= big_n:
            rest = (s % big_n) // small_n
            return f"{s // big_n}{big}{rest:02d}{small}" if rest else f"{s // big_n}{big}"
    return f"{s}s"
