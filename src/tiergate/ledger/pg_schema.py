"""The PostgreSQL ledger's schema: named migrations, applied once, under an advisory lock.

Replicas starting together all call ``migrate``; the session-level advisory
lock (one per schema, so databases shared by several tiergate installs do
not wait on each other) lets one apply and the others find nothing to do.
Every migration runs in its own transaction with its bookkeeping row.
Indexes cover each query the gateway runs: reports and budget seeding by
time and kind, per-agent and per-session lookups, request ids, session kills.
"""

from __future__ import annotations

import contextlib
import time

import psycopg
from psycopg.rows import tuple_row

MIGRATIONS: list[tuple[str, str]] = [
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
]

_LOCK = "SELECT pg_advisory_lock(hashtextextended('tiergate.ledger.migrate:' || coalesce(current_schema(), ''), 0))"
_UNLOCK = ("SELECT pg_advisory_unlock(hashtextextended('tiergate.ledger.migrate:' || coalesce(current_schema(), ''), "
           "0))")


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply what this schema has not seen yet (``conn`` in autocommit mode); returns the names applied."""
    conn.execute(_LOCK)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                     "(name TEXT PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)")
        with conn.cursor(row_factory=tuple_row) as cur:
            done = {r[0] for r in cur.execute("SELECT name FROM schema_migrations").fetchall()}
        applied = []
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            with conn.transaction():
                conn.execute(sql)  # type: ignore[arg-type] - several statements, no parameters
                conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (name, time.time()))
            applied.append(name)
        return applied
    finally:
        with contextlib.suppress(psycopg.Error):  # a broken connection has released the lock already
            conn.execute(_UNLOCK)
