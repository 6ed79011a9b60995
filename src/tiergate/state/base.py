"""Shared state behind one small interface: the ``SharedState`` protocol.

Two implementations satisfy it: ``memory.MemoryState`` keeps state in the
process (the default: one process, no Redis), ``redis_state.RedisState``
keeps it in Redis so replicas share one truth. The router never knows which
it has; ``guardrails.outages.GuardedState`` wraps either and is one too.
Whoever builds a state closes it (``await state.close()``) when done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tiergate.core import breaker as br
from tiergate.core.limits import LimitCounter
from tiergate.core.money import BudgetLine


@dataclass(frozen=True, slots=True)
class SessionTotals:
    """A session's totals across every replica, for the guardian."""

    first_seen: float
    requests: int
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    killed_reason: str | None = None
    killed_at: float | None = None


class SharedState(Protocol):
    async def breaker_admit(self, deployment: str, *, now: float, cooldown_s: float) -> bool: ...

    async def breaker_success(self, deployment: str) -> None: ...

    async def breaker_failure(
        self, deployment: str, *, now: float, threshold: int, error: str, definitive: bool = False
    ) -> br.BreakerState: ...

    def breaker_snapshot(self, *, now: float, cooldown_s: float) -> dict[str, str]: ...

    def breaker_states(self) -> dict[str, br.BreakerState]: ...

    async def budget_reserve(self, lines: Sequence[BudgetLine]) -> str | None: ...

    async def budget_settle(self, lines: Sequence[BudgetLine], actual_usd: float) -> list[tuple[float, float]]: ...

    async def budget_release(self, lines: Sequence[BudgetLine]) -> None: ...

    async def budget_add(self, lines: Sequence[BudgetLine], actual_usd: float) -> None: ...

    async def budget_usage(self, key: str) -> tuple[float, float, int]: ...

    def budget_seed(self, key: str, spent: float, calls: int) -> None: ...

    async def budget_prune(self, current: Callable[[str], bool]) -> int: ...

    async def session_add(
        self, session: str, *, now: float, cost_usd: float, prompt_tokens: int, completion_tokens: int, ttl_s: float
    ) -> SessionTotals: ...

    async def session_get(self, session: str) -> SessionTotals | None: ...

    async def session_kill(self, session: str, reason: str, *, ttl_s: float, at: float | None = None) -> None: ...

    # a lifted kill starts the session afresh: totals from a life begun before ``before`` go (True if they did)
    async def session_reset(self, session: str, *, before: float) -> bool: ...

    async def flag(self, name: str) -> str | None: ...

    async def set_flag(self, name: str, value: str | None) -> None: ...

    # rate and concurrency limits (tiergate.core.limits): admission is all or nothing, atomic across replicas
    async def limit_admit(
        self, counters: Sequence[LimitCounter], *, now: float, tokens: int, lease: str, lease_ttl_s: float
    ) -> tuple[int, float] | None: ...

    async def limit_release(self, counters: Sequence[LimitCounter], *, now: float, tokens: int, lease: str) -> None: ...

    async def limit_renew(self, held: Sequence[tuple[LimitCounter, str]], *, expires_at: float) -> None: ...

    async def limit_usage(self, c: LimitCounter, *, now: float) -> int: ...

    # lifecycle: release connections and stop background work; safe to call more than once
    async def close(self) -> None: ...
