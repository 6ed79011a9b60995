"""Session guardian verdicts, table-tested."""

from __future__ import annotations

import dataclasses

import pytest

from tiergate.guardrails.guardian import (
    GuardianRules,
    Period,
    SessionState,
    Verdict,
    admit,
    after_request,
    context_alerts_due,
    expired,
    implicit_period,
    kill_in_force,
)

T0 = 1_800_000_000.0
HOUR = 3600.0
RULES = GuardianRules(session_max_usd=25, session_max_age_s=8 * HOUR, session_idle_ttl_s=24 * HOUR)


def st(session: str = "s-1", *, age: float = 0.0, idle: float = 0.0, **kw) -> SessionState:
    """A session first seen ``age`` seconds before T0 and last seen ``idle`` seconds before T0."""
    return SessionState(
        session=session, key_name="k", agent="researcher", first_seen=T0 - age, last_seen=T0 - idle, **kw
    )


def test_defaults():
    r = GuardianRules()
    assert (r.session_max_usd, r.session_max_age_s, r.kill_ttl_s) == (None, None, 86400)
    assert (r.session_idle_ttl_s, r.context_alert_at) == (86400, (0.8, 0.95))
    s = SessionState(session="s", key_name="k", agent=None, first_seen=1.0, last_seen=2.0)
    assert (s.requests, s.prompt_tokens, s.completion_tokens, s.cost_usd, s.max_context_ratio) == (0, 0, 0, 0.0, 0.0)
    assert s.killed_reason is None and s.killed_at is None and s.context_alerts_sent == () and not s.implicit
    assert Verdict("allow") == Verdict("allow", "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.session_max_usd = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "state,rules,expected",
    [
        (None, RULES, Verdict("allow")),
        (st(), RULES, Verdict("allow")),
        (st(cost_usd=25.0), RULES, Verdict("allow")),  # at the cap is fine; only more than it kills
        (st(cost_usd=25.31), RULES, Verdict("kill", "session s-1 spent $25.31 > session_max_usd $25")),
        (
            st(cost_usd=0.0042),
            dataclasses.replace(RULES, session_max_usd=0.004),
            Verdict("kill", "session s-1 spent $0.0042 > session_max_usd $0.004"),
        ),
        (st(cost_usd=10_000.0), GuardianRules(), Verdict("allow")),  # no caps configured
        (st(age=8 * HOUR), RULES, Verdict("allow")),
        (st(age=8 * HOUR + 1), RULES, Verdict("kill", "session s-1 is 8h old > session_max_age 8h")),
        (st(age=9.5 * HOUR), RULES, Verdict("kill", "session s-1 is 9h30m old > session_max_age 8h")),
        (
            st(age=30 * HOUR, idle=60),
            GuardianRules(session_max_age_s=90),
            Verdict("kill", "session s-1 is 1d06h old > session_max_age 1m30s"),
        ),
        (st(age=1e6), GuardianRules(), Verdict("allow")),
        (st(idle=24 * HOUR), RULES, Verdict("allow")),
        (st(idle=24 * HOUR + 1, age=48 * HOUR), RULES, Verdict("expire", "session s-1 idle 1d > session_idle_ttl 1d")),
        # precedence: a kill is final, even when idle or over the limits; idleness beats the limits
        (st(killed_reason="killed by operator", idle=1e6, cost_usd=99.0), RULES, Verdict("kill", "killed by operator")),
        (st(cost_usd=99.0, idle=25 * HOUR), RULES, Verdict("expire", "session s-1 idle 1d01h > session_idle_ttl 1d")),
        (st(cost_usd=30.0, age=9 * HOUR), RULES, Verdict("kill", "session s-1 spent $30.00 > session_max_usd $25")),
        # an implicit session (no session header) is never refused for its age: it rolls over
        (
            st(age=9 * HOUR, implicit=True),
            RULES,
            Verdict("expire", "session s-1 is 9h old > session_max_age 8h: a new one starts"),
        ),
        (st(age=8 * HOUR, implicit=True), RULES, Verdict("allow")),
        (  # its spend is still capped
            st(cost_usd=30.0, age=9 * HOUR, implicit=True),
            RULES,
            Verdict("kill", "session s-1 spent $30.00 > session_max_usd $25"),
        ),
        # a kill holds for kill_ttl (24 h by default), then the session starts again from the kill's end
        (st(killed_reason="loop", killed_at=T0 - 24 * HOUR), RULES, Verdict("kill", "loop")),
        (
            st(killed_reason="loop", killed_at=T0 - 24 * HOUR - 1, cost_usd=99.0, age=30 * HOUR),
            RULES,
            Verdict("restart", "the kill of session s-1 expired (kill_ttl 1d)", T0 - 1),
        ),
        (
            st(killed_reason="loop", killed_at=T0 - 61),
            dataclasses.replace(RULES, kill_ttl_s=60),
            Verdict("restart", "the kill of session s-1 expired (kill_ttl 1m)", T0 - 1),
        ),
        (
            st(killed_reason="loop", killed_at=T0 - 1e9),
            dataclasses.replace(RULES, kill_ttl_s=None),
            Verdict("kill", "loop"),
        ),
        (st(killed_reason="loop", killed_at=None, idle=1e9), RULES, Verdict("kill", "loop")),  # when unknown: held
    ],
)
def test_admit(state, rules, expected):
    assert admit(state, rules, T0) == expected


@pytest.mark.parametrize(
    "killed_at,ttl,in_force",
    [
        (T0, 60.0, True),
        (T0 - 60, 60.0, True),
        (T0 - 60.001, 60.0, False),
        (T0 - 1e9, None, True),
        (None, 60.0, True),
        (T0 + 5, 60.0, True),  # a kill stamped by a clock ahead of this one
    ],
)
def test_kill_in_force(killed_at, ttl, in_force):
    assert kill_in_force(killed_at, GuardianRules(kill_ttl_s=ttl), T0) is in_force


DAY0 = T0 - 8 * HOUR  # T0 is 2027-01-15T08:00:00Z: DAY0 is that UTC midnight
MAR14, NOV7 = 1_805_000_400.0, 1_825_560_000.0  # New York's local midnights on its DST days of 2027


@pytest.mark.parametrize(
    "now,tz,max_age,expected",
    [
        (T0, "UTC", None, Period("2027-01-15", DAY0, DAY0 + 24 * HOUR)),
        (T0, "UTC", 30 * HOUR, Period("2027-01-15", DAY0, DAY0 + 24 * HOUR)),  # longer than a day: the day
        (T0 - 1, "UTC", 8 * HOUR, Period("2027-01-15", DAY0, T0)),
        (T0, "UTC", 8 * HOUR, Period("2027-01-15T08:00", T0, T0 + 8 * HOUR)),
        (T0, "UTC", 5 * HOUR, Period("2027-01-15T05:00", DAY0 + 5 * HOUR, DAY0 + 10 * HOUR)),
        (DAY0 + 23 * HOUR, "UTC", 5 * HOUR, Period("2027-01-15T20:00", DAY0 + 20 * HOUR, DAY0 + 24 * HOUR)),  # short
        (T0 + 45, "UTC", 90, Period("2027-01-15T08:00", T0, T0 + 90)),
        (T0 + 95, "UTC", 90, Period("2027-01-15T08:01:30", T0 + 90, T0 + 180)),  # seconds when the cut has them
        # local days: Berlin is UTC+1 in January; 08:00Z is Los Angeles' midnight
        (T0, "Europe/Berlin", 8 * HOUR, Period("2027-01-15T08:00", T0 - HOUR, T0 + 7 * HOUR)),
        (T0, "America/Los_Angeles", None, Period("2027-01-15", T0, T0 + 24 * HOUR)),
        (T0 - 1, "America/Los_Angeles", None, Period("2027-01-14", T0 - 24 * HOUR, T0)),
        # a DST day is 23 or 25 real hours long (New York, 2027-03-14 and 2027-11-07)
        (MAR14 + 12 * HOUR, "America/New_York", None, Period("2027-03-14", MAR14, MAR14 + 23 * HOUR)),
        (
            NOV7 + 24.5 * HOUR,
            "America/New_York",
            8 * HOUR,
            Period("2027-11-07T23:00", NOV7 + 24 * HOUR, NOV7 + 25 * HOUR),
        ),
    ],
)
def test_implicit_period(now, tz, max_age, expected):
    p = implicit_period(now, tz=tz, max_age_s=max_age)
    assert p == expected and p.start <= now < p.end


@pytest.mark.parametrize("max_age", [1.0, 90.0, 3600.0, 7 * HOUR, 8 * HOUR, 86399.0])
def test_an_implicit_period_never_outlasts_session_max_age(max_age):
    for now in (T0 + k * 997.3 for k in range(200)):
        p = implicit_period(now, tz="Europe/Berlin", max_age_s=max_age)
        assert p.start <= now < p.end and p.end - p.start <= max_age


def test_admit_does_not_change_the_state():
    s = st(cost_usd=30.0)
    before = dataclasses.replace(s)
    assert admit(s, RULES, T0).action == "kill"
    assert s == before and s.killed_reason is None


@pytest.mark.parametrize(
    "state,rules,expected",
    [
        (st(cost_usd=24.99), RULES, Verdict("allow")),
        (st(cost_usd=25.0), RULES, Verdict("allow")),
        (st(session="s-7", cost_usd=25.01), RULES, Verdict("kill", "session s-7 spent $25.01 > session_max_usd $25")),
        (st(cost_usd=1e9), GuardianRules(), Verdict("allow")),
        (st(cost_usd=1.0, age=1e6), RULES, Verdict("allow")),  # age is judged at admission, not here
        (st(cost_usd=1.0, killed_reason="manual"), RULES, Verdict("kill", "manual")),
        (
            st(cost_usd=12.5),
            GuardianRules(session_max_usd=12.25),
            Verdict("kill", "session s-1 spent $12.50 > session_max_usd $12.25"),
        ),
    ],
)
def test_after_request(state, rules, expected):
    assert after_request(state, rules) == expected


@pytest.mark.parametrize(
    "sent,ratio,thresholds,due",
    [
        ((), 0.5, (0.8, 0.95), ()),
        ((), 0.8, (0.8, 0.95), (0.8,)),
        ((), 0.97, (0.8, 0.95), (0.8, 0.95)),  # a jump past both raises both, lowest first
        ((0.8,), 0.9, (0.8, 0.95), ()),  # each once per session
        ((0.8,), 0.96, (0.8, 0.95), (0.95,)),
        ((0.8, 0.95), 1.4, (0.8, 0.95), ()),
        ((), 0.99, (0.95, 0.5, 0.95), (0.5, 0.95)),  # unsorted or repeated config
        ((), 1.0, (), ()),
        ((), float("nan"), (0.8,), ()),
    ],
)
def test_context_alerts_due(sent, ratio, thresholds, due):
    state = st(context_alerts_sent=sent, max_context_ratio=0.99)
    assert context_alerts_due(state, ratio, GuardianRules(context_alert_at=thresholds)) == due


@pytest.mark.parametrize(
    "idles,ttl,gone",
    [
        ({}, 10.0, []),
        ({"a": 0.0, "b": 10.0, "c": 10.5, "d": 1e6}, 10.0, ["c", "d"]),
        ({"a": 5.0}, 1.0, ["a"]),
        ({"a": 5.0}, 86400.0, []),
    ],
)
def test_expired(idles, ttl, gone):
    states = [st(name, idle=idle) for name, idle in idles.items()]
    assert expired(states, GuardianRules(session_idle_ttl_s=ttl), T0) == gone


def test_expired_accepts_any_iterable_and_includes_killed_sessions():
    states = {"x": st("x", idle=100.0, killed_reason="loop"), "y": st("y", idle=1.0)}
    assert expired(states.values(), GuardianRules(session_idle_ttl_s=50.0), T0) == ["x"]
    assert expired((s for s in states.values()), GuardianRules(session_idle_ttl_s=0.5), T0) == ["x", "y"]
