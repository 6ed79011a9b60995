"""Pure rules for client connections: which deadline applies, which one to close for room, what to log.

The serving layer (``tiergate.client_protocol``) reads the clock and the
sockets; these decide, so each rule is a table test (tests/unit/test_client_conn.py).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K")


class Phase(enum.Enum):
    """Where a client connection is in its exchange; each phase but BUSY has a deadline."""

    FRESH = "fresh"  # accepted, nothing received: the header deadline runs from the accept
    IDLE = "idle"  # kept alive after a response, nothing of the next request yet
    HEADER = "header"  # part of a request head received
    BODY = "body"  # head complete, body still arriving
    BUSY = "busy"  # the request is being answered: the server's own deadlines apply, not the client's


WAITING = frozenset({Phase.FRESH, Phase.IDLE})  # awaiting a request: closing one loses nothing
EVICTABLE = frozenset({Phase.FRESH, Phase.IDLE, Phase.HEADER})  # no request is being answered


@dataclass(frozen=True, slots=True)
class Deadlines:
    header_s: float
    body_s: float
    keepalive_s: float

    def expired(self, phase: Phase, since: float, now: float) -> str | None:
        """The deadline ``phase`` (entered at ``since``) has passed by ``now``: its metric label, else None."""
        if phase is Phase.FRESH or phase is Phase.HEADER:
            limit, label = self.header_s, "header"
        elif phase is Phase.BODY:
            limit, label = self.body_s, "body"
        elif phase is Phase.IDLE:
            limit, label = self.keepalive_s, "idle"
        else:
            return None
        return label if now - since >= limit else None


def eviction_victim(candidates: Iterable[tuple[K, Phase, float]]) -> K | None:
    """Of (key, phase, since), the connection that has waited longest for a request head, if any.

    Only connections with no request being answered qualify. A client that is
    sending its head right now entered HEADER milliseconds ago and comes last;
    sockets opened and left silent, slowloris heads and long-idle keep-alives
    come first.
    """
    best: tuple[float, K] | None = None
    for key, phase, since in candidates:
        if phase in EVICTABLE and (best is None or since < best[0]):
            best = (since, key)
    return None if best is None else best[1]


# aiohttp's parser exceptions by class name (core imports no HTTP library), most specific first
_MALFORMED = (
    ("LineTooLong", "too_long"),
    ("BadHttpMethod", "method"),
    ("InvalidURLError", "target"),
    ("InvalidHeader", "header"),
    ("BadStatusLine", "request_line"),
    ("TransferEncodingError", "framing"),
    ("ContentLengthError", "framing"),
    ("PayloadEncodingError", "framing"),
    ("BadHttpMessage", "message"),
)

MALFORMED_WHY = {
    "too_long": "a request line or header is longer than 8190 bytes, or there are more than 128 headers",
    "method": "the request line does not start with an HTTP method",
    "target": "the request target is not a valid path",
    "header": "a header name or value has bytes HTTP does not allow",
    "request_line": "the request line is not METHOD TARGET HTTP/1.x",
    "framing": "Content-Length and Transfer-Encoding are missing, invalid or contradict each other",
    "message": "it is not a valid HTTP/1.1 request",
    "other": "it is not a valid HTTP/1.1 request",
}


def malformed_kind(class_names: Sequence[str]) -> str:
    """A short label for a parser error, from its class and its bases' names (``type(exc).__mro__``)."""
    for name, kind in _MALFORMED:
        if name in class_names:
            return kind
    return "other"


class OncePer:
    """Let one event per key through each ``window_s``, counting the ones held back; at most ``max_keys`` kept.

    For logs that a client can trigger at will (one line per address per
    minute): the memory is bounded, the oldest keys go first.
    """

    def __init__(self, window_s: float, max_keys: int = 4096) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self._next: dict[str, tuple[float, int]] = {}  # key -> (when the next may pass, held back since)

    def allow(self, key: str, now: float) -> int | None:
        """None: hold this one back. Else how many were held back for ``key`` since the last one let through."""
        entry = self._next.get(key)
        if entry is not None and now < entry[0]:
            self._next[key] = (entry[0], entry[1] + 1)
            return None
        self._next.pop(key, None)
        while len(self._next) >= self.max_keys:
            del self._next[next(iter(self._next))]  # insertion order: the longest-standing key
        self._next[key] = (now + self.window_s, 0)
        return 0 if entry is None else entry[1]
