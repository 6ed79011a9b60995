"""Rate windows and concurrency leases in Redis: the limits part of ``RedisState``.

Each change is one Lua script, so admission is atomic across replicas and
all or nothing across the counters of a request (never read-then-write).
Same semantics as ``memory_limits.MemoryLimits``.

Keys (``prefix`` as in ``RedisState``)::

    {prefix}limit:rpm:{key}              sorted set: member = lease, score = admission time
    {prefix}limit:tpm:{key}              sorted set: member = "{lease}:{p|c}:{tokens}", score = time
    {prefix}limit:tpm:{key}:total        string: sum of the tokens in that set (kept by the scripts)
    {prefix}limit:max_concurrent:{key}   sorted set: member = lease, score = lease expiry

Every write renews the key's TTL (``KEY_TTL_S``), so counters nobody uses
disappear. Trimming happens inside admission: entries at or before
``now - 60`` leave the windows, leases at or before ``now`` expire, so a
replica that died holding slots blocks nobody for longer than a lease.

Times are the callers' wall clock, as for breakers (replicas need NTP), and
travel as exact decimal strings (Lua would print a number with 14 digits).
"""

from __future__ import annotations

from collections.abc import Sequence

from tiergate.core.limits import LEASE_TTL_S, WINDOW_S, LimitCounter
from tiergate.state.redis_conn import RedisConnection

KEY_TTL_S = int(2 * max(WINDOW_S, LEASE_TTL_S))

# Shared by the scripts: the token total of a window after dropping entries at or before `before`.
# Rebuilt from the set when the total is missing or the set is empty (each key expires on its own).
_TRIM_TOKENS = """
local function weight(m) return tonumber(string.match(m, '(%d+)$')) end
local function trim_tokens(z, total, before)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', before)
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', before) end
  local t = redis.call('GET', total)
  if redis.call('ZCARD', z) == 0 then
    if t then redis.call('DEL', total) end
    return 0
  end
  if not t then
    local sum = 0
    for _, m in ipairs(redis.call('ZRANGE', z, 0, -1)) do sum = sum + weight(m) end
    redis.call('SET', total, sum)
    return sum
  end
  local freed = 0
  for _, m in ipairs(gone) do freed = freed + weight(m) end
  if freed > 0 then return redis.call('DECRBY', total, freed) end
  return tonumber(t)
end
"""

# KEYS: per counter its set (and, for tpm, its total right after).
# ARGV: now, window start (now - 60), lease expiry, tokens, lease, key ttl, then per counter: kind, cap.
# Returns {0} when admitted, else {i, seconds to wait ('0': unknown)} for the first counter without room.
_LIMIT_ADMIT = (
    _TRIM_TOKENS
    + """
local now, before, expires, tokens, lease, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local window = tonumber(ARGV[1]) - tonumber(ARGV[2])
local n = (#ARGV - 6) / 2
local k = 1
for i = 1, n do
  local kind, cap = ARGV[5 + 2*i], tonumber(ARGV[6 + 2*i])
  local z = KEYS[k]
  if kind == 'rpm' then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', before)
    local count = redis.call('ZCARD', z)
    if count >= cap then
      local at = redis.call('ZRANGE', z, count - cap, count - cap, 'WITHSCORES')[2]
      return {i, string.format('%.6f', tonumber(at) + window - tonumber(now))}
    end
    k = k + 1
  elseif kind == 'tpm' then
    local used = trim_tokens(z, KEYS[k + 1], before)
    if not (used + tokens <= cap or used == 0) then
      local need, freed, at = used + tokens - cap, 0, nil
      local all = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
      for j = 1, #all, 2 do
        freed = freed + weight(all[j])
        at = all[j + 1]
        if freed >= need then break end
      end
      return {i, string.format('%.6f', tonumber(at) + window - tonumber(now))}
    end
    k = k + 2
  else
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    if redis.call('ZCARD', z) >= cap then return {i, '0'} end
    k = k + 1
  end
end
k = 1
for i = 1, n do
  local kind = ARGV[5 + 2*i]
  local z = KEYS[k]
  if kind == 'rpm' then
    redis.call('ZADD', z, now, lease)
    redis.call('EXPIRE', z, ttl)
    k = k + 1
  elseif kind == 'tpm' then
    if tokens > 0 then
      redis.call('ZADD', z, now, lease .. ':p:' .. ARGV[4])
      redis.call('INCRBY', KEYS[k + 1], tokens)
      redis.call('EXPIRE', z, ttl)
      redis.call('EXPIRE', KEYS[k + 1], ttl)
    end
    k = k + 2
  else
    redis.call('ZADD', z, expires, lease)
    redis.call('EXPIRE', z, ttl)
    k = k + 1
  end
end
return {0}
"""
)

# KEYS as for admit. ARGV: now, tokens, lease, key ttl, then one kind per counter.
_LIMIT_RELEASE = """
local now, tokens, lease, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local k = 1
for i = 5, #ARGV do
  local z = KEYS[k]
  if ARGV[i] == 'tpm' then
    if tokens > 0 and redis.call('ZADD', z, now, lease .. ':c:' .. ARGV[2]) == 1 then
      redis.call('INCRBY', KEYS[k + 1], tokens)
      redis.call('EXPIRE', z, ttl)
      redis.call('EXPIRE', KEYS[k + 1], ttl)
    end
    k = k + 2
  else
    if ARGV[i] == 'max_concurrent' then redis.call('ZREM', z, lease) end
    k = k + 1
  end
end
return 0
"""

# KEYS: lease sets. ARGV: expiry, key ttl, then one lease per key. Only leases still held move (XX).
_LIMIT_RENEW = """
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', ARGV[1], ARGV[i + 2])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return 0
"""

LIMIT_SCRIPTS = {"limit_admit": _LIMIT_ADMIT, "limit_release": _LIMIT_RELEASE, "limit_renew": _LIMIT_RENEW}


def _t(x: float) -> str:
    return repr(float(x))


class RedisLimits:
    """Admit, release, renew and read rate windows and concurrency leases, each change one script."""

    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        conn.add_scripts(LIMIT_SCRIPTS)

    def _lkeys(self, c: LimitCounter) -> list[str]:
        z = f"{self.conn.prefix}limit:{c.kind}:{c.key}"
        return [z, f"{z}:total"] if c.kind == "tpm" else [z]

    async def admit(
        self, counters: Sequence[LimitCounter], *, now: float, tokens: int, lease: str, lease_ttl_s: float
    ) -> tuple[int, float] | None:
        """Count the request in every counter or none (one script): None when admitted, else (index, wait s)."""
        if not counters:
            return None
        keys: list[str] = []
        args: list[object] = [_t(now), _t(now - WINDOW_S), _t(now + lease_ttl_s), int(tokens), lease, KEY_TTL_S]
        for c in counters:
            keys += self._lkeys(c)
            args += [c.kind, int(c.cap)]
        res = await self.conn.run("limit_admit", "limit admit", keys, args)
        if int(res[0]) == 0:
            return None
        return int(res[0]) - 1, max(0.0, float(res[1]))

    async def release(self, counters: Sequence[LimitCounter], *, now: float, tokens: int, lease: str) -> None:
        """The request ended: free its slots, add its late tokens (completion) to the token windows."""
        todo = [c for c in counters if c.kind == "max_concurrent" or (c.kind == "tpm" and tokens > 0)]
        if not todo:
            return
        keys = [k for c in todo for k in self._lkeys(c)]
        await self.conn.run(
            "limit_release", "limit release", keys, [_t(now), int(tokens), lease, KEY_TTL_S, *(c.kind for c in todo)]
        )

    async def renew(self, held: Sequence[tuple[LimitCounter, str]], *, expires_at: float) -> None:
        """Push back the expiry of leases still held; a lease already taken back stays gone."""
        if held:
            await self.conn.run(
                "limit_renew",
                "limit renew",
                [self._lkeys(c)[0] for c, _ in held],
                [_t(expires_at), KEY_TTL_S, *(lease for _, lease in held)],
            )

    async def usage(self, c: LimitCounter, *, now: float) -> int:
        """Requests or tokens in the last 60 s, or leases in flight (read only)."""
        r = self.conn.client()
        z = self._lkeys(c)[0]
        if c.kind == "rpm":
            return int(await self.conn.io("limit usage", r.zcount(z, f"({_t(now - WINDOW_S)}", "+inf")))
        if c.kind == "max_concurrent":
            return int(await self.conn.io("limit usage", r.zcount(z, f"({_t(now)}", "+inf")))
        members = await self.conn.io("limit usage", r.zrangebyscore(z, f"({_t(now - WINDOW_S)}", "+inf"))
        return sum(int(m.rsplit(":", 1)[1]) for m in members)
