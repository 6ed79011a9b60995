"""Guardian session totals in Redis, so a session's spend and age limits hold across replicas.

One MULTI per settled request adds its cost and tokens and reads the totals
back; ``first_seen`` is set once (HSETNX), so the age limit counts from the
session's first request on any replica.

Keys (``prefix`` as in ``RedisState``)::

    {prefix}session:{session}  hash first_seen, requests, cost (nano-dollars), prompt, completion, killed
"""

from __future__ import annotations

from typing import Any

from tiergate.state.base import SessionTotals
from tiergate.state.redis_conn import RedisConnection, to_units, to_usd

FIELDS = ("first_seen", "requests", "cost", "prompt", "completion", "killed")


class RedisSessions:
    """Add to, read and kill a session's totals; each key lives ``ttl_s`` after its last write."""

    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn

    def _skey(self, session: str) -> str:
        return f"{self.conn.prefix}session:{session}"

    async def add(
        self, session: str, *, now: float, cost_usd: float, prompt_tokens: int, completion_tokens: int, ttl_s: float
    ) -> SessionTotals:
        k = self._skey(session)
        pipe = self.conn.client().pipeline(transaction=True)
        pipe.hsetnx(k, "first_seen", repr(now))
        pipe.hincrby(k, "requests", 1).hincrby(k, "cost", to_units(cost_usd))
        pipe.hincrby(k, "prompt", int(prompt_tokens)).hincrby(k, "completion", int(completion_tokens))
        pipe.expire(k, max(1, int(ttl_s)))
        pipe.hmget(k, *FIELDS)
        totals = _totals((await self.conn.io("session totals", pipe.execute()))[-1])
        assert totals is not None, "the same MULTI set first_seen"
        return totals

    async def get(self, session: str) -> SessionTotals | None:
        return _totals(await self.conn.io("session read", self.conn.client().hmget(self._skey(session), *FIELDS)))

    async def kill(self, session: str, reason: str, *, ttl_s: float) -> None:
        """Mark the session killed for every replica (the first reason stays)."""
        k = self._skey(session)
        pipe = self.conn.client().pipeline(transaction=True)
        pipe.hsetnx(k, "first_seen", "0").hsetnx(k, "killed", reason).expire(k, max(1, int(ttl_s)))
        await self.conn.io("session kill", pipe.execute())


def _totals(values: list[Any]) -> SessionTotals | None:
    first, requests, cost, prompt, completion, killed = values
    if first is None:
        return None
    return SessionTotals(
        first_seen=float(first),
        requests=int(requests or 0),
        cost_usd=to_usd(cost),
        prompt_tokens=int(prompt or 0),
        completion_tokens=int(completion or 0),
        killed_reason=killed,
    )
