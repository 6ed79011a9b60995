"""Values made safe to store: what a client or an upstream sends must never stop the accounting.

aiohttp hands a header's non-UTF-8 bytes over as lone surrogates, which no
UTF-8 encoder accepts; PostgreSQL refuses NUL in text; SQLite and PostgreSQL
refuse integers past 64 bits; a NaN in a NOT NULL column is NULL to SQLite.
Each function here returns a value both databases and the JSON spool take,
and the same value wherever it is called (the session tracker keys its
totals with ``clean_id``, so totals rebuilt from the ledger find their
session). Pure: no I/O, table-tested in tests/unit/test_sanitize.py.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

MAX_ID_CHARS = 256  # ids and names: request id, session, agent, task, key, model, deployment
MAX_TEXT_CHARS = 4096  # free text: reason, error, details
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT_MAX = 1.7976931348623157e308
REPLACEMENT = "\ufffd"
_HASH_CHARS = 16


def _repair(s: str) -> str:
    """Lone surrogates and NUL as U+FFFD (the rest is kept as it is)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = "".join(REPLACEMENT if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)
    return s.replace("\x00", REPLACEMENT) if "\x00" in s else s


def _digest(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]


def clean_id(value: object, cap: int = MAX_ID_CHARS) -> str:
    """An id that fits ``cap`` characters; a longer one keeps its start and a hash of the whole.

    The hash keeps two long ids that share a prefix apart (they stay two sessions, not one).
    """
    s = value if type(value) is str else str(value)
    if len(s) <= cap and s.isascii() and "\x00" not in s:
        return s
    repaired = _repair(s)
    if len(repaired) <= cap:
        return repaired
    return f"{repaired[: cap - _HASH_CHARS - 1]}~{_digest(s)}"


def clean_text(value: object, cap: int = MAX_TEXT_CHARS) -> str:
    """Free text that fits ``cap`` characters (cut with an ellipsis)."""
    s = value if type(value) is str else str(value)
    if len(s) <= cap and s.isascii() and "\x00" not in s:
        return s
    s = _repair(s)
    return s if len(s) <= cap else s[: cap - 1] + "\u2026"


def clean_int(value: object) -> int:
    """A 64-bit integer: clamped, a finite float truncated, NaN as 0; anything else is refused.

    Raises ``TypeError`` for a value that is not a number at all ("abc" as a token
    count): guessing would hide it, so the caller keeps the record aside instead.
    """
    if type(value) is int:
        return value if INT64_MIN <= value <= INT64_MAX else (INT64_MAX if value > 0 else INT64_MIN)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return clean_int(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return 0
        if math.isinf(value):
            return INT64_MAX if value > 0 else INT64_MIN
        return clean_int(int(value))
    raise TypeError(f"not an integer: {type(value).__name__}")


def clean_float(value: object) -> float:
    """A finite float: NaN as 0.0, infinities as the largest float; anything not a number is refused."""
    if type(value) is float:
        if math.isfinite(value):
            return value
        return 0.0 if math.isnan(value) else math.copysign(FLOAT_MAX, value)
    if isinstance(value, (int, float)):  # bool and int: exact below 2**53, clamped past the float range
        try:
            return clean_float(float(value))
        except OverflowError:  # an int past the float range
            return FLOAT_MAX if value > 0 else -FLOAT_MAX
    raise TypeError(f"not a number: {type(value).__name__}")


def optional(fn: Callable[[object], T], value: object) -> T | None:
    """``fn(value)``, or None for None (nullable columns)."""
    return None if value is None else fn(value)


def ascii_safe(text: str, cap: int = MAX_TEXT_CHARS) -> str:
    """ASCII only, every other character escaped: for what must always be writable (quarantine, logs)."""
    return text.encode("ascii", "backslashreplace").decode("ascii")[:cap]
