"""Tables of the pure schedule logic: cron slots in time zones and across DST, what is due, missed and overlap."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from tiergate.core.schedule import Schedule, due, lease_expired, overlap_allows, retry_delay


def ts(zone: str, *parts: int) -> float:
    return dt.datetime(*parts, tzinfo=ZoneInfo(zone)).timestamp()


def walls(s: Schedule, after: float, upto: float) -> list[str]:
    return [s.local(t) for t in s.slots(after, upto)]


@pytest.mark.parametrize(
    ("expr", "zone", "start", "days", "expected"),
    [
        # weekdays at 07:00: Friday 4 Dec 2026 after 08:00 -> Monday and Tuesday
        (
            "0 7 * * 1-5",
            "Europe/Paris",
            (2026, 12, 4, 8),
            4,
            ["2026-12-07T07:00:00+01:00", "2026-12-08T07:00:00+01:00"],
        ),
        # spring forward (Paris, 29 Mar 2026, 02:00 -> 03:00): the skipped 02:30 runs once, at 03:00
        (
            "30 2 * * *",
            "Europe/Paris",
            (2026, 3, 28, 12),
            2,
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
        ),
        # fall back (Paris, 25 Oct 2026, 03:00 -> 02:00): the repeated 02:30 runs once, at its first occurrence
        (
            "30 2 * * *",
            "Europe/Paris",
            (2026, 10, 24, 12),
            2,
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
        ),
        # New York falls back on 1 Nov 2026: 01:15 once
        (
            "15 1 * * *",
            "America/New_York",
            (2026, 10, 31, 12),
            2,
            ["2026-11-01T01:15:00-04:00", "2026-11-02T01:15:00-05:00"],
        ),
        # the same wall time is another instant in another zone
        ("0 7 * * *", "UTC", (2026, 12, 4, 8), 1, ["2026-12-05T07:00:00+00:00"]),
        ("0 7 * * *", "Asia/Tokyo", (2026, 12, 4, 8), 1, ["2026-12-05T07:00:00+09:00"]),
    ],
)
def test_slots_in_time_zones_and_across_dst(expr, zone, start, days, expected):
    s = Schedule(expr, zone)
    after = ts(zone, *start)
    assert walls(s, after, after + days * 86400) == expected


def test_an_expression_stepping_through_the_hours_keeps_every_real_instant_of_the_repeated_hour():
    s = Schedule("*/30 * * * *", "Europe/Paris")
    after = ts("Europe/Paris", 2026, 10, 25, 1, 50)
    got = s.slots(after, after + 2 * 3600)
    assert len(got) == 4 and all(b - a == 1800 for a, b in zip(got, got[1:], strict=False))


HOURLY = Schedule("0 * * * *")
MINUTE = Schedule("* * * * *")
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a whole hour
assert T0 % 3600 == 0


@pytest.mark.parametrize(
    ("schedule", "now", "policy", "run", "trigger", "missed"),
    [
        (HOURLY, T0 + 30, "skip", None, "", 0),  # nothing due yet
        (HOURLY, T0 + 3600, "skip", T0 + 3600, "schedule", 0),  # due now
        (HOURLY, T0 + 3600 + 299, "skip", T0 + 3600, "schedule", 0),  # late, within grace (300 s): on time
        (HOURLY, T0 + 3600 + 301, "skip", None, "", 1),  # past grace: missed, skipped
        (HOURLY, T0 + 3600 + 301, "catch_up", T0 + 3600, "catch-up", 0),  # past grace: run once
        (HOURLY, T0 + 3 * 3600 + 10, "skip", T0 + 3 * 3600, "schedule", 2),  # the newest on time: it runs
        (HOURLY, T0 + 3 * 3600 + 400, "catch_up", T0 + 3 * 3600, "catch-up", 2),  # three passed: one run
        (MINUTE, T0 + 360 + 30, "skip", T0 + 360, "schedule", 5),
    ],
)
def test_due(schedule, now, policy, run, trigger, missed):
    d = due(schedule, since=T0, now=now, grace_s=300, missed_policy=policy)
    assert (d.run, d.trigger, len(d.missed)) == (run, trigger, missed)
    assert d.next_at > now


DAILY = Schedule("0 7 * * *")  # 07:00 UTC


@pytest.mark.parametrize(
    ("policy", "run", "trigger", "missed"),
    [
        ("skip", None, "", 3),  # three 07:00 slots passed while down: none runs, all three are missed
        ("catch_up", ts("UTC", 2026, 12, 4, 7), "catch-up", 2),  # the newest runs once; two others missed
    ],
)
def test_missed_run_policy_after_downtime(policy, run, trigger, missed):
    since = ts("UTC", 2026, 12, 1, 7)  # the last run
    now = ts("UTC", 2026, 12, 4, 9)  # back up two hours after the 4 Dec slot
    d = due(DAILY, since=since, now=now, grace_s=300, missed_policy=policy)
    assert (d.run, d.trigger, len(d.missed)) == (run, trigger, missed)
    assert d.next_at == ts("UTC", 2026, 12, 5, 7)


def test_a_job_that_never_ran_does_not_run_for_the_time_before_the_scheduler_started():
    started = ts("UTC", 2026, 12, 4, 9)
    d = due(DAILY, since=started, now=started + 1, grace_s=300, missed_policy="catch_up")
    assert d.run is None and d.missed == ()


@pytest.mark.parametrize(
    ("policy", "running", "allowed"),
    [("skip", False, True), ("skip", True, False), ("allow", True, True), ("allow", False, True)],
)
def test_overlap_policy(policy, running, allowed):
    assert overlap_allows(policy, running=running) is allowed


@pytest.mark.parametrize(
    ("backoff", "attempt", "delay"), [(30, 1, 30), (30, 2, 60), (30, 3, 120), (30, 20, 3600), (0, 5, 0)]
)
def test_retry_backoff_doubles_and_is_capped(backoff, attempt, delay):
    assert retry_delay(backoff, attempt) == delay


@pytest.mark.parametrize(("lease", "now", "expired"), [(None, 10, False), (10, 10, False), (10, 10.5, True)])
def test_lease_expiry(lease, now, expired):
    assert lease_expired(lease, now) is expired
