"""Budget counters and flags in Redis, shared by every replica.

A reservation is one Lua script that checks every line before it
increments any (all or nothing), so no two replicas can both take the last
dollar. Flags live here too because budgets latch through them
(``latched:{counter key}`` flags share the counters' TTL and are pruned
with them); the emergency switch is a flag without a TTL.

Keys (``prefix`` as in ``RedisState``)::

    {prefix}budget:{counter key}  hash spent, reserved (nano-dollars), calls  (TTL 40 days, renewed on write)
    {prefix}flag:{name}           string (``latched:`` flags get the counter TTL; others none)

Money is stored as integer nano-dollars (1e-9 USD) with HINCRBY, not as
floats with HINCRBYFLOAT: integer sums are exact, so a reservation that is
reserved and released returns ``reserved`` to exactly 0 (which pruning
relies on) and the limit check never drifts by rounding. Lua numbers are
doubles, exact up to 2**53 units, i.e. about 9 million USD per counter;
nano rather than micro so the smallest calls (a few cents per million
tokens) still count.

``budget_seed`` is sync in the protocol; it uses a small blocking client
(one round trip, called at startup) and only ever raises a counter
(spent and calls become the larger of Redis's and the ledger's; reserved is
kept), because other replicas may already be counting in the same window.

Pruning scans one node, so a single Redis or Sentinel is the supported
setup for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tiergate.core.money import BudgetLine, over_limit, usd_text
from tiergate.state.redis_conn import RedisConnection, glob_escape, to_units, to_usd

COUNTER_TTL_S = 40 * 86400  # longer than the longest budget window (a month)

# ARGV: ttl, then per line: amount, limit (-1: none), max_calls (-1: none); all integers.
# Returns {0} when every line was reserved, else {i, spent, reserved, calls} of the first line that does not fit.
_BUDGET_RESERVE = """
for i = 1, #KEYS do
  local c = redis.call('HMGET', KEYS[i], 'spent', 'reserved', 'calls')
  local spent, reserved, calls = tonumber(c[1] or '0'), tonumber(c[2] or '0'), tonumber(c[3] or '0')
  local amount, limit, max_calls = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
  if (max_calls >= 0 and calls + 1 > max_calls)
      or (limit >= 0 and amount > 0 and spent + reserved + amount > limit) then
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

BUDGET_SCRIPTS = {
    "budget_reserve": _BUDGET_RESERVE,
    "budget_settle": _BUDGET_SETTLE,
    "budget_release": _BUDGET_RELEASE,
    "budget_prune": _DELETE_IF_UNRESERVED,
}


def _fkey(prefix: str, name: str) -> str:
    return f"{prefix}flag:{name}"


class RedisBudgets:
    """Reserve, settle, release and count budget lines; seed from the ledger; prune ended windows."""

    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        conn.add_scripts(BUDGET_SCRIPTS)

    def _ckey(self, key: str) -> str:
        return f"{self.conn.prefix}budget:{key}"

    async def reserve(self, lines: Sequence[BudgetLine]) -> str | None:
        """Reserve every line or none (one script); returns why not, in ``over_limit``'s words."""
        if not lines:
            return None
        args: list[object] = [COUNTER_TTL_S]
        for line in lines:
            limit = line.limit_usd
            args += [
                to_units(line.amount_usd),
                -1 if limit is None else to_units(limit),
                -1 if line.max_calls is None else int(line.max_calls),
            ]
        res = await self.conn.run("budget_reserve", "budget reserve", [self._ckey(ln.key) for ln in lines], args)
        if res[0] == 0:
            return None
        line = lines[int(res[0]) - 1]
        spent, reserved, calls = to_usd(res[1]), to_usd(res[2]), int(res[3])
        why = over_limit(line, spent=spent, reserved=reserved, calls=calls)
        if why is None:  # within a nano-dollar of the limit, where float and integer math may disagree
            why = (
                f"budget {line.budget.id} ({line.value}): ${usd_text(spent + reserved)} of ${line.limit_usd:g} used "
                f"this {line.budget.window}, request needs up to ${usd_text(line.amount_usd)}"
            )
        return why

    async def settle(self, lines: Sequence[BudgetLine], actual_usd: float) -> list[tuple[float, float]]:
        if not lines:
            return []
        res = await self.conn.run(
            "budget_settle",
            "budget settle",
            [self._ckey(ln.key) for ln in lines],
            [COUNTER_TTL_S, to_units(actual_usd), *(to_units(ln.amount_usd) for ln in lines)],
        )
        return [(to_usd(res[i]), to_usd(res[i + 1])) for i in range(0, len(res), 2)]

    async def release(self, lines: Sequence[BudgetLine]) -> None:
        if lines:
            await self.conn.run(
                "budget_release",
                "budget release",
                [self._ckey(ln.key) for ln in lines],
                [COUNTER_TTL_S, *(to_units(ln.amount_usd) for ln in lines)],
            )

    async def add(self, lines: Sequence[BudgetLine], actual_usd: float) -> None:
        """Count calls never reserved (served during an outage); one MULTI, unconditional like settled spend."""
        if not lines:
            return
        pipe = self.conn.client().pipeline(transaction=True)
        for ln in lines:
            k = self._ckey(ln.key)
            pipe.hincrby(k, "spent", to_units(actual_usd)).hincrby(k, "calls", 1).expire(k, COUNTER_TTL_S)
        await self.conn.io("budget add", pipe.execute())

    async def usage(self, key: str) -> tuple[float, float, int]:
        spent, reserved, calls = await self.conn.io(
            "budget usage", self.conn.client().hmget(self._ckey(key), "spent", "reserved", "calls")
        )
        return to_usd(spent), to_usd(reserved), int(calls or 0)

    def seed(self, key: str, spent: float, calls: int) -> None:
        """Raise a counter to the ledger's settled spend and calls (blocking; meant for startup)."""
        self.conn.run_sync(
            "budget seed",
            lambda r: r.eval(_BUDGET_SEED, 1, self._ckey(key), COUNTER_TTL_S, to_units(spent), int(calls)),
        )

    async def prune(self, current: Callable[[str], bool]) -> int:
        """Forget counters (and latches) of ended windows that hold no reservation; returns how many went."""
        return await self.conn.io("budget prune", self._prune(current))

    async def _prune(self, current: Callable[[str], bool]) -> int:
        r = self.conn.client()
        gone = 0
        counters = f"{self.conn.prefix}budget:"
        delete_if_unreserved = self.conn.script("budget_prune")
        async for k in r.scan_iter(match=glob_escape(counters) + "*", count=500):
            if not current(k[len(counters) :]):
                gone += int(await delete_if_unreserved(keys=[k], args=[]))
        latches = _fkey(self.conn.prefix, "latched:")
        stale = [
            k async for k in r.scan_iter(match=glob_escape(latches) + "*", count=500) if not current(k[len(latches) :])
        ]
        if stale:
            gone += int(await r.delete(*stale))
        return gone


class RedisFlags:
    """Named string flags: the emergency switch (no TTL) and budget latches (the counters' TTL)."""

    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn

    async def get(self, name: str) -> str | None:
        value: str | None = await self.conn.io(f"flag {name}", self.conn.client().get(_fkey(self.conn.prefix, name)))
        return value

    async def set(self, name: str, value: str | None) -> None:
        r = self.conn.client()
        if value is None:
            await self.conn.io(f"set flag {name}", r.delete(_fkey(self.conn.prefix, name)))
        else:
            ttl = COUNTER_TTL_S if name.startswith("latched:") else None
            await self.conn.io(f"set flag {name}", r.set(_fkey(self.conn.prefix, name), value, ex=ttl))
