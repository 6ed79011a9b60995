"""Circuit breaker as pure transitions over an immutable state.

closed ──(N consecutive failures, or one refused connection)──▶ open
open ──(cooldown passed)──▶ half-open: exactly one probe is let through
half-open ──probe ok──▶ closed;  ──probe fails──▶ open (cooldown restarts)

A dead local server therefore costs at most one failed attempt per cooldown.
Where the state lives (memory, Redis) is ``tiergate.state``'s business.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

BreakerStatus = Literal["closed", "open", "half-open"]


@dataclass(frozen=True, slots=True)
class BreakerState:
    failures: int = 0
    opened_at: float | None = None
    probe_started_at: float | None = None
    last_error: str = ""


CLOSED = BreakerState()


def status(s: BreakerState, *, now: float, cooldown_s: float) -> BreakerStatus:
    if s.opened_at is None:
        return "closed"
    if now - s.opened_at < cooldown_s:
        return "open"
    return "half-open"


def admit(s: BreakerState, *, now: float, cooldown_s: float) -> tuple[bool, BreakerState]:
    """May a request go to this deployment now? Half-open admits one probe per cooldown."""
    st = status(s, now=now, cooldown_s=cooldown_s)
    if st == "closed":
        return True, s
    if st == "open":
        return False, s
    if s.probe_started_at is not None and now - s.probe_started_at < cooldown_s:
        return False, s  # a probe is already out
    return True, replace(s, probe_started_at=now)


def on_success(s: BreakerState) -> BreakerState:
    return CLOSED if s != CLOSED else s


def on_failure(s: BreakerState, *, now: float, threshold: int, error: str, definitive: bool = False) -> BreakerState:
    """Count a failure; open at the threshold, at once when ``definitive`` (connection refused) or when probing."""
    failures = s.failures + 1
    if definitive or failures >= threshold or s.opened_at is not None:
        return BreakerState(failures=failures, opened_at=now, probe_started_at=None, last_error=error)
    return replace(s, failures=failures, last_error=error)


def unavailable_reason(s: BreakerState, *, now: float, cooldown_s: float) -> str | None:
    """Why the policy should skip this deployment, or None when it may be tried."""
    st = status(s, now=now, cooldown_s=cooldown_s)
    if st == "open":
        assert s.opened_at is not None
        retry_in = cooldown_s - (now - s.opened_at)
        return f"breaker open after {s.failures} failure(s) ({s.last_error}); retry in {retry_in:.0f}s"
    if st == "half-open" and s.probe_started_at is not None and now - s.probe_started_at < cooldown_s:
        return "breaker half-open, probe in flight"
    return None
