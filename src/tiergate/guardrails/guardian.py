"""Session guardian: pure verdicts that stop a runaway agent session.

Budgets cap spend per calendar window; the guardian caps one session
(a single agent run), which is where loops burn money. Everything here is a
function of the session's totals and the clock, so the caller owns the
state, persistence and alerting (see ``tiergate.guardrails.sessions``).

Precedence in :func:`admit`: a kill in force, then a kill past ``kill_ttl``
(the session starts again), then idleness (the caller starts afresh), then
the limits. An implicit session (the request named none) is never refused for
its age: past ``session_max_age`` it rolls over into a new one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from tiergate.core.windows import window_bounds

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class GuardianRules:
    session_max_usd: float | None = None
    session_max_age_s: float | None = None
    session_idle_ttl_s: float = DAY_S
    context_alert_at: tuple[float, ...] = (0.8, 0.95)
    kill_ttl_s: float | None = DAY_S  # None: a kill holds until it is revived


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
    implicit: bool = False  # named by the gateway (no session header): see implicit_period
    killed_at: float | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """``expire``: start afresh under the same id; ``restart``: the same, and totals older than ``at``
    (shared by every replica) belong to the life that ended."""

    action: Literal["allow", "kill", "expire", "restart"]
    reason: str = ""
    at: float = 0.0


ALLOW = Verdict("allow")


def admit(state: SessionState | None, rules: GuardianRules, now: float) -> Verdict:
    """Before a request: may this session go on?"""
    if state is None:
        return ALLOW
    if state.killed_reason:
        if kill_in_force(state.killed_at, rules, now):
            return Verdict("kill", state.killed_reason)
        assert state.killed_at is not None and rules.kill_ttl_s is not None  # what kill_in_force implies
        ttl = _dur(rules.kill_ttl_s)
        return Verdict(
            "restart",
            f"the kill of session {state.session} expired (kill_ttl {ttl})",
            state.killed_at + rules.kill_ttl_s,
        )
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
        why = f"session {state.session} is {_dur(age)} old > session_max_age {cap}"
        return Verdict("expire", f"{why}: a new one starts") if state.implicit else Verdict("kill", why)
    return ALLOW


def kill_in_force(killed_at: float | None, rules: GuardianRules, now: float) -> bool:
    """A kill holds for ``kill_ttl`` (a kill of unknown age, for all of it, from now)."""
    return rules.kill_ttl_s is None or killed_at is None or now - killed_at <= rules.kill_ttl_s


@dataclass(frozen=True, slots=True)
class Period:
    """One life of the implicit sessions: [start, end) and the suffix that names it."""

    label: str
    start: float
    end: float


def implicit_period(now: float, *, tz: str, max_age_s: float | None) -> Period:
    """The period whose implicit sessions are open at ``now``: the local day, cut in ``max_age`` slices.

    A request that names no session counts in ``key:agent:<label>``. The id is a function of
    the clock, so every replica names the same session with no coordination, and each life has
    its own ledger row, shared totals and kill: rolling over resets nothing anywhere, and no kill
    (the guardian's or an operator's) can outlive its day. A rollover decided when a session's
    age passes the limit would reuse one id, and every replica would then have to reset its
    totals, the ledger row and the kill in step. Slices never outlast ``session_max_age``, so an
    implicit session is never refused for its age: a new one starts instead.
    """
    day_start, day_end = window_bounds("day", now, tz)
    zone = ZoneInfo(tz)
    day = datetime.fromtimestamp(day_start, zone).date().isoformat()
    if max_age_s is None or max_age_s >= day_end - day_start:
        return Period(day, day_start, day_end)
    n = int((now - day_start) // max_age_s)
    start = day_start + n * max_age_s
    end = min(start + max_age_s, day_end)
    if n == 0:
        return Period(day, start, end)
    t = datetime.fromtimestamp(start, zone)
    return Period(f"{day}T{t:%H:%M}" + (f":{t:%S}" if t.second else ""), start, end)


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
