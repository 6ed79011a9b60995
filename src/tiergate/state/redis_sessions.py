"""Guardian session totals in Redis, so a session's spend and age limits hold across replicas.

A mixin of ``RedisState`` (kept apart so each module stays small). One
MULTI per settled request adds its cost and tokens and reads the totals
back; ``first_seen`` is set once (HSETNX), so the age limit counts from the
session's first request on any replica.
"""

from __future__ import annotations

from typing import Any

from tiergate.state.memory import SessionTotals


class RedisSessionTotals:
    prefix: str

    def _client(self) -> Any: ...  # provided by RedisState

    async def _io(self, what: str, aw: Any) -> Any: ...  # provided by RedisState

    def _skey(self, session: str) -> str:
        return f"{self.prefix}session:{session}"

    async def session_add(self, session: str, *, now: float, cost_usd: float, prompt_tokens: int,
                          completion_tokens: int, ttl_s: float) -> SessionTotals:
        from tiergate.state.redis_state import _units

        k = self._skey(session)
        pipe = self._client().pipeline(transaction=True)
        pipe.hsetnx(k, "first_seen", repr(now))
        pipe.hincrby(k, "requests", 1).hincrby(k, "cost", _units(cost_usd))
        pipe.hincrby(k, "prompt", int(prompt_tokens)).hincrby(k, "completion", int(completion_tokens))
        pipe.expire(k, max(1, int(ttl_s)))
        pipe.hmget(k, *FIELDS)
        return _totals((await self._io("session totals", pipe.execute()))[-1])

    async def session_get(self, session: str) -> SessionTotals | None:
        return _totals(await self._io("session read", self._client().hmget(self._skey(session), *FIELDS)))

    async def session_kill(self, session: str, reason: str, *, ttl_s: float) -> None:
        """Mark the session killed for every replica (the first reason stays)."""
        k = self._skey(session)
        pipe = self._client().pipeline(transaction=True)
        pipe.hsetnx(k, "first_seen", "0").hsetnx(k, "killed", reason).expire(k, max(1, int(ttl_s)))
        await self._io("session kill", pipe.execute())


FIELDS = ("first_seen", "requests", "cost", "prompt", "completion", "killed")


def _totals(values: list[Any]) -> SessionTotals | None:
    from tiergate.state.redis_state import _usd

    first, requests, cost, prompt, completion, killed = values
    if first is None:
        return None
    return SessionTotals(first_seen=float(first), requests=int(requests or 0), cost_usd=_usd(cost),
                         prompt_tokens=int(prompt or 0), completion_tokens=int(completion or 0), killed_reason=killed)
