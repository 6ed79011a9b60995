"""SQLite ledger: usage records, virtual keys; one writer thread, batched, never lost.

The request path only appends to a queue (no database round trip). One
writer thread drains it in batches inside a transaction; ``close()`` drains
everything that was queued before it returns, so a graceful stop (SIGTERM)
loses nothing. The schema comes from migrations.py, the list both backends share.

No record can stop the writer: rows are cleaned (records.py); a batch the
database refuses for its data is written again one record at a time, each
refused record going to the ``quarantine`` table with the reason; a batch
the database refuses as a whole (locked, disk full) is kept in memory and
retried; anything else goes to ``<ledger>.quarantine.jsonl``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tiergate.core.errors import DuplicateName, LedgerWriteFailed
from tiergate.core.ids import IdSource
from tiergate.core.sanitize import ascii_safe
from tiergate.core.types import UsageRecord
from tiergate.ledger.migrations import bookkeeping_sql, for_dialect
from tiergate.ledger.migrations import statements as migration_statements
from tiergate.ledger.quarantine import QuarantineFile
from tiergate.ledger.records import (  # noqa: F401 - re-exported: callers imported these from here
    KEY_PREFIX,
    QUARANTINE_INSERT,
    SESSION_COLUMNS,
    USAGE_COLUMNS,
    KeyRecord,
    LocalModelEvent,
    Pending,
    Record,
    SessionRow,
    count_usage,
    hash_key,
    pending,
    quarantine_row,
    statements,
)
from tiergate.ledger.stored_responses import StoredResponses
from tiergate.ledger.tables import LedgerTables, Step
from tiergate.ledger.writer import BatchWriter

log = logging.getLogger("tiergate.ledger")

# this dialect's (name, SQL) pairs from the one list; ``migrate`` reads the name at call time, so a test can
# stand in an older prefix of it to make a ledger from before a migration
MIGRATIONS = for_dialect("sqlite")


def _null(value: None) -> None:
    return None


def connect(path: Path) -> sqlite3.Connection:
    """Open a ledger database (creating the file if needed); ``migrate`` brings its schema up to date."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Python 3.11's sqlite3 binds only exact int, float and str without an adapter lookup; for a None it
    # looks up ``__adapt__`` and ``__conform__``, raising and formatting an AttributeError for each inside
    # (about 2k instructions per NULL, half a dozen a usage row, by callgrind). A registered adapter is
    # found first; NULL is bound the same. The registry is the sqlite3 module's, so this holds for the
    # whole process: every connection binds None as NULL as before, only sooner.
    sqlite3.register_adapter(type(None), _null)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    # two processes opening one fresh file: the switch to WAL can be refused at once ("database is
    # locked": SQLite skips the busy handler where waiting could deadlock), so it is tried again
    retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.row_factory = sqlite3.Row
    return conn


def retry_locked(step: Callable[[], object], tries: int = 20) -> None:
    """Run ``step``, again after a short pause while SQLite answers "database is locked"."""
    for attempt in range(tries):
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def migrate(conn: sqlite3.Connection, applied: list[str] | None = None) -> list[str]:
    """Apply the migrations this database has not seen, each once; their names, added to ``applied``."""
    conn.execute(bookkeeping_sql("sqlite"))
    done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
    applied = [] if applied is None else applied
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM schema_migrations WHERE name=?", (name,)).fetchone() is None:
                for stmt in migration_statements(sql):
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, time.time()))
                applied.append(name)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied


class SqliteLedger(LedgerTables, StoredResponses):
    """Usage records and keys in one SQLite file, written by a single thread."""

    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._read = connect(path)
        self._read_lock = threading.Lock()
        applied: list[str] = []
        retry_locked(lambda: migrate(self._read, applied))  # a fresh file another process migrates too
        self.applied_migrations = applied
        self.quarantine_file = QuarantineFile(path.with_name(path.name + ".quarantine.jsonl"))
        self._writer: BatchWriter[Pending] = BatchWriter(
            self._write_batch, name="tiergate-ledger", salvage=self._salvage
        )
        self._conn: sqlite3.Connection | None = None
        self._ids = IdSource()  # record ids without a system call each: record() is on the request path
        self.written = 0
        self._closed = False

    # ---------------------------------------------------------------- usage
    def start(self) -> None:
        self._writer.start()

    def record(self, rec: Record) -> None:
        """Queue a record; never blocks the event loop. After close, write it directly: never lose one."""
        if self._closed:
            log.warning("a ledger record arrived after the ledger closed; writing it directly")
            late = [pending(rec)]
            conn = connect(self.path)
            try:
                self._write(conn, late)
            except Exception as exc:
                self._salvage(late, exc)
            finally:
                conn.close()
            return
        self._writer.put(Pending(self._ids.new(), rec))

    def pending(self) -> int:
        return self._writer.pending()

    def health(self) -> dict[str, Any]:
        st = self._writer.status()
        return {
            "backend": self.backend,
            "ok": not st.failing,
            "spooled": 0,
            "pending": st.pending,
            "error": st.last_error if st.failing else None,
            "writer": st.as_dict(),
            "quarantine": {"table": "quarantine", "file": str(self.quarantine_file.path), "records": st.quarantined},
        }

    def close(self) -> None:
        """Drain every queued record to disk, then stop the writer."""
        self._closed = True
        left = self._writer.close()  # non-empty only when the writer never started, died or kept a failed batch
        if left:
            try:
                self._write_batch(left)
            except Exception as exc:  # nothing else can keep them
                log.exception("%d ledger records could not be written to %s", len(left), self.path)
                self._salvage(left, exc)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        with self._read_lock:
            self._read.close()

    def _salvage(self, batch: list[Pending], exc: Exception) -> None:
        """A batch whose write raised: the database refused it as a whole (kept for a retry), or worse (the file)."""
        if isinstance(exc, LedgerWriteFailed) and not self._closed:
            for p in batch:  # locked, disk full: retried with the next batches, handed back by close()
                self._writer.put(p)
            return
        self._writer.quarantined += self.quarantine_file.keep(batch, exc)

    def _write_batch(self, batch: list[Pending]) -> None:
        if self._conn is None:
            self._conn = connect(self.path)
        self._write(self._conn, batch)

    def _write(self, conn: sqlite3.Connection, batch: list[Pending]) -> None:
        error: Exception | None = None
        for attempt in range(5):
            try:
                written, quarantined = self._transaction(conn, batch)
            except sqlite3.OperationalError as exc:  # the database itself (locked, full, I/O): all of it again
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                error = exc
                log.warning("ledger write failed (%s), retry %d", exc, attempt + 1)
                time.sleep(0.2 * (attempt + 1))
                continue
            self.written += written
            self._writer.quarantined += quarantined
            return
        raise LedgerWriteFailed(f"{len(batch)} records not written to {self.path} after 5 attempts: {error}")

    def _transaction(self, conn: sqlite3.Connection, batch: list[Pending]) -> tuple[int, int]:
        """Write a batch in one transaction; (usage rows written, records quarantined)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            try:
                for sql, rows in statements(batch):
                    conn.executemany(sql, rows)
                counts = count_usage(batch), 0
            except sqlite3.OperationalError:
                raise
            except Exception as exc:  # a record the database refuses: must not sink the rest of its batch
                log.warning(
                    "a ledger batch of %d records was refused (%s); writing them one at a time",
                    len(batch),
                    ascii_safe(f"{type(exc).__name__}: {exc}", 300),
                )
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                counts = self._one_at_a_time(conn, batch)
            conn.execute("COMMIT")
            return counts
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _one_at_a_time(self, conn: sqlite3.Connection, batch: list[Pending]) -> tuple[int, int]:
        written = quarantined = 0
        for p in batch:
            conn.execute("SAVEPOINT one")
            try:
                for sql, rows in statements([p]):
                    conn.executemany(sql, rows)
            except sqlite3.OperationalError:
                raise
            except Exception as exc:
                conn.execute("ROLLBACK TO one")
                try:
                    conn.execute(QUARANTINE_INSERT, quarantine_row(p, exc))
                except sqlite3.OperationalError:
                    raise
                except Exception as worse:
                    self.quarantine_file.keep([p], f"{type(exc).__name__}: {exc}; quarantine table: {worse!r}")
                quarantined += 1
                log.error(
                    "ledger record %s quarantined (table quarantine): %s",
                    ascii_safe(p.record_id, 80),
                    ascii_safe(f"{type(exc).__name__}: {exc}", 300),
                )
            else:
                written += isinstance(p.record, UsageRecord)
            conn.execute("RELEASE one")
        return written, quarantined

    # ---------------------------------------------------------------- reads and control writes (see tables.py)
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._read_lock:
            return list(self._read.execute(sql, params))

    def _transact(self, steps: Sequence[Step]) -> list[int]:
        with self._read_lock:
            self._read.execute("BEGIN IMMEDIATE")
            try:
                counts = [self._read.execute(sql, params).rowcount for sql, params in steps]
                self._read.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._read.execute("ROLLBACK")
                raise DuplicateName from None
            except BaseException:
                self._read.execute("ROLLBACK")
                raise
            return counts
