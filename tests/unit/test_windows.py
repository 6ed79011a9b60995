"""Budget windows in local calendars (DST, half-hour offsets, month/ISO-week/year edges) and durations."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from tiergate.core.windows import WINDOWS, parse_duration, window_bounds, window_key

NY, IST, UTC_NAME, LHI = "America/New_York", "Asia/Kolkata", "UTC", "Australia/Lord_Howe"


def at(local: str, tz: str, fold: int = 0) -> float:
    """Epoch of a wall-clock time in tz ('2026-11-01T01:30'); fold=1 picks the second pass of a repeated hour."""
    return datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(tz), fold=fold).timestamp()


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_windows_constant():
    assert WINDOWS == ("hour", "day", "week", "month")


# (window, tz, local time, its fold (also the start's), key, start and end as local wall times, end fold, hours long)
CASES = [
    # America/New_York: DST ends 2026-11-01 02:00 EDT -> 01:00 EST (25 h day), starts 2026-03-08 (23 h day)
    ("day", NY, "2026-11-01T12:00", 0, "day:2026-11-01", "2026-11-01T00:00", "2026-11-02T00:00", 0, 25),
    ("day", NY, "2026-11-01T00:00", 0, "day:2026-11-01", "2026-11-01T00:00", "2026-11-02T00:00", 0, 25),
    ("day", NY, "2026-10-31T23:59:59", 0, "day:2026-10-31", "2026-10-31T00:00", "2026-11-01T00:00", 0, 24),
    ("day", NY, "2026-03-08T12:00", 0, "day:2026-03-08", "2026-03-08T00:00", "2026-03-09T00:00", 0, 23),
    ("hour", NY, "2026-11-01T01:30", 0, "hour:2026-11-01T01", "2026-11-01T01:00", "2026-11-01T01:00", 1, 1),
    ("hour", NY, "2026-11-01T01:30", 1, "hour:2026-11-01T01-0500", "2026-11-01T01:00", "2026-11-01T02:00", 0, 1),
    ("hour", NY, "2026-03-08T01:59:59", 0, "hour:2026-03-08T01", "2026-03-08T01:00", "2026-03-08T03:00", 0, 1),
    ("hour", NY, "2026-03-08T03:00", 0, "hour:2026-03-08T03", "2026-03-08T03:00", "2026-03-08T04:00", 0, 1),
    ("week", NY, "2026-11-01T12:00", 0, "week:2026-W44", "2026-10-26T00:00", "2026-11-02T00:00", 0, 169),
    ("week", NY, "2026-03-08T23:59", 0, "week:2026-W10", "2026-03-02T00:00", "2026-03-09T00:00", 0, 167),
    ("month", NY, "2026-11-30T23:59:59", 0, "month:2026-11", "2026-11-01T00:00", "2026-12-01T00:00", 0, 721),
    ("month", NY, "2026-03-31T23:00", 0, "month:2026-03", "2026-03-01T00:00", "2026-04-01T00:00", 0, 743),
    ("month", NY, "2028-02-29T12:00", 0, "month:2028-02", "2028-02-01T00:00", "2028-03-01T00:00", 0, 29 * 24),
    ("month", NY, "2026-02-28T23:59", 0, "month:2026-02", "2026-02-01T00:00", "2026-03-01T00:00", 0, 28 * 24),
    # year boundary: ISO week 2026-W53 runs Mon 2026-12-28 .. Sun 2027-01-03
    ("day", NY, "2026-12-31T23:59:59", 0, "day:2026-12-31", "2026-12-31T00:00", "2027-01-01T00:00", 0, 24),
    ("month", NY, "2027-01-01T00:00", 0, "month:2027-01", "2027-01-01T00:00", "2027-02-01T00:00", 0, 31 * 24),
    ("week", NY, "2027-01-03T23:59:59", 0, "week:2026-W53", "2026-12-28T00:00", "2027-01-04T00:00", 0, 168),
    ("week", NY, "2027-01-04T00:00", 0, "week:2027-W01", "2027-01-04T00:00", "2027-01-11T00:00", 0, 168),
    ("week", NY, "2024-12-31T12:00", 0, "week:2025-W01", "2024-12-30T00:00", "2025-01-06T00:00", 0, 168),
    # Asia/Kolkata (+05:30, no DST): local midnight is 18:30 UTC the day before
    ("day", IST, "2026-11-22T00:10", 0, "day:2026-11-22", "2026-11-22T00:00", "2026-11-23T00:00", 0, 24),
    ("hour", IST, "2026-11-22T03:59:59", 0, "hour:2026-11-22T03", "2026-11-22T03:00", "2026-11-22T04:00", 0, 1),
    ("week", IST, "2026-11-22T23:59:59", 0, "week:2026-W47", "2026-11-16T00:00", "2026-11-23T00:00", 0, 168),
    ("week", IST, "2026-11-23T00:00", 0, "week:2026-W48", "2026-11-23T00:00", "2026-11-30T00:00", 0, 168),
    ("month", IST, "2026-12-31T23:59:59", 0, "month:2026-12", "2026-12-01T00:00", "2027-01-01T00:00", 0, 31 * 24),
    ("month", IST, "2027-01-01T00:00", 0, "month:2027-01", "2027-01-01T00:00", "2027-02-01T00:00", 0, 31 * 24),
    ("week", IST, "2027-01-01T00:00", 0, "week:2026-W53", "2026-12-28T00:00", "2027-01-04T00:00", 0, 168),
    # Australia/Lord_Howe shifts by 30 minutes: 2026-10-04 02:00 -> 02:30, so local hour 02 lasts half an hour
    ("hour", LHI, "2026-10-04T02:45", 0, "hour:2026-10-04T02", "2026-10-04T02:30", "2026-10-04T03:00", 0, 0.5),
    ("hour", LHI, "2026-10-04T01:59", 0, "hour:2026-10-04T01", "2026-10-04T01:00", "2026-10-04T02:30", 0, 1),
    ("day", LHI, "2026-10-04T12:00", 0, "day:2026-10-04", "2026-10-04T00:00", "2026-10-05T00:00", 0, 23.5),
]


@pytest.mark.parametrize("window,tz,local,fold,key,start,end,end_fold,hours", CASES)
def test_window_key_and_bounds(window, tz, local, fold, key, start, end, end_fold, hours):
    now = at(local, tz, fold)
    assert window_key(window, now, tz) == key
    lo, hi = window_bounds(window, now, tz)
    assert lo == at(start, tz, fold) and hi == at(end, tz, end_fold)
    assert lo <= now < hi
    assert hi - lo == hours * 3600


@pytest.mark.parametrize(
    "window,utc_time,tz,key",
    [
        ("day", "2026-11-21T18:29:59", IST, "day:2026-11-21"),
        ("day", "2026-11-21T18:30:00", IST, "day:2026-11-22"),
        ("day", "2026-11-22T04:59:59", NY, "day:2026-11-21"),
        ("day", "2026-11-22T05:00:00", NY, "day:2026-11-22"),
        ("hour", "2026-11-22T03:00:00", UTC_NAME, "hour:2026-11-22T03"),
        ("hour", "2026-11-22T03:00:00", IST, "hour:2026-11-22T08"),
        ("month", "2026-11-30T18:30:00", IST, "month:2026-12"),
        ("month", "2026-12-01T04:59:59", NY, "month:2026-11"),
        ("week", "2026-11-22T18:30:00", IST, "week:2026-W48"),
        ("week", "2026-11-22T18:30:00", UTC_NAME, "week:2026-W47"),
    ],
)
def test_rollover_happens_at_local_midnight_not_utc(window, utc_time, tz, key):
    assert window_key(window, utc(utc_time), tz) == key


@pytest.mark.parametrize("tz", [NY, IST, UTC_NAME, LHI, "Europe/London", "Australia/Sydney", "America/Santiago"])
@pytest.mark.parametrize("window", WINDOWS)
def test_windows_tile_time_without_gaps_overlaps_or_shared_keys(window, tz):
    """Walk two years window by window: each starts where the last ended and has its own key."""
    t, end_of_walk = utc("2025-12-20T00:00:00"), utc("2027-12-20T00:00:00")
    prev_end, prev_key = None, None
    while t < end_of_walk:
        lo, hi = window_bounds(window, t, tz)
        key = window_key(window, t, tz)
        assert lo <= t < hi
        assert prev_end is None or lo == prev_end
        assert key != prev_key
        assert window_key(window, lo, tz) == key == window_key(window, hi - 0.001, tz)
        prev_end, prev_key, t = hi, key, hi


@pytest.mark.parametrize(
    "bad_call",
    [
        lambda: window_key("fortnight", 0.0, UTC_NAME),
        lambda: window_bounds("fortnight", 0.0, UTC_NAME),
        lambda: window_key("day", 0.0, "Mars/Olympus_Mons"),
        lambda: window_bounds("day", float("nan"), UTC_NAME),
    ],
)
def test_bad_window_timezone_or_time_is_a_value_error(bad_call):
    with pytest.raises(ValueError):
        bad_call()


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("30s", 30),
        ("5m", 300),
        ("8h", 28800),
        ("2d", 172800),
        ("1w", 604800),
        ("1h30m", 5400),
        ("1d2h3m4s", 93784),
        ("1.5h", 5400),
        (" 2H ", 7200),
        ("90", 90),
        ("0.25", 0.25),
        (45, 45),
        (2.5, 2.5),
        ("0s", 0),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "h", "5min", "30m1h", "1h1h", "1h 30x", "abc", "-3", "-1h", "inf", "nan", True, None, [5]]
)
def test_parse_duration_rejects_with_a_clear_message(text):
    with pytest.raises(ValueError, match=r"invalid duration"):
        parse_duration(text)
