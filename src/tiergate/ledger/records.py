"""What the ledger stores, shared by every backend: records, key hashing, and the write statements.

The statements use ``?`` placeholders and SQL that SQLite and PostgreSQL both
accept (``ON CONFLICT ... DO NOTHING / DO UPDATE``); the PostgreSQL ledger
translates the placeholders. Each queued record carries a ``record_id``
made by the gateway when it is queued, so writing it twice (a spool replayed
after an outage, a batch re-sent after a timeout) still leaves one row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from tiergate.core.types import UsageRecord

KEY_PREFIX = "tg-"
USAGE_COLUMNS = list(UsageRecord._fields)
SESSION_COLUMNS = (
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
)
EVENT_COLUMNS = ("ts", "model", "event", "details")


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


@dataclass(frozen=True, slots=True)
class KeyRecord:
    name: str
    prefix: str
    agent: str | None
    created: float
    revoked: float | None


Record = UsageRecord | SessionRow | LocalModelEvent


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
# an older row (a spool replayed late) never overwrites newer totals; a kill is never undone by an upsert
UPSERT_SESSION = (
    f"INSERT INTO sessions ({', '.join(SESSION_COLUMNS)}) VALUES ({_marks(len(SESSION_COLUMNS))}) "
    "ON CONFLICT (session) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in SESSION_COLUMNS[1:-1])
    + ", killed_reason = COALESCE(sessions.killed_reason, excluded.killed_reason)"
    " WHERE excluded.last_seen >= sessions.last_seen"
)
INSERT_EVENT = (
    f"INSERT INTO local_model_events ({', '.join(EVENT_COLUMNS)}, record_id) VALUES ({_marks(5)}) "
    "ON CONFLICT (record_id) DO NOTHING"
)


_BOOL_COLUMNS = tuple(i for i, t in enumerate(typing.get_type_hints(UsageRecord).values()) if t is bool)
_EXTRA_COLUMN = USAGE_COLUMNS.index("extra")


def usage_row(rec: UsageRecord, record_id: str, *, bools_as_int: bool = True) -> tuple[Any, ...]:
    """The row for INSERT_USAGE (the writer thread runs this per record while holding the GIL: keep it lean).

    SQLite binds a bool as the integer 0/1 by itself; PostgreSQL's columns are integers and its driver
    would send a boolean, so ``bools_as_int`` converts them there.
    """
    values: list[Any] = [*rec, record_id]
    if rec.extra is not None:
        values[_EXTRA_COLUMN] = orjson.dumps(rec.extra).decode() if rec.extra else None
    if bools_as_int:
        for i in _BOOL_COLUMNS:
            values[i] = int(values[i])
    return tuple(values)


def statements(batch: Iterable[Pending], *, bools_as_int: bool = True) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """(statement, rows) pairs that write a batch; for each session only its latest state is kept."""
    usage, events, sessions = [], [], {}
    for rid, r in batch:
        if isinstance(r, UsageRecord):
            usage.append(usage_row(r, rid, bools_as_int=bools_as_int))
        elif isinstance(r, SessionRow):
            sessions[r.session] = dataclasses.astuple(r)
        else:
            events.append((*dataclasses.astuple(r), rid))
    return [
        (sql, rows)
        for sql, rows in ((INSERT_USAGE, usage), (UPSERT_SESSION, list(sessions.values())), (INSERT_EVENT, events))
        if rows
    ]


def count_usage(batch: Iterable[Pending]) -> int:
    return sum(1 for p in batch if isinstance(p.record, UsageRecord))


# ------------------------------------------------------------------------ spool lines (JSON)
_KINDS: dict[str, type[Record]] = {"usage": UsageRecord, "session": SessionRow, "event": LocalModelEvent}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}


def to_line(p: Pending) -> bytes:
    rec = p.record._asdict() if isinstance(p.record, UsageRecord) else p.record  # a tuple would be a JSON list
    return orjson.dumps({"id": p.record_id, "kind": _KIND_OF[type(p.record)], "record": rec}) + b"\n"


def from_line(line: bytes) -> Pending:
    d = orjson.loads(line)
    return Pending(d["id"], _KINDS[d["kind"]](**d["record"]))
