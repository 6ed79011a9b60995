"""Rate windows and concurrency leases in the process: the limits part of ``MemoryState``.

Same semantics as the Redis scripts (``redis_limits``), so the
contract suite runs one set of tests on both: an entry made at ``t`` counts
while ``now - t < 60``; a lease counts while ``now < expiry``; admission
checks every counter before it adds to any (all or nothing). Nothing awaits
inside an update, so one event loop makes each call atomic.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from tiergate.core.limits import WINDOW_S, LimitCounter, tokens_fit

SWEEP_EVERY = 4096  # admissions between sweeps that forget idle counters


class _Tokens:
    """Token entries of one window, oldest first, their running total, and who made them (once each)."""

    __slots__ = ("entries", "members", "total")

    def __init__(self) -> None:
        self.entries: list[tuple[float, int, str]] = []
        self.total = 0
        self.members: set[str] = set()

    def trim(self, before: float) -> int:
        i = bisect.bisect_right(self.entries, before, key=lambda e: e[0])
        if i:
            for _, w, m in self.entries[:i]:
                self.total -= w
                self.members.discard(m)
            del self.entries[:i]
        return self.total

    def add(self, t: float, tokens: int, member: str) -> None:
        if member not in self.members:
            bisect.insort_right(self.entries, (t, tokens, member), key=lambda e: e[0])
            self.total += tokens
            self.members.add(member)


class MemoryLimits:
    """Requests and tokens per sliding minute, concurrency leases; ``MemoryState.limit_*`` call these."""

    def __init__(self) -> None:
        self._hits: dict[str, list[float]] = {}  # rpm key -> admission times, sorted
        self._tokens: dict[str, _Tokens] = {}  # tpm key -> entries
        self._leases: dict[str, dict[str, float]] = {}  # max_concurrent key -> lease -> expiry
        self._admits = 0

    def _wait(self, c: LimitCounter, *, now: float, tokens: int) -> float | None:
        """None when the counter has room, else seconds until it may (0: unknown)."""
        if c.kind == "rpm":
            hits = self._hits.get(c.key)
            if not hits:
                return None
            del hits[: bisect.bisect_right(hits, now - WINDOW_S)]
            if len(hits) < c.cap:
                return None
            return hits[len(hits) - c.cap] + WINDOW_S - now
        if c.kind == "tpm":
            win = self._tokens.get(c.key)
            if win is None:
                return None
            used = win.trim(now - WINDOW_S)
            if tokens_fit(used, tokens, c.cap):
                return None
            need, freed = used + tokens - c.cap, 0
            for t, w, _ in win.entries:
                freed += w
                if freed >= need:
                    return t + WINDOW_S - now
            return win.entries[-1][0] + WINDOW_S - now
        leases = self._leases.get(c.key)
        if not leases:
            return None
        for lease in [ls for ls, exp in leases.items() if exp <= now]:
            del leases[lease]
        return None if len(leases) < c.cap else 0.0

    def admit(
        self, counters: Sequence[LimitCounter], *, now: float, tokens: int, lease: str, lease_ttl_s: float
    ) -> tuple[int, float] | None:
        """Count the request in every counter, or in none: None when admitted, else (index, seconds to wait)."""
        for i, c in enumerate(counters):
            wait = self._wait(c, now=now, tokens=tokens)
            if wait is not None:
                return i, max(0.0, wait)
        for c in counters:
            if c.kind == "rpm":
                bisect.insort_right(self._hits.setdefault(c.key, []), now)
            elif c.kind == "tpm":
                if tokens > 0:
                    self._tokens.setdefault(c.key, _Tokens()).add(now, tokens, f"{lease}:p")
            else:
                self._leases.setdefault(c.key, {})[lease] = now + lease_ttl_s
        self._admits += 1
        if self._admits % SWEEP_EVERY == 0:
            self._sweep(now)
        return None

    def release(self, counters: Sequence[LimitCounter], *, now: float, tokens: int, lease: str) -> None:
        """The request ended: free its slots, add its late tokens (completion) to the token windows, once."""
        for c in counters:
            if c.kind == "max_concurrent":
                leases = self._leases.get(c.key)
                if leases is not None:
                    leases.pop(lease, None)
            elif c.kind == "tpm" and tokens > 0:
                self._tokens.setdefault(c.key, _Tokens()).add(now, tokens, f"{lease}:c")

    def renew(self, held: Sequence[tuple[LimitCounter, str]], *, expires_at: float) -> None:
        """Push back the expiry of leases still held; a lease already taken back stays gone."""
        for c, lease in held:
            leases = self._leases.get(c.key)
            if leases is not None and lease in leases:
                leases[lease] = expires_at

    def usage(self, c: LimitCounter, *, now: float) -> int:
        """Requests or tokens in the last 60 s, or leases in flight."""
        if c.kind == "rpm":
            return sum(1 for t in self._hits.get(c.key, ()) if now - t < WINDOW_S)
        if c.kind == "tpm":
            win = self._tokens.get(c.key)
            return sum(w for t, w, _ in win.entries if now - t < WINDOW_S) if win else 0
        return sum(1 for exp in self._leases.get(c.key, {}).values() if exp > now)

    def _sweep(self, now: float) -> None:
        """Forget counters with nothing left in them (agents that went away), so memory stays bounded."""
        before = now - WINDOW_S
        for k in [k for k, hits in self._hits.items() if not hits or hits[-1] <= before]:
            del self._hits[k]
        for k in [k for k, win in self._tokens.items() if not win.entries or win.entries[-1][0] <= before]:
            del self._tokens[k]
        for k in [k for k, leases in self._leases.items() if all(exp <= now for exp in leases.values())]:
            del self._leases[k]
