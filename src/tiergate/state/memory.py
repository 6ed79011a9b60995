"""``SharedState`` in the process: the default for one process without Redis.

Every update runs without an await in between, so one event loop makes
each call atomic, which is the property the Redis scripts give across
replicas (``redis_state``). Rate windows and concurrency leases are
``memory_limits.MemoryLimits``, a part this state owns and delegates to.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from tiergate.core import breaker as br
from tiergate.core.limits import LimitCounter
from tiergate.core.money import BudgetLine, over_limit
from tiergate.state.base import SessionTotals
from tiergate.state.memory_limits import MemoryLimits


def _unreserve(reserved: float, amount: float) -> float:
    """Float sums drift (0.1 + 0.2 - 0.1 - 0.2 != 0): snap dust to zero so ended windows can be pruned."""
    left = reserved - amount
    return 0.0 if left < 1e-9 else left


class MemoryState:
    """In-process state; all methods are safe on one event loop (no awaits inside updates)."""

    def __init__(self) -> None:
        self.limits = MemoryLimits()
        self._breakers: dict[str, br.BreakerState] = {}
        self._budgets: dict[str, list[float]] = {}  # key -> [spent, reserved, calls]
        self._flags: dict[str, str] = {}
        self._sessions: dict[str, SessionTotals] = {}

    async def breaker_admit(self, deployment: str, *, now: float, cooldown_s: float) -> bool:
        current = self._breakers.get(deployment)
        if current is None:  # closed breakers are not stored: the usual case, decided without a call
            return True
        ok, new = br.admit(current, now=now, cooldown_s=cooldown_s)
        if new is not br.CLOSED:
            self._breakers[deployment] = new
        return ok

    async def breaker_success(self, deployment: str) -> None:
        if deployment in self._breakers:
            del self._breakers[deployment]

    async def breaker_failure(
        self, deployment: str, *, now: float, threshold: int, error: str, definitive: bool = False
    ) -> br.BreakerState:
        new = br.on_failure(
            self._breakers.get(deployment, br.CLOSED), now=now, threshold=threshold, error=error, definitive=definitive
        )
        self._breakers[deployment] = new
        return new

    def breaker_snapshot(self, *, now: float, cooldown_s: float) -> dict[str, str]:
        out = {}
        for name, s in self._breakers.items():
            why = br.unavailable_reason(s, now=now, cooldown_s=cooldown_s)
            if why:
                out[name] = why
        return out

    def breaker_states(self) -> dict[str, br.BreakerState]:
        return dict(self._breakers)

    # ------------------------------------------------------------------ budgets
    # Check-then-reserve is atomic here because nothing awaits in between: one
    # event loop, one process. A shared implementation must keep that property
    # (a Redis script, a conditional UPDATE), never read-then-write.

    def _counter(self, key: str) -> list[float]:
        return self._budgets.setdefault(key, [0.0, 0.0, 0])

    async def budget_reserve(self, lines: Sequence[BudgetLine]) -> str | None:
        """Reserve every line or none; returns why not when one would pass its limit."""
        for line in lines:
            spent, reserved, calls = self._counter(line.key)
            why = over_limit(line, spent=spent, reserved=reserved, calls=int(calls))
            if why:
                return why
        for line in lines:
            c = self._counter(line.key)
            c[1] += line.amount_usd
            c[2] += 1
        return None

    async def budget_settle(self, lines: Sequence[BudgetLine], actual_usd: float) -> list[tuple[float, float]]:
        """Turn reservations into settled spend; returns (before, after) spent per line for alerts."""
        out = []
        for line in lines:
            c = self._counter(line.key)
            before = c[0]
            c[1] = _unreserve(c[1], line.amount_usd)
            c[0] += actual_usd
            out.append((before, c[0]))
        return out

    async def budget_release(self, lines: Sequence[BudgetLine]) -> None:
        for line in lines:
            c = self._counter(line.key)
            c[1] = _unreserve(c[1], line.amount_usd)
            c[2] = max(0, c[2] - 1)

    async def budget_add(self, lines: Sequence[BudgetLine], actual_usd: float) -> None:
        """Count a call that was never reserved (served while the state was unreachable, reconciled now)."""
        for line in lines:
            c = self._counter(line.key)
            c[0] += actual_usd
            c[2] += 1

    async def budget_usage(self, key: str) -> tuple[float, float, int]:
        spent, reserved, calls = self._budgets.get(key, (0.0, 0.0, 0))
        return spent, reserved, int(calls)

    def budget_seed(self, key: str, spent: float, calls: int) -> None:
        self._budgets[key] = [spent, 0.0, calls]

    async def budget_prune(self, current: Callable[[str], bool]) -> int:
        """Forget counters (and latches) of windows that have ended; returns how many went."""
        old = [k for k, c in self._budgets.items() if not current(k) and c[1] == 0]
        for k in old:
            del self._budgets[k]
        latches = [f for f in self._flags if f.startswith("latched:") and not current(f.removeprefix("latched:"))]
        for f in latches:
            del self._flags[f]
        return len(old) + len(latches)

    # ------------------------------------------------------------------ sessions
    async def session_add(
        self, session: str, *, now: float, cost_usd: float, prompt_tokens: int, completion_tokens: int, ttl_s: float
    ) -> SessionTotals:
        t = self._sessions.get(session)
        if t is None:
            t = SessionTotals(now, 0, 0.0, 0, 0)
        t = SessionTotals(
            t.first_seen,
            t.requests + 1,
            t.cost_usd + cost_usd,
            t.prompt_tokens + prompt_tokens,
            t.completion_tokens + completion_tokens,
            t.killed_reason,
            t.killed_at,
        )
        self._sessions[session] = t
        return t

    async def session_get(self, session: str) -> SessionTotals | None:
        return self._sessions.get(session)

    async def session_kill(self, session: str, reason: str, *, ttl_s: float, at: float | None = None) -> None:
        t = self._sessions.get(session) or SessionTotals(time.time(), 0, 0.0, 0, 0)
        if t.killed_reason is None:
            self._sessions[session] = dataclasses.replace(
                t, killed_reason=reason, killed_at=time.time() if at is None else at
            )

    async def session_reset(self, session: str, *, before: float) -> bool:
        t = self._sessions.get(session)
        if t is None or t.first_seen >= before:
            return False
        del self._sessions[session]
        return True

    # ------------------------------------------------------------------ flags
    async def flag(self, name: str) -> str | None:
        return self._flags.get(name)

    async def set_flag(self, name: str, value: str | None) -> None:
        if value is None:
            self._flags.pop(name, None)
        else:
            self._flags[name] = value

    # ------------------------------------------------------------------ rate and concurrency limits
    async def limit_admit(
        self, counters: Sequence[LimitCounter], *, now: float, tokens: int, lease: str, lease_ttl_s: float
    ) -> tuple[int, float] | None:
        return self.limits.admit(counters, now=now, tokens=tokens, lease=lease, lease_ttl_s=lease_ttl_s)

    async def limit_release(self, counters: Sequence[LimitCounter], *, now: float, tokens: int, lease: str) -> None:
        self.limits.release(counters, now=now, tokens=tokens, lease=lease)

    async def limit_renew(self, held: Sequence[tuple[LimitCounter, str]], *, expires_at: float) -> None:
        self.limits.renew(held, expires_at=expires_at)

    async def limit_usage(self, c: LimitCounter, *, now: float) -> int:
        return self.limits.usage(c, now=now)

    # ------------------------------------------------------------------ lifecycle
    async def close(self) -> None:
        """Nothing to release: the state lives and dies with the process."""
