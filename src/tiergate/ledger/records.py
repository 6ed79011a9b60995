"""What the ledger stores, shared by every backend: records, key hashing, and the write statements.

The statements use ``?`` placeholders and SQL that SQLite and PostgreSQL both
accept (``ON CONFLICT ... DO NOTHING / DO UPDATE``); the PostgreSQL ledger
translates the placeholders. Each queued record carries a ``record_id``
made by the gateway when it is queued, so writing it twice (a spool replayed
after an outage, a batch re-sent after a timeout) still leaves one row.

Every row is cleaned on its way out (``tiergate.core.sanitize``): text
without lone surrogates or NUL, ids and text capped, integers in 64 bits,
floats finite. A clean record (nearly all) costs one check. A record that
still cannot be written is quarantined by the backend with its reason
(``QUARANTINE_INSERT`` with a ``quarantine_row``), and the rest of its batch
is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import operator
import struct
import time
import typing
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from tiergate.core.sanitize import (
    MAX_ID_CHARS,
    ascii_safe,
    clean_float,
    clean_id,
    clean_int,
    clean_text,
    optional,
)
from tiergate.core.types import UsageRecord

KEY_PREFIX = "tg-"
USAGE_COLUMNS = list(UsageRecord._fields)
SESSION_ROW_COLUMNS = (
    "session",
    "key_name",
    "agent",
    "first_seen",
    "last_seen",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "max_context_ratio",
    "killed_reason",
    "implicit",
    "killed_at",
)
SESSION_COLUMNS = (*SESSION_ROW_COLUMNS, "revived_at")  # revived_at: written by revives only, never by the writer
EVENT_COLUMNS = ("ts", "model", "event", "details")
QUARANTINE_COLUMNS = ("ts", "record_id", "kind", "reason", "record")
MAX_QUARANTINED_CHARS = 65536


@dataclass(frozen=True, slots=True)
class LocalModelEvent:
    """A load, unload, swap or crash of a managed local model."""

    ts: float
    model: str
    event: str
    details: str


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A session's running totals, upserted by the writer thread (the latest row wins)."""

    session: str
    key_name: str
    agent: str | None
    first_seen: float
    last_seen: float
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    max_context_ratio: float
    killed_reason: str | None
    implicit: bool = False  # named by the gateway (no session header): bulk kills spare it
    killed_at: float | None = None


class Kills(NamedTuple):
    """What an operator's kill did: the sessions it killed, and the implicit ones a bulk kill spared."""

    killed: list[str]
    spared: list[str]


@dataclass(frozen=True, slots=True)
class AlertSent:
    """An alert's dedupe key, kept so that a restart does not send the alert again."""

    key: str
    ts: float


@dataclass(frozen=True, slots=True)
class KeyRecord:
    name: str
    prefix: str
    agent: str | None
    created: float
    revoked: float | None
    admin: bool = False  # may use /admin and the dashboard, as the master key does


Record = UsageRecord | SessionRow | LocalModelEvent | AlertSent


class Pending(NamedTuple):
    """A record waiting for the writer, with the id that makes writing it idempotent."""

    record_id: str
    record: Record


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def pending(rec: Record) -> Pending:
    """A record with a fresh id (off the request path; the ledgers use a cheaper per-process id source)."""
    return Pending(uuid.uuid4().hex, rec)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


INSERT_USAGE = (
    f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}, record_id) VALUES ({_marks(len(USAGE_COLUMNS) + 1)}) "
    "ON CONFLICT (record_id) DO NOTHING"
)
# An older row (a spool replayed late) never overwrites newer totals. A kill is never undone by an upsert,
# and an upsert brings a kill only when it is newer than the row's kill and than its revive: a tracker
# that has not seen a revive yet cannot bring back the kill it lifted.
_NEWER_KILL = (
    "excluded.killed_at > COALESCE(sessions.killed_at, -1) AND excluded.killed_at > COALESCE(sessions.revived_at, -1)"
)
UPSERT_SESSION = (
    f"INSERT INTO sessions ({', '.join(SESSION_ROW_COLUMNS)}) VALUES ({_marks(len(SESSION_ROW_COLUMNS))}) "
    "ON CONFLICT (session) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*SESSION_ROW_COLUMNS[1:10], "implicit"))
    + "".join(
        f", {c} = CASE WHEN {_NEWER_KILL} THEN excluded.{c} ELSE sessions.{c} END"
        for c in ("killed_reason", "killed_at")
    )
    + " WHERE excluded.last_seen >= sessions.last_seen"
)
INSERT_EVENT = (
    f"INSERT INTO local_model_events ({', '.join(EVENT_COLUMNS)}, record_id) VALUES ({_marks(5)}) "
    "ON CONFLICT (record_id) DO NOTHING"
)
INSERT_ALERT = "INSERT INTO alerts_sent (dedupe_key, sent) VALUES (?, ?) ON CONFLICT (dedupe_key) DO NOTHING"
QUARANTINE_INSERT = (
    f"INSERT INTO quarantine ({', '.join(QUARANTINE_COLUMNS)}) VALUES ({_marks(5)}) ON CONFLICT (record_id) DO NOTHING"
)


# ------------------------------------------------------------------------ cleaning a usage row
def _columns(*names: str) -> tuple[int, ...]:
    return tuple(USAGE_COLUMNS.index(n) for n in names)


_BOOL_COLUMNS = tuple(i for i, t in enumerate(typing.get_type_hints(UsageRecord).values()) if t is bool)
_EXTRA_COLUMN = USAGE_COLUMNS.index("extra")
_IDS = _columns("request_id", "kind", "key_name", "requested_model", "protocol")
_OPT_IDS = _columns("agent", "session", "task", "deployment", "provider")
_TEXTS = _columns("reason")
_OPT_TEXTS = _columns("error")
_INTS = _columns("prompt_tokens", "completion_tokens", "status", "fallbacks")
_OPT_INTS = _columns("tier")
_FLOATS = _columns("ts", "cost_usd", "latency_ms")
_OPT_FLOATS = _columns("ttft_ms")
_all_texts = operator.itemgetter(*_IDS, *_OPT_IDS, *_TEXTS, *_OPT_TEXTS)
_ints = operator.itemgetter(*_INTS)
_floats = operator.itemgetter(*_FLOATS)
_TIER, _TTFT = _OPT_INTS[0], _OPT_FLOATS[0]
_INT64S = struct.Struct(f"<{len(_INTS) + 1}q")  # the ints, then the tier
_CLEANERS: tuple[tuple[int, typing.Callable[[object], object], bool], ...] = (
    *((i, clean_id, False) for i in _IDS),
    *((i, clean_id, True) for i in _OPT_IDS),
    *((i, clean_text, False) for i in _TEXTS),
    *((i, clean_text, True) for i in _OPT_TEXTS),
    *((i, clean_int, False) for i in _INTS),
    *((i, clean_int, True) for i in _OPT_INTS),
    *((i, clean_float, False) for i in _FLOATS),
    *((i, clean_float, True) for i in _OPT_FLOATS),
)


def is_clean(rec: UsageRecord) -> bool:
    """One cheap check that nearly every record passes: short ASCII text, 64-bit ints, finite floats.

    The writer thread runs it per row while holding the GIL: C calls, not comparisons one by one.
    ``_INT64S.pack`` refuses a number past 64 bits (struct.error) or one that is not an integer (a float
    included); adding the floats up refuses what is not a number and carries a NaN or an infinity."""
    try:
        text = "".join(filter(None, _all_texts(rec)))  # no None, no empty text: the same join, in C
        tier, ttft = rec[_TIER], rec[_TTFT]
        p, c, status, fallbacks = _ints(rec)
        _INT64S.pack(p, c, status, fallbacks, 0 if tier is None else tier)
        ts, cost, latency = _floats(rec)
        return (
            type(p) is type(c) is type(status) is type(fallbacks) is int  # a bool is an int to struct, not here
            and (tier is None or type(tier) is int)
            and len(text) <= MAX_ID_CHARS
            and text.isascii()
            and "\x00" not in text
            and type(ts) is float
            and type(latency) is float
            and math.isfinite(ts + cost + latency + (0.0 if ttft is None else ttft))
        )
    except (TypeError, struct.error):  # text that is not a str, a number that is not one: the slow path says which
        return False


def clean_usage(values: list[Any]) -> list[Any]:
    """Every column of a usage row made writable; raises TypeError when a number is not one at all."""
    for i, fn, nullable in _CLEANERS:
        v = values[i]
        if v is None and nullable:
            continue
        values[i] = fn(v)
    for i in _BOOL_COLUMNS:
        values[i] = bool(values[i])
    return values


def _extra_json(extra: Any) -> str | None:
    if not extra:
        return None
    try:
        text = orjson.dumps(extra).decode()
    except TypeError:  # lone surrogates, keys that are not strings, values orjson cannot encode
        items = extra.items() if isinstance(extra, dict) else [("value", extra)]
        text = orjson.dumps({clean_text(k): clean_text(v) for k, v in items}).decode()
    return clean_text(text)


def usage_row(rec: UsageRecord, record_id: str) -> tuple[Any, ...]:
    """The row for INSERT_USAGE (the writer thread runs this per record while holding the GIL: keep it lean).

    Booleans go in as the integers 0/1: PostgreSQL's columns are integers, and Python 3.11's sqlite3, though
    it stores a bool as 0/1, first looks for an adapter on it, raising and formatting an AttributeError per
    value inside (12k instructions a row for the six flags, by callgrind).
    """
    values: list[Any] = [*rec, record_id]
    if not is_clean(rec):
        values = clean_usage(values)
    if rec.extra is not None:
        values[_EXTRA_COLUMN] = _extra_json(rec.extra)
    for i in _BOOL_COLUMNS:
        values[i] = int(values[i])
    return tuple(values)


def session_values(r: SessionRow) -> tuple[Any, ...]:
    """A session row's columns, cleaned (about one a second per busy session: no fast path needed)."""
    return (
        clean_id(r.session),
        clean_id(r.key_name),
        optional(clean_id, r.agent),
        clean_float(r.first_seen),
        clean_float(r.last_seen),
        clean_int(r.requests),
        clean_int(r.prompt_tokens),
        clean_int(r.completion_tokens),
        clean_float(r.cost_usd),
        clean_float(r.max_context_ratio),
        optional(clean_text, r.killed_reason),
        int(bool(r.implicit)),
        None if r.killed_reason is None else clean_float(r.last_seen if r.killed_at is None else r.killed_at),
    )


def statements(batch: Iterable[Pending]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """(statement, rows) pairs that write a batch; for each session only its latest state is kept.

    Raises (TypeError) when a record holds a value no cleaning can make writable.
    """
    usage, events, alerts = [], [], []
    sessions: dict[str, tuple[Any, ...]] = {}
    for rid, r in batch:
        if isinstance(r, UsageRecord):
            usage.append(usage_row(r, rid))
        elif isinstance(r, SessionRow):
            row = session_values(r)
            sessions[row[0]] = row
        elif isinstance(r, AlertSent):
            alerts.append((clean_text(r.key), clean_float(r.ts)))
        else:
            events.append((clean_float(r.ts), clean_id(r.model), clean_id(r.event), clean_text(r.details), rid))
    return [
        (sql, rows)
        for sql, rows in (
            (INSERT_USAGE, usage),
            (UPSERT_SESSION, list(sessions.values())),
            (INSERT_EVENT, events),
            (INSERT_ALERT, alerts),
        )
        if rows
    ]


def count_usage(batch: Iterable[Pending]) -> int:
    return sum(1 for p in batch if isinstance(p.record, UsageRecord))


# ------------------------------------------------------------------------ quarantine
def _plain(value: Any) -> Any:
    """A field as JSON can hold it, whatever it is (repr for the rest)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)


def record_fields(rec: Record) -> dict[str, Any]:
    return rec._asdict() if isinstance(rec, UsageRecord) else dataclasses.asdict(rec)


def quarantine_row(p: Pending, reason: BaseException | str, *, now: float | None = None) -> tuple[Any, ...]:
    """The QUARANTINE_INSERT row for a record that could not be written: ASCII only, so it always can be.

    ``record`` is the record as JSON with every non-ASCII character escaped (a lone surrogate
    stays readable as ``\\udcff``), so what was sent can be read back exactly.
    """
    body = json.dumps({k: _plain(v) for k, v in record_fields(p.record).items()}, ensure_ascii=True)
    why = reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
    return (
        time.time() if now is None else now,
        ascii_safe(str(p.record_id), MAX_ID_CHARS),
        _KIND_OF.get(type(p.record), type(p.record).__name__),
        ascii_safe(why),
        body[:MAX_QUARANTINED_CHARS],
    )


# ------------------------------------------------------------------------ spool lines (JSON)
_KINDS: dict[str, type[Record]] = {
    "usage": UsageRecord,
    "session": SessionRow,
    "event": LocalModelEvent,
    "alert": AlertSent,
}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}


def cleaned(p: Pending) -> Pending:
    """The record as it would be written (cleaned), so that it can be spooled as JSON too."""
    rec = p.record
    if isinstance(rec, UsageRecord):
        values = list(usage_row(rec, p.record_id))
        for i in _BOOL_COLUMNS:  # the record keeps its flags as flags
            values[i] = bool(values[i])
        values[_EXTRA_COLUMN] = rec.extra if values[_EXTRA_COLUMN] is None else orjson.loads(values[_EXTRA_COLUMN])
        return Pending(clean_id(values[-1]), UsageRecord(*values[:-1]))
    if isinstance(rec, SessionRow):
        return Pending(clean_id(p.record_id), SessionRow(*session_values(rec)))
    if isinstance(rec, AlertSent):
        return Pending(clean_id(p.record_id), AlertSent(clean_text(rec.key), clean_float(rec.ts)))
    return Pending(
        clean_id(p.record_id),
        LocalModelEvent(clean_float(rec.ts), clean_id(rec.model), clean_id(rec.event), clean_text(rec.details)),
    )


def to_line(p: Pending) -> bytes:
    """One spool line; a record orjson refuses (lone surrogates, huge ints) is cleaned first."""
    try:
        return _line(p)
    except TypeError:
        return _line(cleaned(p))


def _line(p: Pending) -> bytes:
    rec = p.record._asdict() if isinstance(p.record, UsageRecord) else p.record  # a tuple would be a JSON list
    return orjson.dumps({"id": p.record_id, "kind": _KIND_OF[type(p.record)], "record": rec}) + b"\n"


def from_line(line: bytes) -> Pending:
    d = orjson.loads(line)
    return Pending(d["id"], _KINDS[d["kind"]](**d["record"]))
