"""Circuit breakers in Redis, shared by every replica, with a local cache for the sync reads.

Every transition is one Lua script, so it is atomic across replicas and
mirrors ``core/breaker.py`` exactly: half-open lets ONE probe through per
cooldown, whichever replica asks first.

Keys (``prefix`` as in ``RedisState``)::

    {prefix}breaker:{deployment}  hash failures, opened_at, probe_at, error  (TTL 7 days, renewed on write)
    {prefix}breakers              set of deployments that have a breaker hash (the refresher's index)

The protocol's two sync reads (``breaker_snapshot``, ``breaker_states``)
are served from a local cache that a background task refreshes every
``refresh_s`` and that this replica's own writes update at once. When the
cache has not been refreshed for ``stale_after_s`` they raise
``StateUnavailable`` instead of serving old data.

Breaker times are the callers' ``now`` (wall clock): replicas need
synchronised clocks (NTP) for cooldowns to agree.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tiergate.background import reraise_if_stopping, stop
from tiergate.core import breaker as br
from tiergate.core.errors import StateUnavailable
from tiergate.state.redis_conn import RedisConnection

log = logging.getLogger("tiergate.state")

BREAKER_TTL_S = 7 * 86400  # a breaker nobody touched for a week is forgotten (closed)

# Returned breaker states are {ok, failures, opened_at, probe_at, error} with
# the times as the strings the hash holds ('' for none), so no float is ever
# truncated by Redis's integer conversion of Lua numbers.

_BREAKER_ADMIT = """
local f = redis.call('HMGET', KEYS[1], 'failures', 'opened_at', 'probe_at', 'error')
local failures, opened_at, probe_at, err = f[1] or '0', f[2] or '', f[3] or '', f[4] or ''
if opened_at == '' then return {1, failures, opened_at, probe_at, err} end
local now, cooldown = tonumber(ARGV[1]), tonumber(ARGV[2])
if now - tonumber(opened_at) < cooldown then return {0, failures, opened_at, probe_at, err} end
if probe_at ~= '' and now - tonumber(probe_at) < cooldown then return {0, failures, opened_at, probe_at, err} end
redis.call('HSET', KEYS[1], 'probe_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, failures, opened_at, ARGV[1], err}
"""

_BREAKER_FAILURE = """
local f = redis.call('HMGET', KEYS[1], 'failures', 'opened_at', 'probe_at')
local failures = tonumber(f[1] or '0') + 1
local opened_at, probe_at = f[2] or '', f[3] or ''
if ARGV[3] == '1' or failures >= tonumber(ARGV[2]) or opened_at ~= '' then
  opened_at, probe_at = ARGV[1], ''
  redis.call('HDEL', KEYS[1], 'probe_at')
end
redis.call('HSET', KEYS[1], 'failures', failures, 'error', ARGV[4])
if opened_at ~= '' then redis.call('HSET', KEYS[1], 'opened_at', opened_at) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('SADD', KEYS[2], ARGV[6])
return {0, tostring(failures), opened_at, probe_at, ARGV[4]}
"""

_BREAKER_SUCCESS = """
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"""

_UNINDEX_IF_GONE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.call('SREM', KEYS[2], ARGV[1]) end
return 0
"""

BREAKER_SCRIPTS = {
    "breaker_admit": _BREAKER_ADMIT,
    "breaker_failure": _BREAKER_FAILURE,
    "breaker_success": _BREAKER_SUCCESS,
    "breaker_unindex": _UNINDEX_IF_GONE,
}


def _breaker_state(failures: str, opened_at: str, probe_at: str, error: str) -> br.BreakerState:
    return br.BreakerState(
        failures=int(failures or 0),
        opened_at=float(opened_at) if opened_at else None,
        probe_started_at=float(probe_at) if probe_at else None,
        last_error=error or "",
    )


class RedisBreakers:
    """Breaker transitions in Redis, the cache the sync reads serve, and the task that refreshes it."""

    def __init__(self, conn: RedisConnection, *, refresh_s: float, stale_after_s: float) -> None:
        self.conn = conn
        self.refresh_s = refresh_s
        self.stale_after_s = stale_after_s
        conn.add_scripts(BREAKER_SCRIPTS)
        self._breakers: dict[str, br.BreakerState] = {}
        self._write_seq = 0  # bumped by each local breaker write
        self._written_at: dict[str, int] = {}  # deployment -> _write_seq of its last local write
        self._fresh_at: float | None = None  # monotonic time of the last complete refresh
        self._refresher: asyncio.Task[None] | None = None
        self._failing = False

    def _bkey(self, deployment: str) -> str:
        return f"{self.conn.prefix}breaker:{deployment}"

    @property
    def _bindex(self) -> str:
        return f"{self.conn.prefix}breakers"

    # ------------------------------------------------------------------ lifecycle
    def start_refresher(self) -> None:
        self._refresher = asyncio.create_task(self._refresh_forever(), name="tiergate-redis-state-refresh")

    async def stop_refresher(self) -> None:
        refresher, self._refresher = self._refresher, None
        await stop(refresher)

    def forget(self) -> None:
        """The connection closed: the cache is no longer fresh (reads raise until the next refresh)."""
        self._fresh_at = None

    # ------------------------------------------------------------------ transitions
    def _remember(self, deployment: str, state: br.BreakerState) -> None:
        self._write_seq += 1
        self._written_at[deployment] = self._write_seq
        if state == br.CLOSED:
            self._breakers.pop(deployment, None)
        else:
            self._breakers[deployment] = state

    async def admit(self, deployment: str, *, now: float, cooldown_s: float) -> bool:
        ok, *fields = await self.conn.run(
            "breaker_admit",
            f"breaker admit {deployment}",
            [self._bkey(deployment)],
            [repr(float(now)), repr(float(cooldown_s)), BREAKER_TTL_S],
        )
        self._remember(deployment, _breaker_state(*fields))  # what Redis holds now, fresher than the cache
        return bool(ok)

    async def success(self, deployment: str) -> None:
        await self.conn.run(
            "breaker_success", f"breaker success {deployment}", [self._bkey(deployment), self._bindex], [deployment]
        )
        self._remember(deployment, br.CLOSED)

    async def failure(
        self, deployment: str, *, now: float, threshold: int, error: str, definitive: bool = False
    ) -> br.BreakerState:
        _, *fields = await self.conn.run(
            "breaker_failure",
            f"breaker failure {deployment}",
            [self._bkey(deployment), self._bindex],
            [repr(float(now)), int(threshold), "1" if definitive else "0", error, BREAKER_TTL_S, deployment],
        )
        state = _breaker_state(*fields)
        self._remember(deployment, state)
        return state

    # ------------------------------------------------------------------ sync reads, from the cache
    def _cache(self) -> dict[str, br.BreakerState]:
        if self._fresh_at is None:
            raise RuntimeError("RedisState is not started; await state.start() first")
        age = time.monotonic() - self._fresh_at
        if age > self.stale_after_s:
            raise StateUnavailable(
                f"shared state unavailable: breaker states from {self.conn.where} are {age:.1f}s "
                f"old (refreshed every {self.refresh_s:g}s; stale after {self.stale_after_s:g}s)"
            )
        return self._breakers

    def snapshot(self, *, now: float, cooldown_s: float) -> dict[str, str]:
        out = {}
        for name, s in self._cache().items():
            why = br.unavailable_reason(s, now=now, cooldown_s=cooldown_s)
            if why:
                out[name] = why
        return out

    def states(self) -> dict[str, br.BreakerState]:
        return dict(self._cache())

    # ------------------------------------------------------------------ refresh
    async def refresh(self) -> None:
        """Reload every breaker from Redis into the local cache (the refresher calls this every refresh_s)."""
        r = self.conn.client()
        seq = self._write_seq
        names = sorted(await self.conn.io("breaker refresh", r.smembers(self._bindex)))
        pipe = r.pipeline(transaction=False)
        for name in names:
            pipe.hmget(self._bkey(name), "failures", "opened_at", "probe_at", "error")
        rows = await self.conn.io("breaker refresh", pipe.execute()) if names else []
        fresh: dict[str, br.BreakerState] = {}
        for name, (failures, opened_at, probe_at, error) in zip(names, rows, strict=True):
            if failures is None:  # expired: drop it from the index unless a replica just wrote it again
                await self.conn.run("breaker_unindex", "breaker refresh", [self._bkey(name), self._bindex], [name])
                continue
            fresh[name] = _breaker_state(failures, opened_at or "", probe_at or "", error or "")
        # a write of our own that landed while we were reading is newer than what we read
        for name, at in self._written_at.items():
            if at > seq:
                if name in self._breakers:
                    fresh[name] = self._breakers[name]
                else:
                    fresh.pop(name, None)
        self._written_at = {n: at for n, at in self._written_at.items() if at > seq}
        self._breakers = fresh
        self._fresh_at = time.monotonic()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # keep refreshing; readers see the staleness and raise
                reraise_if_stopping(exc)
                if not self._failing:
                    log.warning(
                        "cannot refresh breaker states: %s", exc, exc_info=not isinstance(exc, StateUnavailable)
                    )
                self._failing = True
                continue
            if self._failing:
                log.warning("breaker states refresh from %s works again", self.conn.where)
                self._failing = False
