"""The failed-authentication throttle: N failures a minute per address, exact Retry-After, bounded memory."""

from __future__ import annotations

import pytest

from tiergate.api.auth_throttle import FailureThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limit_failures_at_once_then_429_with_the_exact_wait():
    clock = Clock()
    t = FailureThrottle(20, clock=clock)
    assert [t.failed("1.2.3.4") for _ in range(20)] == [None] * 20
    assert t.failed("1.2.3.4") == 3  # one more allowed every 60/20 s
    assert t.failed("1.2.3.4") == 3  # refused attempts do not push the wait further
    clock.now += 2.5
    assert t.failed("1.2.3.4") == 1
    clock.now += 0.5
    assert t.failed("1.2.3.4") is None  # after Retry-After, exactly one more
    assert t.failed("1.2.3.4") == 3


def test_addresses_are_counted_apart():
    t = FailureThrottle(2, clock=Clock())
    assert [t.failed("a"), t.failed("a"), t.failed("a")] == [None, None, 30]
    assert t.failed("b") is None


@pytest.mark.parametrize(("limit", "per_minute"), [(1, 1), (5, 5), (20, 20), (120, 120)])
def test_a_steady_guesser_gets_limit_a_minute(limit, per_minute):
    """However fast attempts come, at most `limit` a minute get a 401 (the rest 429) once the burst is spent."""
    clock = Clock()
    t = FailureThrottle(limit, clock=clock)
    allowed = 0
    for _ in range(10 * 600):  # ten minutes, ten attempts a second
        allowed += t.failed("x") is None
        clock.now += 0.1
    assert allowed <= limit + 10 * per_minute  # the first burst, then the rate
    assert allowed >= 10 * per_minute


def test_a_quiet_minute_restores_the_whole_burst():
    clock = Clock()
    t = FailureThrottle(3, clock=clock)
    for _ in range(3):
        t.failed("x")
    assert t.failed("x") is not None
    clock.now += 60
    assert [t.failed("x") for _ in range(4)] == [None, None, None, 20]


def test_memory_is_bounded_and_the_oldest_failure_goes_first():
    clock = Clock()
    t = FailureThrottle(1, max_addresses=100, clock=clock)
    for i in range(1000):
        t.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(t) == 100
    assert t.failed("10.0.3.231") is not None  # the most recent of the 1,000 is still remembered
    assert t.failed("10.0.0.0") is None  # the oldest was forgotten


def test_limit_below_one_is_refused():
    with pytest.raises(ValueError):
        FailureThrottle(0)
