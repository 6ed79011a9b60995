"""``SharedState`` in Redis, so N gateway replicas share one truth.

``RedisState`` is a facade: it builds one ``RedisConnection`` (clients,
scripts, the mapping of outages to ``StateUnavailable``) and the parts that
use it, one per responsibility, and implements the protocol by delegating:

    redis_breakers.RedisBreakers  circuit breakers, and the cache behind the two sync reads
    redis_budgets.RedisBudgets    budget counters (reserve, settle, release, seed, prune)
    redis_budgets.RedisFlags      flags: the emergency switch and budget latches
    redis_limits.RedisLimits      rate windows and concurrency leases
    redis_sessions.RedisSessions  the guardian's session totals

Every change is one Lua script (or one MULTI), so it is atomic across
replicas. Keys start with ``prefix`` (default ``tiergate:``); each part's
module lists its own. Multi-key scripts need all keys in one slot: on
Redis Cluster use a hash-tagged prefix such as ``{tiergate}:`` (pruning
scans one node, so a single Redis or Sentinel is the supported setup).

No silent fallback: when Redis cannot be reached (or is read-only during
a failover) a method raises ``StateUnavailable`` (HTTP 503) and the caller
decides whether to fail open or closed; commands are never retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from tiergate.core import breaker as br
from tiergate.core.limits import LimitCounter
from tiergate.core.money import BudgetLine
from tiergate.state.base import SessionTotals
from tiergate.state.redis_breakers import RedisBreakers
from tiergate.state.redis_budgets import RedisBudgets, RedisFlags
from tiergate.state.redis_conn import RedisConnection
from tiergate.state.redis_limits import RedisLimits
from tiergate.state.redis_sessions import RedisSessions


class RedisState:
    """``SharedState`` on one Redis; build, ``await start()``, use, ``await close()``."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tiergate:",
        refresh_s: float = 0.2,
        timeout_s: float = 3.0,  # a 2-core host under load misses 1 s (seen in CI); config: state_timeout_s
        stale_after_s: float | None = None,
        max_connections: int = 64,
    ) -> None:
        self.conn = RedisConnection(url, prefix=prefix, timeout_s=timeout_s, max_connections=max_connections)
        stale = stale_after_s if stale_after_s is not None else max(1.0, 5 * refresh_s, 2 * timeout_s)
        self.breakers = RedisBreakers(self.conn, refresh_s=refresh_s, stale_after_s=stale)
        self.budgets = RedisBudgets(self.conn)
        self.flags = RedisFlags(self.conn)
        self.limits = RedisLimits(self.conn)
        self.sessions = RedisSessions(self.conn)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Connect, load the breaker cache, start the refresher; raises StateUnavailable."""
        if self.conn.is_open:
            return
        self.conn.open()
        try:
            await self.conn.io("connect", self.conn.client().ping())
            await self.breakers.refresh()
        except BaseException:
            await self.close()
            raise
        self.breakers.start_refresher()

    async def close(self) -> None:
        await self.breakers.stop_refresher()
        await self.conn.close()
        self.breakers.forget()

    async def refresh(self) -> None:
        """Reload the breaker cache now (the refresher does this every ``refresh_s``)."""
        await self.breakers.refresh()

    # ------------------------------------------------------------------ breakers
    async def breaker_admit(self, deployment: str, *, now: float, cooldown_s: float) -> bool:
        return await self.breakers.admit(deployment, now=now, cooldown_s=cooldown_s)

    async def breaker_success(self, deployment: str) -> None:
        await self.breakers.success(deployment)

    async def breaker_failure(
        self, deployment: str, *, now: float, threshold: int, error: str, definitive: bool = False
    ) -> br.BreakerState:
        return await self.breakers.failure(deployment, now=now, threshold=threshold, error=error, definitive=definitive)

    def breaker_snapshot(self, *, now: float, cooldown_s: float) -> dict[str, str]:
        return self.breakers.snapshot(now=now, cooldown_s=cooldown_s)

    def breaker_states(self) -> dict[str, br.BreakerState]:
        return self.breakers.states()

    # ------------------------------------------------------------------ budgets
    async def budget_reserve(self, lines: Sequence[BudgetLine]) -> str | None:
        return await self.budgets.reserve(lines)

    async def budget_settle(self, lines: Sequence[BudgetLine], actual_usd: float) -> list[tuple[float, float]]:
        return await self.budgets.settle(lines, actual_usd)

    async def budget_release(self, lines: Sequence[BudgetLine]) -> None:
        await self.budgets.release(lines)

    async def budget_add(self, lines: Sequence[BudgetLine], actual_usd: float) -> None:
        await self.budgets.add(lines, actual_usd)

    async def budget_usage(self, key: str) -> tuple[float, float, int]:
        return await self.budgets.usage(key)

    def budget_seed(self, key: str, spent: float, calls: int) -> None:
        self.budgets.seed(key, spent, calls)

    async def budget_prune(self, current: Callable[[str], bool]) -> int:
        return await self.budgets.prune(current)

    # ------------------------------------------------------------------ sessions
    async def session_add(
        self, session: str, *, now: float, cost_usd: float, prompt_tokens: int, completion_tokens: int, ttl_s: float
    ) -> SessionTotals:
        return await self.sessions.add(
            session,
            now=now,
            cost_usd=cost_usd,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            ttl_s=ttl_s,
        )

    async def session_get(self, session: str) -> SessionTotals | None:
        return await self.sessions.get(session)

    async def session_kill(self, session: str, reason: str, *, ttl_s: float, at: float | None = None) -> None:
        await self.sessions.kill(session, reason, ttl_s=ttl_s, at=time.time() if at is None else at)

    async def session_reset(self, session: str, *, before: float) -> bool:
        return await self.sessions.reset(session, before=before)

    # ------------------------------------------------------------------ flags
    async def flag(self, name: str) -> str | None:
        return await self.flags.get(name)

    async def set_flag(self, name: str, value: str | None) -> None:
        await self.flags.set(name, value)

    # ------------------------------------------------------------------ rate and concurrency limits
    async def limit_admit(
        self, counters: Sequence[LimitCounter], *, now: float, tokens: int, lease: str, lease_ttl_s: float
    ) -> tuple[int, float] | None:
        return await self.limits.admit(counters, now=now, tokens=tokens, lease=lease, lease_ttl_s=lease_ttl_s)

    async def limit_release(self, counters: Sequence[LimitCounter], *, now: float, tokens: int, lease: str) -> None:
        await self.limits.release(counters, now=now, tokens=tokens, lease=lease)

    async def limit_renew(self, held: Sequence[tuple[LimitCounter, str]], *, expires_at: float) -> None:
        await self.limits.renew(held, expires_at=expires_at)

    async def limit_usage(self, c: LimitCounter, *, now: float) -> int:
        return await self.limits.usage(c, now=now)
