"""Circuit breaker transitions, table-driven."""

from __future__ import annotations

import pytest

from tiergate.core import breaker as br


def run(events, *, threshold=3, cooldown=30.0):
    """Apply (time, event) pairs; return admit() answers for 'ask' events."""
    s, answers = br.CLOSED, []
    for now, ev in events:
        if ev == "fail":
            s = br.on_failure(s, now=now, threshold=threshold, error="500")
        elif ev == "refused":
            s = br.on_failure(s, now=now, threshold=threshold, error="refused", definitive=True)
        elif ev == "ok":
            s = br.on_success(s)
        elif ev == "ask":
            ok, s = br.admit(s, now=now, cooldown_s=cooldown)
            answers.append(ok)
    return s, answers


@pytest.mark.parametrize(
    ("events", "answers"),
    [
        ([(0, "fail"), (1, "fail"), (2, "ask")], [True]),  # below threshold: closed
        ([(0, "fail"), (1, "fail"), (2, "fail"), (3, "ask")], [False]),  # threshold reached: open
        ([(0, "refused"), (1, "ask")], [False]),  # refused connection opens at once
        ([(0, "refused"), (31, "ask"), (32, "ask")], [True, False]),  # half-open: one probe only
        ([(0, "refused"), (31, "ask"), (32, "ok"), (33, "ask")], [True, True]),  # probe ok closes
        ([(0, "refused"), (31, "ask"), (32, "fail"), (33, "ask"), (63, "ask")], [True, False, True]),  # probe fails
        ([(0, "fail"), (1, "ok"), (2, "fail"), (3, "fail"), (4, "ask")], [True]),  # success resets the count
    ],
)
def test_breaker(events, answers):
    assert run(events)[1] == answers


def test_unavailable_reason_names_the_error_and_the_wait():
    s = br.on_failure(br.CLOSED, now=100, threshold=3, error="refused: connection refused", definitive=True)
    why = br.unavailable_reason(s, now=110, cooldown_s=30)
    assert "refused" in why and "retry in 20s" in why
    assert br.unavailable_reason(s, now=131, cooldown_s=30) is None
