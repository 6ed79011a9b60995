"""Failed authentications per client address: a small GCRA, bounded in memory.

Only the failing path is throttled: the key is checked first and a valid one
is served, so one address guessing keys never refuses a correct key sent
from the same address (a NAT, a proxy in front of tiergate).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_ADDRESSES = 10_000  # ~1 MB at most; beyond it the address that failed longest ago is forgotten


class FailureThrottle:
    """``limit`` failures per ``window_s`` per address, all of them at once if need be (the burst).

    Each address holds one number, its theoretical arrival time: every
    failure moves it on by ``window_s / limit``; a failure that would move it
    more than the window ahead of now is refused. Refused attempts do not move
    it, so Retry-After is exact: wait that long and one more attempt is
    allowed, i.e. at most ``limit`` guesses a minute, however fast they come.
    """

    def __init__(
        self,
        limit: int,
        *,
        window_s: float = 60.0,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._interval = window_s / limit
        self._tolerance = window_s - self._interval
        self._max = max_addresses
        self._clock = clock
        self._tat: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tat)

    def failed(self, address: str) -> int | None:
        """Record a failure from ``address``: None when it may be answered (401), else the seconds to wait (429)."""
        now = self._clock()
        tat = max(self._tat.get(address, now), now)
        ahead = tat - now
        if ahead > self._tolerance:
            return max(1, math.ceil(ahead - self._tolerance))
        self._tat[address] = tat + self._interval
        self._tat.move_to_end(address)
        while len(self._tat) > self._max:
            self._tat.popitem(last=False)
        return None
