"""Guardian session totals in Redis, so a session's spend and age limits hold across replicas.

One MULTI per settled request adds its cost and tokens and reads the totals
back; ``first_seen`` is set once (HSETNX), so the age limit counts from the
session's first request on any replica.

Keys (``prefix`` as in ``RedisState``)::

    {prefix}session:{session}  hash first_seen, requests, cost (nano-dollars), prompt, completion, killed,
                               killed_at

A lifted kill (expired, or revived by hand) starts the session afresh: ``reset``
deletes the hash when its life began before the lift, in one script, so
every replica may ask and only totals of the life that ended go.
"""

from __future__ import annotations

from typing import Any

from tiergate.state.base import SessionTotals
from tiergate.state.redis_conn import RedisConnection, to_units, to_usd

FIELDS = ("first_seen", "requests", "cost", "prompt", "completion", "killed", "killed_at")

_RESET_OLDER = """
local first = redis.call('HGET', KEYS[1], 'first_seen')
if first and tonumber(first) < tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class RedisSessions:
    """Add to, read and kill a session's totals; each key lives ``ttl_s`` after its last write."""

    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        conn.add_scripts({"session_reset": _RESET_OLDER})

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

    async def kill(self, session: str, reason: str, *, ttl_s: float, at: float) -> None:
        """Mark the session killed for every replica (the first reason and time stay)."""
        k = self._skey(session)
        pipe = self.conn.client().pipeline(transaction=True)
        pipe.hsetnx(k, "first_seen", "0").hsetnx(k, "killed", reason).hsetnx(k, "killed_at", repr(at))
        pipe.expire(k, max(1, int(ttl_s)))
        await self.conn.io("session kill", pipe.execute())

    async def reset(self, session: str, *, before: float) -> bool:
        return bool(await self.conn.run("session_reset", "session reset", [self._skey(session)], [repr(before)]))


def _totals(values: list[Any]) -> SessionTotals | None:
    first, requests, cost, prompt, completion, killed, killed_at = values
    if first is None:
        return None
    return SessionTotals(
        first_seen=float(first),
        requests=int(requests or 0),
        cost_usd=to_usd(cost),
        prompt_tokens=int(prompt or 0),
        completion_tokens=int(completion or 0),
        killed_reason=killed,
        killed_at=None if killed_at is None else float(killed_at),
    )
