"""The pure rules behind client connections (tiergate.core.client_conn): deadlines, eviction, log throttling."""

from __future__ import annotations

import pytest

from tiergate.core.client_conn import MALFORMED_WHY, Deadlines, OncePer, Phase, eviction_victim, malformed_kind

D = Deadlines(header_s=10, body_s=30, keepalive_s=15)


@pytest.mark.parametrize(
    ("phase", "since", "now", "expected"),
    [
        (Phase.FRESH, 0, 9.9, None),
        (Phase.FRESH, 0, 10, "header"),  # a silent socket: the header deadline from the accept
        (Phase.HEADER, 5, 14.9, None),
        (Phase.HEADER, 5, 15, "header"),
        (Phase.BODY, 0, 29.9, None),
        (Phase.BODY, 0, 30, "body"),
        (Phase.IDLE, 0, 14.9, None),
        (Phase.IDLE, 0, 15, "idle"),
        (Phase.BUSY, 0, 10_000, None),  # being answered: never the client's deadline
    ],
)
def test_deadline_by_phase(phase, since, now, expected):
    assert D.expired(phase, since, now) == expected


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        ([], None),
        ([("a", Phase.BUSY, 0), ("b", Phase.BODY, 1)], None),  # every one has a request in flight
        ([("a", Phase.BUSY, 0), ("b", Phase.IDLE, 5)], "b"),
        ([("a", Phase.IDLE, 5), ("b", Phase.FRESH, 3), ("c", Phase.HEADER, 4)], "b"),  # longest waiting first
        ([("a", Phase.FRESH, 9), ("b", Phase.HEADER, 1)], "b"),  # a slowloris head outlasts a fresh socket
        ([("a", Phase.BODY, 0), ("b", Phase.IDLE, 7)], "b"),  # a body in flight is never the one closed
    ],
)
def test_eviction_picks_the_longest_waiting_connection_without_a_request_in_flight(candidates, expected):
    assert eviction_victim(candidates) == expected


@pytest.mark.parametrize(
    ("names", "kind"),
    [
        (["LineTooLong", "BadHttpMessage", "HttpProcessingError", "Exception"], "too_long"),
        (["BadHttpMethod", "BadStatusLine", "BadHttpMessage"], "method"),
        (["BadStatusLine", "BadHttpMessage"], "request_line"),
        (["InvalidHeader", "BadHttpMessage"], "header"),
        (["InvalidURLError", "BadHttpMessage"], "target"),
        (["TransferEncodingError", "PayloadEncodingError", "BadHttpMessage"], "framing"),
        (["BadHttpMessage", "HttpProcessingError"], "message"),
        (["ValueError", "Exception"], "other"),
    ],
)
def test_malformed_kind_from_the_exception_class_and_its_bases(names, kind):
    assert malformed_kind(names) == kind and kind in MALFORMED_WHY


def test_once_per_window_lets_one_through_and_counts_the_rest():
    gate = OncePer(60)
    assert gate.allow("10.0.0.1", 0) == 0
    assert [gate.allow("10.0.0.1", t) for t in (1, 2, 59.9)] == [None, None, None]
    assert gate.allow("10.0.0.2", 1) == 0  # another address has its own window
    assert gate.allow("10.0.0.1", 60) == 3  # the next window says how many were held back
    assert gate.allow("10.0.0.1", 61) is None


def test_once_per_window_keeps_at_most_max_keys():
    gate = OncePer(60, max_keys=3)
    for i in range(10):
        assert gate.allow(f"a{i}", 0) == 0
    assert len(gate._next) == 3
    assert gate.allow("a9", 1) is None and gate.allow("a0", 1) == 0  # the oldest keys were dropped first
