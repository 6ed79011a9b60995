"""The retry backoff of a local model that keeps failing to load."""

from __future__ import annotations

from tiergate.local.model_slot import BACKOFF_MAX_S, BACKOFF_START_S, backoff_s


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(n) for n in range(0, 8)] == [0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert backoff_s(1) == BACKOFF_START_S


def test_backoff_after_very_many_failures_stays_at_the_cap() -> None:
    # requests retry a broken model without limit; 0.5 * 2**1100 used to raise OverflowError
    for failures in (60, 1025, 1100, 10**6):
        assert backoff_s(failures) == BACKOFF_MAX_S
