"""Values made safe to store (core.sanitize) and usage rows cleaned on their way to the ledger, table-tested."""

from __future__ import annotations

import math
import time

import orjson
import pytest

from tiergate.core.sanitize import (
    FLOAT_MAX,
    INT64_MAX,
    INT64_MIN,
    MAX_ID_CHARS,
    REPLACEMENT,
    ascii_safe,
    clean_float,
    clean_id,
    clean_int,
    clean_text,
)
from tiergate.core.types import UsageRecord
from tiergate.ledger.records import (
    LocalModelEvent,
    Pending,
    SessionRow,
    from_line,
    is_clean,
    quarantine_row,
    statements,
    to_line,
    usage_row,
)

LONG = "s" * 300


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9f228093-2aa9", "9f228093-2aa9"),  # the usual: unchanged
        ("caf\u00e9", "caf\u00e9"),  # valid non-ASCII is kept
        ("a\udcffb", f"a{REPLACEMENT}b"),  # a header's non-UTF-8 byte, as aiohttp hands it over
        ("\udcfe\udcff", REPLACEMENT * 2),
        ("a\x00b", f"a{REPLACEMENT}b"),  # PostgreSQL refuses NUL in text
        (12, "12"),
    ],
)
def test_clean_id(value, expected):
    assert clean_id(value) == expected
    clean_id(value).encode("utf-8")  # always encodable


def test_long_ids_are_capped_with_a_hash_that_keeps_them_apart():
    a, b = clean_id(LONG + "a"), clean_id(LONG + "b")
    assert len(a) == len(b) == MAX_ID_CHARS and a != b and a.startswith("s" * 200)
    assert clean_id(LONG + "a") == a  # the same id every time: the tracker and the ledger agree
    assert len(clean_id("\udcff" * 1000)) == MAX_ID_CHARS


@pytest.mark.parametrize(
    ("value", "cap", "expected"),
    [
        ("short", 10, "short"),
        ("x" * 12, 10, "x" * 9 + "\u2026"),
        ("bad \udcff byte", 100, f"bad {REPLACEMENT} byte"),
    ],
)
def test_clean_text(value, cap, expected):
    assert clean_text(value, cap) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, 5),
        (True, 1),
        (10**300, INT64_MAX),
        (-(10**300), INT64_MIN),
        (INT64_MAX, INT64_MAX),
        (1e300, INT64_MAX),
        (float("-inf"), INT64_MIN),
        (float("nan"), 0),
        (12.9, 12),
    ],
)
def test_clean_int(value, expected):
    assert clean_int(value) == expected


@pytest.mark.parametrize("value", ["abc", None, [1], {"a": 1}])
def test_clean_int_refuses_what_is_not_a_number(value):
    with pytest.raises(TypeError):
        clean_int(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.5, 0.5),
        (3, 3.0),
        (float("nan"), 0.0),
        (float("inf"), FLOAT_MAX),
        (float("-inf"), -FLOAT_MAX),
        (10**400, FLOAT_MAX),
    ],
)
def test_clean_float(value, expected):
    out = clean_float(value)
    assert out == expected and math.isfinite(out)


def test_ascii_safe_escapes_everything_else():
    assert ascii_safe("caf\u00e9 \udcff") == "caf\\xe9 \\udcff"


# ---------------------------------------------------------------------------- usage rows
def usage(**kw) -> UsageRecord:
    base = dict(
        ts=time.time(),
        request_id="r1",
        kind="request",
        key_name="k",
        agent="a",
        session="s",
        task="t",
        requested_model="auto",
        deployment="d",
        provider="p",
        tier=1,
        local=False,
        prompt_tokens=10,
        completion_tokens=2,
        usage_estimated=False,
        cost_usd=0.001,
        latency_ms=1.0,
        ttft_ms=None,
        status=200,
        stream=False,
        fallbacks=0,
        reason="r",
    )
    base.update(kw)
    return UsageRecord(**base)


TEXT_FIELDS = ("request_id", "key_name", "agent", "session", "task", "requested_model", "reason", "error")


@pytest.mark.parametrize(
    ("change", "column", "stored"),
    [
        ({}, "session", "s"),
        ({"session": "x\udcffy"}, "session", f"x{REPLACEMENT}y"),
        ({"request_id": "\udcff" * 5}, "request_id", REPLACEMENT * 5),
        ({"session": LONG}, "session", clean_id(LONG)),
        ({"error": "e" * 10_000}, "error", "e" * 4095 + "\u2026"),
        ({"prompt_tokens": 10**300}, "prompt_tokens", INT64_MAX),
        ({"completion_tokens": -(10**30)}, "completion_tokens", INT64_MIN),
        ({"cost_usd": float("nan")}, "cost_usd", 0.0),
        ({"latency_ms": float("inf")}, "latency_ms", FLOAT_MAX),
        ({"ttft_ms": float("nan")}, "ttft_ms", 0.0),
        ({"tier": 2**70}, "tier", INT64_MAX),
        ({"status": 499.0}, "status", 499),
        ({"status": True}, "status", 1),
        ({"tier": False}, "tier", 0),
        ({"extra": {"k\udcff": "v\udcff"}}, "extra", orjson.dumps({f"k{REPLACEMENT}": f"v{REPLACEMENT}"}).decode()),
    ],
)
def test_usage_rows_are_cleaned(change, column, stored):
    from tiergate.ledger.records import USAGE_COLUMNS

    rec = usage(**change)
    row = usage_row(rec, "rid")
    assert row[USAGE_COLUMNS.index(column)] == stored
    assert is_clean(rec) == (set(change) <= {"extra"})  # extra is encoded (and cleaned) on its own
    for value in row:  # every value is one both databases take
        if isinstance(value, str):
            value.encode("utf-8")
            assert "\x00" not in value
        elif isinstance(value, int):
            assert INT64_MIN <= value <= INT64_MAX
        elif isinstance(value, float):
            assert math.isfinite(value)


def test_a_clean_record_is_passed_through_as_it_is():
    rec = usage()
    row = usage_row(rec, "rid")
    assert row == (*rec[:-1], None, "rid")  # no extra: NULL
    assert type(row[USAGE_COLUMNS_LOCAL]) is int and row[USAGE_COLUMNS_LOCAL] == 0  # a flag goes in as 0/1


USAGE_COLUMNS_LOCAL = list(UsageRecord._fields).index("local")


def test_a_number_that_is_not_one_is_refused_for_quarantine():
    with pytest.raises(TypeError, match="not an integer"):
        statements([Pending("r", usage(prompt_tokens="abc"))])
    row = quarantine_row(Pending("r\udcff", usage(prompt_tokens="abc", session="s\udcff")), TypeError("no"), now=1.0)
    ts, rid, kind, reason, body = row
    assert (ts, rid, kind, reason) == (1.0, "r\\udcff", "usage", "TypeError: no")
    assert body.isascii() and '"prompt_tokens": "abc"' in body and '"session": "s\\udcff"' in body


def test_session_rows_and_events_are_cleaned():
    rows = statements(
        [
            Pending("1", SessionRow("s\udcff", "k", None, 1.0, 2.0, 10**30, 1, 1, float("inf"), 0.0, "why\x00")),
            Pending("2", LocalModelEvent(float("nan"), "m\udcff", "load", "{}")),
        ]
    )
    (_, [session]), (_, [event]) = rows
    assert session[0] == f"s{REPLACEMENT}" and session[5] == INT64_MAX and session[8] == FLOAT_MAX
    assert session[10] == f"why{REPLACEMENT}"
    assert event[:2] == (0.0, f"m{REPLACEMENT}")


@pytest.mark.parametrize(
    "rec",
    [
        usage(session="x\udcffy", agent="\udcfe", prompt_tokens=10**300),
        SessionRow("s\udcff", "k", None, 1.0, 2.0, 10**30, 1, 1, 0.5, 0.0, None),
        LocalModelEvent(1.0, "m\udcff", "load", "{}"),
    ],
)
def test_spool_lines_hold_what_orjson_alone_refuses(rec):
    with pytest.raises(TypeError):
        orjson.dumps(rec._asdict() if isinstance(rec, UsageRecord) else rec)  # what made the spool fail at SIGTERM
    back = from_line(to_line(Pending("id", rec)))
    assert back.record_id == "id" and type(back.record) is type(rec)
    for _sql, rows in statements([back]):  # what it replays is writable
        assert rows
