"""Budget windows in the operator's local calendar, and human durations.

A "day" budget should reset at local midnight, not UTC midnight, so window
math goes through zoneinfo. Day, week and month bounds are computed from
local midnights (so a DST day is 23 or 25 real hours long); an hour runs
from a local hour boundary to the next one or to a UTC-offset change,
whichever comes first, and the repeated hour of a fall-back night gets its
own key (suffixed with its UTC offset) so two real hours never share one
counter.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta
from types import MappingProxyType
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Window = Literal["hour", "day", "week", "month"]
WINDOWS: tuple[str, ...] = get_args(Window)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown timezone {tz!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'") from e


def _local(now: float, tz: str) -> datetime:
    if not math.isfinite(now):
        raise ValueError(f"time must be a finite epoch, got {now!r}")
    return datetime.fromtimestamp(now, _zone(tz))


def _midnight(d: date, zone: ZoneInfo) -> float:
    """First instant of local date ``d``; fold=0 maps a midnight skipped by DST to the instant of the jump."""
    return datetime(d.year, d.month, d.day, tzinfo=zone, fold=0).timestamp()


def _first_day(window: str, d: date) -> tuple[date, date]:
    """Local [first date, first date of the next window) for a calendar window."""
    if window == "day":
        return d, d + timedelta(days=1)
    if window == "week":
        monday = d - timedelta(days=d.weekday())
        return monday, monday + timedelta(days=7)
    if window == "month":
        first = d.replace(day=1)
        return first, (first + timedelta(days=32)).replace(day=1)
    raise ValueError(f"unknown budget window {window!r}: expected one of {', '.join(WINDOWS)}")


def window_bounds(window: Window, now: float, tz: str) -> tuple[float, float]:
    """[start, end) in epoch seconds of the window containing ``now`` in timezone ``tz``."""
    local = _local(now, tz)
    zone = _zone(tz)
    if window == "hour":
        start = now - (local.minute * 60 + local.second + local.microsecond / 1e6)
        end = start + 3600.0
        # a half-hour DST shift (Australia/Lord_Howe) moves the offset inside the hour: cut at the change
        if _offset(start, zone) != local.utcoffset():
            start = _change(start, now, zone)
        if _offset(end, zone) != local.utcoffset():
            end = _change(now, end, zone)
        return start, end
    first, nxt = _first_day(window, local.date())
    return _midnight(first, zone), _midnight(nxt, zone)


def _offset(t: float, zone: ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(t, zone).utcoffset()


def _change(lo: float, hi: float, zone: ZoneInfo) -> float:
    """The instant in (lo, hi] where the UTC offset changes (tz transitions fall on whole seconds)."""
    before = _offset(lo, zone)
    while hi - lo > 1:
        mid = (lo + hi) / 2
        if _offset(mid, zone) == before:
            lo = mid
        else:
            hi = mid
    return float(math.floor(lo) + 1)


def window_key(window: Window, now: float, tz: str) -> str:
    """Stable name of the window containing ``now``, e.g. ``day:2026-11-22`` or ``week:2026-W47``."""
    local = _local(now, tz)
    if window == "hour":
        key = f"hour:{local:%Y-%m-%dT%H}"
        if local.fold and local.replace(fold=0).utcoffset() != local.utcoffset():
            key += f"{local:%z}"  # the second pass through a repeated local hour
        return key
    if window == "day":
        return f"day:{local:%Y-%m-%d}"
    if window == "week":
        year, week, _ = local.isocalendar()
        return f"week:{year}-W{week:02d}"
    if window == "month":
        return f"month:{local:%Y-%m}"
    raise ValueError(f"unknown budget window {window!r}: expected one of {', '.join(WINDOWS)}")


_UNITS = MappingProxyType({"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0})  # largest first
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)([a-z]+)")


def parse_duration(text: object) -> float:
    """Seconds from ``30s``, ``5m``, ``8h``, ``2d``, ``1w``, ``1h30m`` or a plain number of seconds."""
    bad = ValueError(
        f"invalid duration {text!r}: use seconds (90) or numbers with units s, m, h, d, w, largest first (e.g. '1h30m')"
    )
    if isinstance(text, bool):
        raise bad
    if isinstance(text, (int, float)):
        seconds = float(text)
    elif isinstance(text, str):
        s = text.strip().lower().replace(" ", "")
        try:
            seconds = float(s)
        except ValueError:
            seconds = _parse_units(s, bad)
    else:
        raise bad
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {text!r}: must be a finite, non-negative length of time")
    return seconds


def _parse_units(s: str, bad: ValueError) -> float:
    order = list(_UNITS)
    pos, last, total = 0, -1, 0.0
    for m in _PART.finditer(s):
        unit = m.group(2)
        if m.start() != pos or unit not in _UNITS or order.index(unit) <= last:
            raise bad
        last = order.index(unit)
        total += float(m.group(1)) * _UNITS[unit]
        pos = m.end()
    if pos == 0 or pos != len(s):
        raise bad
    return total
