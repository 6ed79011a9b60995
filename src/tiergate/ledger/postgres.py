"""PostgreSQL ledger: the SQLite ledger's contract, shared by every replica.

The request path only queues; one writer thread writes batches, one
transaction each (``executemany`` in pipeline mode). When the database is
unreachable nothing waits and nothing is lost: a batch that cannot be
written is appended to an on-disk spool (fsync'd) and the writer retries the
connection with capped backoff; once it is back the spool is replayed in
order before new batches, and deleted. Records carry gateway-made ids and
are inserted with ``ON CONFLICT DO NOTHING``, so a replay (or a batch sent
twice) never adds a second row. Reads fail fast with ``LedgerUnavailable``
(503) while the database is down; pollers keep their last known state.
The schema comes from migrations.py, the list both backends share.

No record can stop the writer or the replay: a batch the database refuses
for its data is written again one record at a time (a savepoint each), the
refused ones going to the ``quarantine`` table with the reason; the spool
cleans what JSON cannot hold, and keeps what it cannot encode or read back
in ``<spool dir>.quarantine.jsonl``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row, tuple_row

from tiergate.config.schema import masked_url
from tiergate.core.errors import DuplicateName, LedgerUnavailable
from tiergate.core.ids import IdSource
from tiergate.core.sanitize import ascii_safe
from tiergate.core.types import UsageRecord
from tiergate.ledger.migrations import bookkeeping_sql, for_dialect
from tiergate.ledger.migrations import statements as migration_statements
from tiergate.ledger.quarantine import QuarantineFile
from tiergate.ledger.records import QUARANTINE_INSERT, Pending, Record, count_usage, quarantine_row, statements
from tiergate.ledger.spool import Spool
from tiergate.ledger.stored_responses import StoredResponses
from tiergate.ledger.tables import LedgerTables, Step
from tiergate.ledger.writer import BatchWriter

log = logging.getLogger("tiergate.ledger.postgres")
T = TypeVar("T")

# fail in seconds, not minutes, when the network (not just the server) goes away
_TCP: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
_UNREACHABLE = (psycopg.OperationalError, psycopg.InterfaceError)


def to_pyformat(sql: str) -> str:
    """The callers' SQLite-style ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    out, quoted = [], False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        out.append("%%" if ch == "%" else "%s" if ch == "?" and not quoted else ch)
    return "".join(out)


def spool_dir_for(base: Path, url: str) -> Path:
    """One spool subdirectory per database, so a spool is never replayed into another database."""
    info = {k: v for k, v in conninfo_to_dict(url).items() if k != "password"}
    return base / f"postgresql-{hashlib.sha256(repr(sorted(info.items())).encode()).hexdigest()[:16]}"


_MIGRATE_LOCK = "hashtextextended('tiergate.ledger.migrate:' || coalesce(current_schema(), ''), 0)"


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply what this schema has not recorded (``conn`` in autocommit mode); returns the names applied.

    Replicas starting together all call this; a session-level advisory lock, one per schema (databases
    shared by several tiergate installs do not wait on each other), lets one apply and the others find
    nothing left. Each migration runs in one transaction with its bookkeeping row.
    """
    conn.execute(f"SELECT pg_advisory_lock({_MIGRATE_LOCK})")
    try:
        conn.execute(bookkeeping_sql("postgres"))
        with conn.cursor(row_factory=tuple_row) as cur:
            done = {r[0] for r in cur.execute("SELECT name FROM schema_migrations").fetchall()}
        applied = []
        for name, sql in for_dialect("postgres"):
            if name in done:
                continue
            with conn.transaction():
                for stmt in migration_statements(sql):
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (name, time.time()))
            applied.append(name)
        return applied
    finally:
        with contextlib.suppress(psycopg.Error):  # a broken connection has released the lock already
            conn.execute(f"SELECT pg_advisory_unlock({_MIGRATE_LOCK})")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class PostgresLedger(LedgerTables, StoredResponses):
    backend = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        spool_dir: Path,
        connect_timeout_s: int = 5,
        retry_max_s: float = 5.0,
        close_timeout_s: float = 10.0,
    ) -> None:
        self._url = url
        self.display = masked_url(url)
        self.connect_timeout_s = connect_timeout_s
        self.retry_max_s = retry_max_s
        self.close_timeout_s = close_timeout_s
        directory = spool_dir_for(spool_dir, url)
        self.quarantine_file = QuarantineFile(directory.with_name(directory.name + ".quarantine.jsonl"))
        self.spool = Spool(directory, quarantine=self.quarantine_file)
        self._writer: BatchWriter[Pending] = BatchWriter(
            self._write_batch, name="tiergate-ledger", idle=self._idle, salvage=self._salvage
        )
        self._conn: psycopg.Connection[DictRow] | None = None  # the writer thread's
        self._read: psycopg.Connection[DictRow] | None = None
        self._read_lock = threading.Lock()
        self._write_error: str | None = None
        self._read_error: str | None = None
        self._delay = 0.0
        self._retry_at = 0.0
        self._closed = False
        self._ids = IdSource()  # record ids without a system call each: record() is on the request path
        self.written = 0
        try:
            with self._connect() as conn:
                self.applied_migrations = migrate(conn)
        except _UNREACHABLE as exc:
            raise LedgerUnavailable(f"cannot reach the ledger database {self.display}: {_first_line(exc)}") from None
        self.spool.scan()  # records left by an earlier run count as spooled until the writer replays them

    def _connect(self) -> psycopg.Connection[DictRow]:
        return psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=self.connect_timeout_s,
            application_name="tiergate",
            row_factory=dict_row,
            **_TCP,
        )

    # ---------------------------------------------------------------- usage (queued, written by one thread)
    def start(self) -> None:
        """Replay what an earlier run spooled (now, when the database answers), then start the writer.

        Replaying before the thread starts means budgets and sessions rebuilt from the ledger after
        ``start`` include what the last run could only spool.
        """
        if self.spool.pending:
            log.warning(
                "%d ledger records wait in %s from an earlier run; replaying them",
                self.spool.pending,
                self.spool.directory,
            )
            self._recover()
        self._writer.start()

    def record(self, rec: Record) -> None:
        """Queue a record; never blocks. After close it goes to the spool (no network wait), replayed at next start."""
        if not self._closed:
            self._writer.put(Pending(self._ids.new(), rec))
            return
        log.warning("a ledger record arrived after the ledger closed; spooled to %s", self.spool.directory)
        self.spool.append([Pending(self._ids.new(), rec)])
        self.spool.close()

    def pending(self) -> int:
        return self._writer.pending()

    def health(self) -> dict[str, Any]:
        st = self._writer.status()
        error = self._write_error or self._read_error
        if st.failing:
            error = st.last_error
        return {
            "backend": self.backend,
            "ok": error is None,
            "spooled": self.spool.pending,
            "pending": st.pending,
            "error": error,
            "database": self.display,
            "writer": st.as_dict(),
            "quarantine": {"table": "quarantine", "file": str(self.quarantine_file.path), "records": st.quarantined},
        }

    def close(self) -> None:
        """Drain the queue (to the database, or to the spool while it is down) within ``close_timeout_s``."""
        self._closed = True
        left = self._writer.close(self.close_timeout_s)
        if left:
            try:
                self.spool.append(left)
                log.warning("spooled %d ledger records at close; the next start replays them", len(left))
            except OSError as exc:
                log.error(
                    "%d ledger records lost: cannot write the spool in %s (%s)", len(left), self.spool.directory, exc
                )
        self.spool.close()
        if not self._writer.stuck and self._conn is not None:
            self._conn.close()  # never under a thread still inside libpq with it
        if self._read_lock.acquire(timeout=self.connect_timeout_s):
            try:
                if self._read is not None:
                    self._read.close()
                    self._read = None
            finally:
                self._read_lock.release()

    def _write_batch(self, batch: list[Pending]) -> None:
        if (self._conn is None or self.spool.pending) and not self._recover():
            self.spool.append(batch)
            return
        conn = self._conn
        assert conn is not None  # connected, or _recover() just connected
        try:
            self._write(conn, batch)
        except psycopg.Error as exc:
            self._failed(exc)
            self.spool.append(batch)

    def _salvage(self, batch: list[Pending], exc: Exception) -> None:
        """A batch whose write raised something other than an outage: spooled, so a later replay retries it."""
        self.spool.append(batch)

    def _write(self, conn: psycopg.Connection[DictRow], batch: Sequence[Pending]) -> None:
        try:
            with conn.transaction(), conn.cursor() as cur:
                for sql, rows in statements(batch):
                    cur.executemany(to_pyformat(sql), rows)
            written, quarantined = count_usage(batch), 0
        except _UNREACHABLE:
            raise
        except Exception as exc:  # a record the database refuses: must not sink the rest of its batch
            if conn.broken or conn.closed:
                raise
            log.warning(
                "a ledger batch of %d records was refused (%s); writing them one at a time",
                len(batch),
                ascii_safe(f"{type(exc).__name__}: {exc}", 300),
            )
            written, quarantined = self._one_at_a_time(conn, batch)
        self.written += written
        self._writer.quarantined += quarantined

    def _one_at_a_time(self, conn: psycopg.Connection[DictRow], batch: Sequence[Pending]) -> tuple[int, int]:
        """Each record in a savepoint of one transaction; the refused ones to the quarantine table."""
        written = quarantined = 0
        with conn.transaction(), conn.cursor() as cur:
            for p in batch:
                try:
                    with conn.transaction():
                        for sql, rows in statements([p]):
                            cur.executemany(to_pyformat(sql), rows)
                except _UNREACHABLE:
                    raise
                except Exception as exc:
                    if conn.broken or conn.closed:
                        raise
                    cur.execute(to_pyformat(QUARANTINE_INSERT), quarantine_row(p, exc))
                    quarantined += 1
                    log.error(
                        "ledger record %s quarantined (table quarantine): %s",
                        ascii_safe(p.record_id, 80),
                        ascii_safe(f"{type(exc).__name__}: {exc}", 300),
                    )
                else:
                    written += isinstance(p.record, UsageRecord)
        return written, quarantined

    def _idle(self) -> None:
        if self._write_error is not None or self.spool.pending:
            self._recover()

    def _recover(self) -> bool:
        """Reconnect (when the backoff allows) and replay the spool; True once both are done."""
        if time.monotonic() < self._retry_at:
            return False
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            conn = self._conn
            replayed = self.spool.replay(lambda records: self._write(conn, records))
        except psycopg.Error as exc:
            self._failed(exc)
            return False
        if self._write_error is not None or replayed:
            log.warning("ledger database %s reachable again; %d spooled records replayed", self.display, replayed)
        self._write_error, self._read_error, self._delay = None, None, 0.0  # reachable: reads will be too
        return True

    def _failed(self, exc: BaseException) -> None:
        if self._write_error is None:
            log.error(
                "ledger database %s unreachable (%s); records spool to %s until it is back",
                self.display,
                _first_line(exc),
                self.spool.directory,
            )
        self._write_error = _first_line(exc)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._delay = min(self.retry_max_s, max(0.25, self._delay * 2))
        self._retry_at = time.monotonic() + self._delay

    # ---------------------------------------------------------------- reads and control writes (see tables.py)
    def _reading(self, fn: Callable[[psycopg.Connection[DictRow]], T]) -> T:
        """Run ``fn(conn)`` on the read connection; one retry on a fresh connection if the old one went stale."""
        with self._read_lock:
            for attempt in (1, 2):
                fresh = self._read is None
                try:
                    if self._read is None:
                        self._read = self._connect()
                    result = fn(self._read)
                    self._read_error = None
                    return result
                except _UNREACHABLE as exc:
                    if self._read is not None:
                        self._read.close()
                        self._read = None
                    if fresh or attempt == 2:
                        self._read_error = _first_line(exc)
                        raise LedgerUnavailable(
                            f"ledger database {self.display} unavailable: {self._read_error}"
                        ) from None
        raise AssertionError("unreachable")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return self._reading(lambda conn: conn.execute(to_pyformat(sql), params).fetchall())

    def _transact(self, steps: Sequence[Step]) -> list[int]:
        def run(conn: psycopg.Connection[DictRow]) -> list[int]:
            with conn.transaction():
                return [conn.execute(to_pyformat(sql), params).rowcount for sql, params in steps]

        try:
            return self._reading(run)
        except psycopg.errors.UniqueViolation:
            raise DuplicateName from None
