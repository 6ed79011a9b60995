"""``SharedState`` in Redis, so N gateway replicas share one truth.

Every change is one Lua script, so it is atomic across replicas: breaker
transitions mirror ``router/breaker.py`` exactly (half-open lets ONE probe
through per cooldown, whichever replica asks first), and a budget
reservation checks every line before it increments any (all or nothing).

Keys (``prefix`` defaults to ``tiergate:``)::

    {prefix}breaker:{deployment}  hash failures, opened_at, probe_at, error  (TTL 7 days, renewed on write)
    {prefix}breakers              set of deployments that have a breaker hash (the refresher's index)
    {prefix}budget:{counter key}  hash spent, reserved (nano-dollars), calls  (TTL 40 days, renewed on write)
    {prefix}flag:{name}           string (``latched:`` flags get the counter TTL; others none)

Money is stored as integer nano-dollars (1e-9 USD) with HINCRBY, not as
floats with HINCRBYFLOAT: integer sums are exact, so a reservation that is
reserved and released returns ``reserved`` to exactly 0 (which pruning
relies on) and the limit check never drifts by rounding. Lua numbers are
doubles, exact up to 2**53 units, i.e. about 9 million USD per counter;
nano rather than micro so the smallest calls (a few cents per million
tokens) still count.

The protocol's two sync reads (``breaker_snapshot``, ``breaker_states``)
are served from a local cache that a background task refreshes every
``refresh_s`` and that this replica's own writes update at once. When the
cache has not been refreshed for ``stale_after_s`` they raise
``StateUnavailable`` instead of serving old data.

``budget_seed`` is sync in the protocol; it uses a small blocking client
(one round trip, called at startup) and only ever raises a counter
(spent and calls become the larger of Redis's and the ledger's; reserved is
kept), because other replicas may already be counting in the same window.

No silent fallback: when Redis cannot be reached (or is read-only during
a failover) a method raises ``StateUnavailable`` (HTTP 503) and the caller
decides whether to fail open or closed. Commands are never retried by the
client: a script whose reply was lost may already have run, and running a
reservation twice would double-count it.

Breaker times are the callers' ``now`` (wall clock): replicas need
synchronised clocks (NTP) for cooldowns to agree. Multi-key scripts need
all keys in one slot: on Redis Cluster use a hash-tagged prefix such as
``{tiergate}:`` (pruning scans one node, so a single Redis or Sentinel is
the supported setup).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from tiergate.background import reraise_if_stopping, stop
from tiergate.core import breaker as br
from tiergate.core.errors import StateUnavailable
from tiergate.core.money import BudgetLine, over_limit
from tiergate.state.redis_limits import RedisLimits
from tiergate.state.redis_sessions import RedisSessionTotals

log = logging.getLogger("tiergate.state.memory")

T = TypeVar("T")

NANO = 1_000_000_000  # storage units per USD
COUNTER_TTL_S = 40 * 86400  # longer than the longest budget window (a month)
BREAKER_TTL_S = 7 * 86400  # a breaker nobody touched for a week is forgotten (closed)




# ---------------------------------------------------------------------------- Lua
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

# ARGV: ttl, then per line: amount, limit (-1: none), max_calls (-1: none); all integers.
# Returns {0} when every line was reserved, else {i, spent, reserved, calls} of the first line that does not fit.
_BUDGET_RESERVE = """
for i = 1, #KEYS do
  local c = redis.call('HMGET', KEYS[i], 'spent', 'reserved', 'calls')
  local spent, reserved, calls = tonumber(c[1] or '0'), tonumber(c[2] or '0'), tonumber(c[3] or '0')
  local amount, limit, max_calls = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
  if (max_calls >= 0 and calls + 1 > max_calls) or (limit >= 0 and amount > 0 and spent + reserved + amount > limit) then
    return {i, spent, reserved, calls}
  end
end
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'reserved', ARGV[3*i-1])
  redis.call('HINCRBY', KEYS[i], 'calls', 1)
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return {0}
"""

# ARGV: ttl, actual, then one amount per line. Returns {before1, after1, before2, after2, ...} spent.
_BUDGET_SETTLE = """
local out = {}
for i = 1, #KEYS do
  local c = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  local spent, reserved = tonumber(c[1] or '0'), tonumber(c[2] or '0')
  local back = math.min(reserved, tonumber(ARGV[i+2]))
  if back > 0 then redis.call('HINCRBY', KEYS[i], 'reserved', string.format('%.0f', 0 - back)) end
  out[#out+1] = spent
  out[#out+1] = redis.call('HINCRBY', KEYS[i], 'spent', ARGV[2])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return out
"""

# ARGV: ttl, then one amount per line.
_BUDGET_RELEASE = """
for i = 1, #KEYS do
  local c = redis.call('HMGET', KEYS[i], 'reserved', 'calls')
  local reserved, calls = tonumber(c[1] or '0'), tonumber(c[2] or '0')
  local back = math.min(reserved, tonumber(ARGV[i+1]))
  if back > 0 then redis.call('HINCRBY', KEYS[i], 'reserved', string.format('%.0f', 0 - back)) end
  if calls > 0 then redis.call('HINCRBY', KEYS[i], 'calls', -1) end
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return 0
"""

# ARGV: ttl, spent, calls. Raise-only: another replica may already count in this window.
_BUDGET_SEED = """
local c = redis.call('HMGET', KEYS[1], 'spent', 'calls')
redis.call('HSET', KEYS[1], 'spent', string.format('%.0f', math.max(tonumber(c[1] or '0'), tonumber(ARGV[2]))),
           'calls', string.format('%.0f', math.max(tonumber(c[2] or '0'), tonumber(ARGV[3]))))
redis.call('HSETNX', KEYS[1], 'reserved', 0)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 0
"""

_DELETE_IF_UNRESERVED = """
if tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0') == 0 then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _units(usd: float) -> int:
    return round(usd * NANO)


def _usd(units: int | str | None) -> float:
    return int(units or 0) / NANO


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _glob_escape(s: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", s)


def _breaker_state(failures: str, opened_at: str, probe_at: str, error: str) -> br.BreakerState:
    return br.BreakerState(failures=int(failures or 0), opened_at=float(opened_at) if opened_at else None,
                           probe_started_at=float(probe_at) if probe_at else None, last_error=error or "")


class RedisState(RedisSessionTotals, RedisLimits):
    """``SharedState`` on one Redis; build, ``await start()``, use, ``await close()``."""

    def __init__(self, url: str, *, prefix: str = "tiergate:", refresh_s: float = 0.2, timeout_s: float = 1.0,
                 stale_after_s: float | None = None, max_connections: int = 64) -> None:
        self.url = url
        self.prefix = prefix
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.stale_after_s = stale_after_s if stale_after_s is not None else max(1.0, 5 * refresh_s, 2 * timeout_s)
        self.max_connections = max_connections
        self._where = f"Redis at {_safe_url(url)}"
        self._aio = None  # redis.asyncio.Redis, built in start()
        self._sync = None  # redis.Redis for budget_seed, built on first use
        self._scripts: dict[str, object] = {}
        self._breakers: dict[str, br.BreakerState] = {}
        self._write_seq = 0  # bumped by each local breaker write
        self._written_at: dict[str, int] = {}  # deployment -> _write_seq of its last local write
        self._fresh_at: float | None = None  # monotonic time of the last complete refresh
        self._refresher: asyncio.Task[None] | None = None
        self._failing = False

    # ------------------------------------------------------------------ lifecycle
    def _client_kwargs(self, retry: object) -> dict[str, object]:
        return {"decode_responses": True, "socket_timeout": self.timeout_s, "socket_connect_timeout": self.timeout_s,
                "retry": retry, "health_check_interval": 30}

    async def start(self) -> None:
        """Connect, load the scripts and the breaker cache, start the refresher; raises StateUnavailable."""
        if self._aio is not None:
            return
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # bounded, and a burst waits for a free connection (up to 5 timeouts) instead of failing at once
        pool = BlockingConnectionPool.from_url(self.url, max_connections=self.max_connections,
                                               timeout=5 * self.timeout_s, **self._client_kwargs(Retry(NoBackoff(), 0)))
        self._aio = Redis.from_pool(pool)
        self._scripts = {name: self._aio.register_script(src) for name, src in (
            ("admit", _BREAKER_ADMIT), ("failure", _BREAKER_FAILURE), ("success", _BREAKER_SUCCESS),
            ("unindex", _UNINDEX_IF_GONE), ("reserve", _BUDGET_RESERVE), ("settle", _BUDGET_SETTLE),
            ("release", _BUDGET_RELEASE), ("prune", _DELETE_IF_UNRESERVED))}
        try:
            await self._io("connect", self._aio.ping())
            await self.refresh()
        except BaseException:
            await self.close()
            raise
        self._refresher = asyncio.create_task(self._refresh_forever(), name="tiergate-redis-state-refresh")

    async def close(self) -> None:
        refresher, self._refresher = self._refresher, None
        await stop(refresher)
        if self._aio is not None:
            with contextlib.suppress(Exception):
                await self._aio.aclose()
            self._aio = None
        if self._sync is not None:
            with contextlib.suppress(Exception):
                self._sync.close()
            self._sync = None
        self._fresh_at = None

    # ------------------------------------------------------------------ plumbing
    def _unavailable(self, what: str, exc: BaseException) -> StateUnavailable:
        return StateUnavailable(f"shared state unavailable: {self._where} failed during {what}: "
                                f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _outage_errors() -> tuple[type[BaseException], ...]:
        from redis import exceptions as rx

        return (rx.ConnectionError, rx.TimeoutError, rx.ReadOnlyError, rx.MasterDownError, rx.TryAgainError,
                OSError, asyncio.TimeoutError)

    async def _io(self, what: str, aw: Awaitable[T]) -> T:
        try:
            return await aw
        except self._outage_errors() as exc:
            raise self._unavailable(what, exc) from exc

    def _client(self):  # type: ignore[no-untyped-def]
        if self._aio is None:
            raise RuntimeError("RedisState is not started; await state.start() first")
        return self._aio

    async def _run(self, script: str, what: str, keys: list[str], args: list[object]):  # type: ignore[no-untyped-def]
        self._client()
        return await self._io(what, self._scripts[script](keys=keys, args=args))  # type: ignore[operator]

    def _bkey(self, deployment: str) -> str:
        return f"{self.prefix}breaker:{deployment}"

    @property
    def _bindex(self) -> str:
        return f"{self.prefix}breakers"

    def _ckey(self, key: str) -> str:
        return f"{self.prefix}budget:{key}"

    def _fkey(self, name: str) -> str:
        return f"{self.prefix}flag:{name}"

    # ------------------------------------------------------------------ breakers
    def _remember(self, deployment: str, state: br.BreakerState) -> None:
        self._write_seq += 1
        self._written_at[deployment] = self._write_seq
        if state == br.CLOSED:
            self._breakers.pop(deployment, None)
        else:
            self._breakers[deployment] = state

    async def breaker_admit(self, deployment: str, *, now: float, cooldown_s: float) -> bool:
        ok, *fields = await self._run("admit", f"breaker admit {deployment}", [self._bkey(deployment)],
                                      [repr(float(now)), repr(float(cooldown_s)), BREAKER_TTL_S])
        self._remember(deployment, _breaker_state(*fields))  # what Redis holds now, fresher than the cache
        return bool(ok)

    async def breaker_success(self, deployment: str) -> None:
        await self._run("success", f"breaker success {deployment}", [self._bkey(deployment), self._bindex],
                        [deployment])
        self._remember(deployment, br.CLOSED)

    async def breaker_failure(
        self, deployment: str, *, now: float, threshold: int, error: str, definitive: bool = False
    ) -> br.BreakerState:
        _, *fields = await self._run(
            "failure", f"breaker failure {deployment}", [self._bkey(deployment), self._bindex],
            [repr(float(now)), int(threshold), "1" if definitive else "0", error, BREAKER_TTL_S, deployment])
        state = _breaker_state(*fields)
        self._remember(deployment, state)
        return state

    def _cache(self) -> dict[str, br.BreakerState]:
        if self._fresh_at is None:
            raise RuntimeError("RedisState is not started; await state.start() first")
        age = time.monotonic() - self._fresh_at
        if age > self.stale_after_s:
            raise StateUnavailable(f"shared state unavailable: breaker states from {self._where} are {age:.1f}s old "
                                   f"(refreshed every {self.refresh_s:g}s; stale after {self.stale_after_s:g}s)")
        return self._breakers

    def breaker_snapshot(self, *, now: float, cooldown_s: float) -> dict[str, str]:
        out = {}
        for name, s in self._cache().items():
            why = br.unavailable_reason(s, now=now, cooldown_s=cooldown_s)
            if why:
                out[name] = why
        return out

    def breaker_states(self) -> dict[str, br.BreakerState]:
        return dict(self._cache())

    async def refresh(self) -> None:
        """Reload every breaker from Redis into the local cache (the refresher calls this every refresh_s)."""
        r = self._client()
        seq = self._write_seq
        names = sorted(await self._io("breaker refresh", r.smembers(self._bindex)))
        pipe = r.pipeline(transaction=False)
        for name in names:
            pipe.hmget(self._bkey(name), "failures", "opened_at", "probe_at", "error")
        rows = await self._io("breaker refresh", pipe.execute()) if names else []
        fresh: dict[str, br.BreakerState] = {}
        for name, (failures, opened_at, probe_at, error) in zip(names, rows):
            if failures is None:  # expired: drop it from the index unless a replica just wrote it again
                await self._run("unindex", "breaker refresh", [self._bkey(name), self._bindex], [name])
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
                    log.warning("cannot refresh breaker states: %s", exc, exc_info=not isinstance(exc, StateUnavailable))
                self._failing = True
                continue
            if self._failing:
                log.warning("breaker states refresh from %s works again", self._where)
                self._failing = False

    # ------------------------------------------------------------------ budgets
    async def budget_reserve(self, lines: Sequence[BudgetLine]) -> str | None:
        """Reserve every line or none (one script); returns why not, in ``over_limit``'s words."""
        if not lines:
            return None
        args: list[object] = [COUNTER_TTL_S]
        for line in lines:
            limit = line.limit_usd
            args += [_units(line.amount_usd), -1 if limit is None else _units(limit),
                     -1 if line.max_calls is None else int(line.max_calls)]
        res = await self._run("reserve", "budget reserve", [self._ckey(ln.key) for ln in lines], args)
        if res[0] == 0:
            return None
        line = lines[int(res[0]) - 1]
        spent, reserved, calls = _usd(res[1]), _usd(res[2]), int(res[3])
        why = over_limit(line, spent=spent, reserved=reserved, calls=calls)
        if why is None:  # within a nano-dollar of the limit, where float and integer math may disagree
            why = (f"budget {line.budget.id} ({line.value}): ${spent + reserved:.4f} of ${line.limit_usd:g} used this "
                   f"{line.budget.window}, request needs up to ${line.amount_usd:.4f}")
        return why

    async def budget_settle(self, lines: Sequence[BudgetLine], actual_usd: float) -> list[tuple[float, float]]:
        if not lines:
            return []
        res = await self._run("settle", "budget settle", [self._ckey(ln.key) for ln in lines],
                              [COUNTER_TTL_S, _units(actual_usd), *(_units(ln.amount_usd) for ln in lines)])
        return [(_usd(res[i]), _usd(res[i + 1])) for i in range(0, len(res), 2)]

    async def budget_release(self, lines: Sequence[BudgetLine]) -> None:
        if lines:
            await self._run("release", "budget release", [self._ckey(ln.key) for ln in lines],
                            [COUNTER_TTL_S, *(_units(ln.amount_usd) for ln in lines)])

    async def budget_add(self, lines: Sequence[BudgetLine], actual_usd: float) -> None:
        """Count calls never reserved (served during an outage); one MULTI, unconditional like settled spend."""
        if not lines:
            return
        pipe = self._client().pipeline(transaction=True)
        for ln in lines:
            k = self._ckey(ln.key)
            pipe.hincrby(k, "spent", _units(actual_usd)).hincrby(k, "calls", 1).expire(k, COUNTER_TTL_S)
        await self._io("budget add", pipe.execute())

    async def budget_usage(self, key: str) -> tuple[float, float, int]:
        spent, reserved, calls = await self._io("budget usage", self._client().hmget(
            self._ckey(key), "spent", "reserved", "calls"))
        return _usd(spent), _usd(reserved), int(calls or 0)

    def budget_seed(self, key: str, spent: float, calls: int) -> None:
        """Raise a counter to the ledger's settled spend and calls (blocking; meant for startup)."""
        from redis import Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if self._sync is None:
            self._sync = Redis.from_url(self.url, **self._client_kwargs(Retry(NoBackoff(), 0)))
        try:
            self._sync.eval(_BUDGET_SEED, 1, self._ckey(key), COUNTER_TTL_S, _units(spent), int(calls))
        except self._outage_errors() as exc:
            raise self._unavailable("budget seed", exc) from exc

    async def budget_prune(self, current: Callable[[str], bool]) -> int:
        """Forget counters (and latches) of ended windows that hold no reservation; returns how many went."""
        return await self._io("budget prune", self._prune(current))

    async def _prune(self, current: Callable[[str], bool]) -> int:
        r = self._client()
        gone = 0
        counters = f"{self.prefix}budget:"
        async for k in r.scan_iter(match=_glob_escape(counters) + "*", count=500):
            if not current(k[len(counters):]):
                gone += int(await self._scripts["prune"](keys=[k], args=[]))  # type: ignore[operator]
        latches = f"{self.prefix}flag:latched:"
        stale = [k async for k in r.scan_iter(match=_glob_escape(latches) + "*", count=500)
                 if not current(k[len(latches):])]
        if stale:
            gone += int(await r.delete(*stale))
        return gone

    # ------------------------------------------------------------------ flags
    async def flag(self, name: str) -> str | None:
        return await self._io(f"flag {name}", self._client().get(self._fkey(name)))

    async def set_flag(self, name: str, value: str | None) -> None:
        r = self._client()
        if value is None:
            await self._io(f"set flag {name}", r.delete(self._fkey(name)))
        else:
            ttl = COUNTER_TTL_S if name.startswith("latched:") else None
            await self._io(f"set flag {name}", r.set(self._fkey(name), value, ex=ttl))
