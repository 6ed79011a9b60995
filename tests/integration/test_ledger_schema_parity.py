"""One schema on both ledgers: SQLite and PostgreSQL report the same tables, columns, keys and indexes.

Both are built from migrations.py. This compares what the two databases report,
not the SQL, so a step that reaches one dialect and misses the other (as 0006
once did) fails here. Types are compared by the SQLite affinity of their names
(INTEGER/BIGINT/SMALLINT alike, REAL/DOUBLE PRECISION alike); index names are
compared except those an engine picks itself for a UNIQUE written in a table
definition. Ledgers made by the two lists kept before there was one (their
SQL copied below from the code of that time, so later edits cannot hide a
drift) must upgrade in place to exactly what a fresh ledger has.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest

from pg import PgSchema
from records import usage_row
from tiergate.core.types import UsageRecord
from tiergate.ledger.base import open_ledger
from tiergate.ledger.migrations import DIALECTS, MIGRATIONS, statements
from tiergate.ledger.postgres import to_pyformat
from tiergate.ledger.records import pending
from tiergate.ledger.records import statements as statements_for
from tiergate.ledger.sqlite import SqliteLedger

NAMES = tuple(m.name for m in MIGRATIONS)

# ---------------------------------------------------------------------------- the lists before the shared one
# git show 3251f4f:src/tiergate/ledger/pg_schema.py (0001-0005, no 0006) and sqlite.py (0001-0006), verbatim
OLD_POSTGRES: tuple[tuple[str, str], ...] = (
    (
        "0001_usage",
        """
        CREATE TABLE usage (
            id BIGSERIAL PRIMARY KEY,
            ts DOUBLE PRECISION NOT NULL, request_id TEXT NOT NULL, kind TEXT NOT NULL,
            key_name TEXT NOT NULL, agent TEXT, session TEXT, task TEXT,
            requested_model TEXT NOT NULL, deployment TEXT, provider TEXT, tier INTEGER,
            local SMALLINT NOT NULL, prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL,
            usage_estimated SMALLINT NOT NULL, cost_usd DOUBLE PRECISION NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL, ttft_ms DOUBLE PRECISION, status INTEGER NOT NULL,
            stream SMALLINT NOT NULL, fallbacks INTEGER NOT NULL,
            reason TEXT NOT NULL, error TEXT, protocol TEXT NOT NULL, extra TEXT
        );
        CREATE INDEX usage_ts ON usage (ts);
        CREATE INDEX usage_request ON usage (request_id);
        CREATE INDEX usage_agent_ts ON usage (agent, ts);
        CREATE INDEX usage_session_ts ON usage (session, ts);
        """,
    ),
    (
        "0002_keys",
        """
        CREATE TABLE keys (
            name TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
            agent TEXT, created DOUBLE PRECISION NOT NULL, revoked DOUBLE PRECISION
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
        INSERT INTO meta VALUES ('keys_version', 0);
        """,
    ),
    (
        "0003_sessions_and_flags",
        """
        CREATE TABLE sessions (
            session TEXT PRIMARY KEY, key_name TEXT NOT NULL, agent TEXT,
            first_seen DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL, requests BIGINT NOT NULL,
            prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, cost_usd DOUBLE PRECISION NOT NULL,
            max_context_ratio DOUBLE PRECISION NOT NULL, killed_reason TEXT
        );
        CREATE INDEX sessions_agent ON sessions (agent);
        CREATE INDEX sessions_last_seen ON sessions (last_seen);
        CREATE INDEX sessions_killed ON sessions (session) WHERE killed_reason IS NOT NULL;
        CREATE TABLE flags (name TEXT PRIMARY KEY, value TEXT, updated DOUBLE PRECISION NOT NULL);
        INSERT INTO meta VALUES ('control_version', 0);
        """,
    ),
    (
        "0004_local_model_events",
        """
        CREATE TABLE local_model_events (
            id BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, model TEXT NOT NULL, event TEXT NOT NULL,
            details TEXT
        );
        CREATE INDEX local_model_events_ts ON local_model_events (ts);
        """,
    ),
    (
        "0005_record_ids",  # writes are idempotent: a record replayed from the spool leaves one row
        """
        ALTER TABLE usage ADD COLUMN record_id TEXT UNIQUE;
        ALTER TABLE local_model_events ADD COLUMN record_id TEXT UNIQUE;
        CREATE INDEX usage_kind_ts ON usage (kind, ts);
        """,
    ),
)
OLD_SQLITE: tuple[tuple[str, str], ...] = (
    (
        "0001_usage",
        """
        CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL, request_id TEXT NOT NULL, kind TEXT NOT NULL,
            key_name TEXT NOT NULL, agent TEXT, session TEXT, task TEXT,
            requested_model TEXT NOT NULL, deployment TEXT, provider TEXT, tier INTEGER,
            local INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
            usage_estimated INTEGER NOT NULL, cost_usd REAL NOT NULL, latency_ms REAL NOT NULL,
            ttft_ms REAL, status INTEGER NOT NULL, stream INTEGER NOT NULL, fallbacks INTEGER NOT NULL,
            reason TEXT NOT NULL, error TEXT, protocol TEXT NOT NULL, extra TEXT
        );
        CREATE INDEX usage_ts ON usage (ts);
        CREATE INDEX usage_request ON usage (request_id);
        CREATE INDEX usage_agent_ts ON usage (agent, ts);
        CREATE INDEX usage_session_ts ON usage (session, ts);
        """,
    ),
    (
        "0002_keys",
        """
        CREATE TABLE keys (
            name TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
            agent TEXT, created REAL NOT NULL, revoked REAL
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('keys_version', 0);
        """,
    ),
    (
        "0003_sessions_and_flags",
        """
        CREATE TABLE sessions (
            session TEXT PRIMARY KEY, key_name TEXT NOT NULL, agent TEXT,
            first_seen REAL NOT NULL, last_seen REAL NOT NULL, requests INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
            max_context_ratio REAL NOT NULL, killed_reason TEXT
        );
        CREATE INDEX sessions_agent ON sessions (agent);
        CREATE INDEX sessions_last_seen ON sessions (last_seen);
        CREATE TABLE flags (name TEXT PRIMARY KEY, value TEXT, updated REAL NOT NULL);
        INSERT INTO meta VALUES ('control_version', 0);
        """,
    ),
    (
        "0004_local_model_events",
        """
        CREATE TABLE local_model_events (
            id INTEGER PRIMARY KEY, ts REAL NOT NULL, model TEXT NOT NULL, event TEXT NOT NULL, details TEXT
        );
        CREATE INDEX local_model_events_ts ON local_model_events (ts);
        """,
    ),
    (
        "0005_record_ids",  # writes are idempotent: a record written twice leaves one row
        """
        ALTER TABLE usage ADD COLUMN record_id TEXT;
        CREATE UNIQUE INDEX usage_record_id ON usage (record_id);
        ALTER TABLE local_model_events ADD COLUMN record_id TEXT;
        CREATE UNIQUE INDEX local_model_events_record_id ON local_model_events (record_id);
        CREATE INDEX usage_kind_ts ON usage (kind, ts);
        """,
    ),
    (
        # Every index costs the one writer ~1 us of CPU per row on the gateway's own core. Reports and
        # budget seeding read by (kind, ts); nothing reads these three (docs/decisions/0003-hot-path.md).
        "0006_trim_usage_indexes",
        """
        DROP INDEX IF EXISTS usage_ts;
        DROP INDEX IF EXISTS usage_agent_ts;
        DROP INDEX IF EXISTS usage_session_ts;
        """,
    ),
)


# ---------------------------------------------------------------------------- what each database reports
Index = tuple[
    str, str | None, tuple[str, ...], bool, bool
]  # table, name (None: engine-named), columns, unique, partial


@dataclass(frozen=True)
class Schema:
    columns: dict[str, tuple[tuple[str, str, bool], ...]]  # table -> (column, declared type, nullable), in order
    primary_keys: dict[str, tuple[str, ...]]
    indexes: frozenset[Index]  # every index except the primary keys'

    def portable(self) -> Schema:
        """Types as their SQLite affinity: what both dialects must agree on."""
        return replace(
            self, columns={t: tuple((c, affinity(ty), n) for c, ty, n in cols) for t, cols in self.columns.items()}
        )


def affinity(declared: str) -> str:
    """SQLite's rules for a declared type name (datatype3.html, 3.1), applied to either dialect's names."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if any(s in t for s in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if not t or "BLOB" in t:
        return "BLOB"
    return "REAL" if any(s in t for s in ("REAL", "FLOA", "DOUB")) else "NUMERIC"


def sqlite_schema(path: Path) -> Schema:
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        columns, keys, indexes = {}, {}, set()
        for t in tables:
            info = conn.execute(f"PRAGMA table_info({t})").fetchall()  # cid, name, type, notnull, default, pk
            # a primary key column is NOT NULL on PostgreSQL; SQLite's table_info leaves the flag off for it
            columns[t] = tuple((name, ty, not (notnull or pk)) for _, name, ty, notnull, _, pk in info)
            keys[t] = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
            for _, name, unique, origin, partial in conn.execute(f"PRAGMA index_list({t})").fetchall():
                if origin == "pk":
                    continue  # compared as the primary key (an INTEGER PRIMARY KEY has no index at all)
                cols = tuple(r[2] for r in sorted(conn.execute(f"PRAGMA index_info({name})").fetchall()))
                engine_named = name.startswith("sqlite_autoindex_")
                indexes.add((t, None if engine_named else name, cols, bool(unique), bool(partial)))
        return Schema(columns, keys, frozenset(indexes))
    finally:
        conn.close()


_INDEXDEF = re.compile(r"CREATE (UNIQUE )?INDEX (\S+) ON \S+ USING \w+ \((.+?)\)( WHERE .+)?")


def postgres_schema(pg: PgSchema) -> Schema:
    here = "table_schema = current_schema()"
    tables = [
        r["table_name"]
        for r in pg.rows(f"SELECT table_name FROM information_schema.tables WHERE {here} AND table_type = 'BASE TABLE'")
    ]
    columns: dict[str, tuple[tuple[str, str, bool], ...]] = {t: () for t in sorted(tables)}
    for r in pg.rows(
        f"SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
        f"WHERE {here} ORDER BY table_name, ordinal_position"
    ):
        columns[r["table_name"]] += ((r["column_name"], r["data_type"], r["is_nullable"] == "YES"),)
    keys: dict[str, tuple[str, ...]] = {t: () for t in columns}
    pk_names = set()
    for r in pg.rows(
        f"SELECT tc.table_name, tc.constraint_name, k.column_name FROM information_schema.table_constraints tc "
        "JOIN information_schema.key_column_usage k USING (constraint_schema, constraint_name, table_name) "
        f"WHERE tc.{here} AND tc.constraint_type = 'PRIMARY KEY' ORDER BY tc.table_name, k.ordinal_position"
    ):
        keys[r["table_name"]] += (r["column_name"],)
        pk_names.add(r["constraint_name"])
    indexes = set()
    for r in pg.rows("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"):
        if r["indexname"] in pk_names:
            continue
        m = _INDEXDEF.fullmatch(r["indexdef"])
        assert m, f"cannot read {r['indexdef']!r}"
        cols = tuple(c.strip().strip('"') for c in m[3].split(","))
        engine_named = r["indexname"] == f"{r['tablename']}_{'_'.join(cols)}_key"  # PostgreSQL's name for a UNIQUE
        indexes.add((r["tablename"], None if engine_named else r["indexname"], cols, bool(m[1]), bool(m[4])))
    return Schema(columns, keys, frozenset(indexes))


def assert_same(a: Schema, b: Schema) -> None:
    """Part by part, so a failure names what differs."""
    assert sorted(a.columns) == sorted(b.columns), "tables differ"
    for table in a.columns:
        assert a.columns[table] == b.columns[table], f"columns of {table} differ"
    assert a.primary_keys == b.primary_keys, "primary keys differ"
    only = sorted(a.indexes - b.indexes, key=repr), sorted(b.indexes - a.indexes, key=repr)
    assert only == ([], []), "indexes differ: (only in the first, only in the second)"


# ---------------------------------------------------------------------------- building ledgers
def _execute(pg: PgSchema, *sql: str) -> None:
    with psycopg.connect(pg.url(), autocommit=True, connect_timeout=5) as conn:
        for stmt in sql:
            conn.execute(stmt)


@pytest.fixture
def pg_sibling(pg_schema: PgSchema):  # type: ignore[no-untyped-def]
    """A second schema of this test's own on the server, next to ``pg_schema`` and dropped after it."""
    sibling = PgSchema(f"{pg_schema.name}_b", pg_schema.user)
    _execute(pg_schema, f"CREATE SCHEMA {sibling.name}")
    try:
        yield sibling
    finally:
        _execute(pg_schema, "SET lock_timeout = '20s'", f"DROP SCHEMA {sibling.name} CASCADE")


def fresh_postgres(pg: PgSchema, tmp_path: Path) -> list[str]:
    led = open_ledger(pg.url(), spool=tmp_path / "spool")
    led.close()
    return led.applied_migrations


def fresh_sqlite(path: Path) -> list[str]:
    led = SqliteLedger(path)
    led.close()
    return led.applied_migrations


def usage(i: int) -> UsageRecord:
    return usage_row(i)


# ---------------------------------------------------------------------------- tests
def test_every_migration_has_sql_for_both_dialects_in_named_order():
    assert list(NAMES) == sorted(set(NAMES)), "names are unique and sort in the order they apply"
    assert [n[:4] for n in NAMES] == [f"{i:04d}" for i in range(1, len(NAMES) + 1)]
    for m in MIGRATIONS:
        for dialect in DIALECTS:
            assert statements(m.sql(dialect)), f"{m.name} has no SQL for {dialect}"
    with pytest.raises(ValueError, match="unknown SQL dialect"):
        MIGRATIONS[0].sql("mysql")


def test_fresh_sqlite_and_postgresql_ledgers_have_the_same_schema(pg_schema, tmp_path):
    assert fresh_sqlite(tmp_path / "l.db") == list(NAMES) == fresh_postgres(pg_schema, tmp_path)
    lite, pg = sqlite_schema(tmp_path / "l.db"), postgres_schema(pg_schema)
    assert_same(lite.portable(), pg.portable())
    named = {(t, n, cols) for t, n, cols, _, _ in lite.indexes if n}
    assert ("usage", "usage_kind_ts", ("kind", "ts")) in named  # what the report and budget seeding read
    assert ("sessions", "sessions_killed", ("session",)) in named  # what every gateway's kill poll reads
    assert not {n for _, n, *_ in named} & {"usage_ts", "usage_agent_ts", "usage_session_ts"}  # unread (0006)


def test_postgresql_ledger_from_the_old_list_upgrades_in_place_to_a_fresh_ones_schema(pg_schema, pg_sibling, tmp_path):
    fresh_postgres(pg_sibling, tmp_path / "fresh")
    # what pg_schema.migrate did: the bookkeeping table, then each step and its row
    _execute(
        pg_schema,
        "CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)",
        *(f"{sql}; INSERT INTO schema_migrations VALUES ('{name}', 0)" for name, sql in OLD_POSTGRES),
    )
    with psycopg.connect(pg_schema.url(), autocommit=True) as conn, conn.transaction(), conn.cursor() as cur:
        for sql, values in statements_for([pending(usage(1))]):  # what that release's writer wrote
            cur.executemany(to_pyformat(sql), values)
        cur.execute(  # and its session row, in the columns that release had (0009 added three)
            "INSERT INTO sessions VALUES ('s', 'k', NULL, 1.0, 2.0, 1, 1, 1, 0.0, 0.0, NULL)"
        )
    led = open_ledger(pg_schema.url(), spool=tmp_path / "spool")
    try:
        assert led.applied_migrations == list(NAMES[NAMES.index("0006_trim_usage_indexes") :])  # 0006 and later
        assert_same(postgres_schema(pg_schema), postgres_schema(pg_sibling))  # exact types, not just compatible
        again = pending(usage(2))
        led._write_batch([again])  # a replayed record still lands once: the renamed index holds
        led._write_batch([again])
        assert [r["request_id"] for r in led.query("SELECT request_id FROM usage ORDER BY id")] == ["r1", "r2"]
        assert led.kill_sessions("stop", session="s").killed == ["s"] and led.killed_sessions() == {"s": "stop"}
    finally:
        led.close()
    assert open_ledger(pg_schema.url(), spool=tmp_path / "spool").applied_migrations == []


def test_sqlite_ledger_from_the_old_list_upgrades_in_place_to_a_fresh_ones_schema(tmp_path):
    fresh_sqlite(tmp_path / "fresh.db")
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
    for name, sql in OLD_SQLITE:
        conn.executescript(f"{sql}; INSERT INTO schema_migrations VALUES ('{name}', 0)")
    conn.close()
    assert fresh_sqlite(tmp_path / "old.db") == list(NAMES[NAMES.index("0007_one_schema") :])  # 0007 and later
    assert_same(sqlite_schema(tmp_path / "old.db"), sqlite_schema(tmp_path / "fresh.db"))
    assert fresh_sqlite(tmp_path / "old.db") == []


def test_0009_marks_the_old_default_sessions_implicit_and_dates_the_old_kills(tmp_path):
    """Sessions named key:agent were the defaults before 0009; a kill then had no time: its last request."""
    from tiergate.ledger.migrations import bookkeeping_sql, for_dialect

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(bookkeeping_sql("sqlite"))
    for name, sql in for_dialect("sqlite")[: NAMES.index("0009_session_lifecycle")]:
        conn.executescript(f"{sql}; INSERT INTO schema_migrations VALUES ('{name}', 0)")
    for row in (
        "('master:-', 'master', NULL, 1.0, 50.0, 1, 1, 1, 0.0, 0.0, 'session master:- is 9h old')",
        "('bot-key:bot', 'bot-key', 'bot', 1.0, 60.0, 1, 1, 1, 0.0, 0.0, NULL)",
        "('run-1', 'master', NULL, 1.0, 70.0, 1, 1, 1, 0.0, 0.0, 'killed by an operator')",
    ):
        conn.execute(f"INSERT INTO sessions VALUES {row}")
    conn.close()
    led = SqliteLedger(path)
    try:
        assert led.applied_migrations == list(NAMES[NAMES.index("0009_session_lifecycle") :])
        rows = {r["session"]: (r["implicit"], r["killed_at"], r["revived_at"]) for r in led.sessions()}
        assert rows == {"master:-": (1, 50.0, None), "bot-key:bot": (1, None, None), "run-1": (0, 70.0, None)}
    finally:
        led.close()
