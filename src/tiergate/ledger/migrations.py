"""The ledger's schema: one ordered list of named migrations, each with its SQL for SQLite and PostgreSQL.

Each backend applies, in order, the steps its database has not recorded, and
records each name in ``schema_migrations`` in the same transaction (the
pattern of simonw/llm's ``migrations.py``). The two backends used to keep a
list each and drifted apart; with one list a step cannot reach one dialect
and miss the other. SQL both dialects accept is written once, with the column
types that differ as placeholders (``{real}``, ``{count}``, ...); only what a
dialect cannot share is written per dialect. A step some ledger has already
applied is history: change the schema by adding a step, never by editing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

DIALECTS = ("sqlite", "postgres")


@dataclass(frozen=True, slots=True)
class _Types:
    serial: str  # an integer primary key the database numbers itself
    real: str  # timestamps, money, milliseconds
    count: str  # tokens, requests, versions: 64-bit where the type is sized
    flag: str  # a boolean stored as 0/1 (callers read it as an integer on both)


_TYPES = MappingProxyType(
    {
        "sqlite": _Types(serial="INTEGER PRIMARY KEY", real="REAL", count="INTEGER", flag="INTEGER"),
        "postgres": _Types(serial="BIGSERIAL PRIMARY KEY", real="DOUBLE PRECISION", count="BIGINT", flag="SMALLINT"),
    }
)


def _typed(sql: str, dialect: str) -> str:
    t = _TYPES[dialect]
    return sql.format(serial=t.serial, real=t.real, count=t.count, flag=t.flag)


@dataclass(frozen=True, slots=True)
class Migration:
    """A named schema step and its SQL in each dialect (statements separated by ``;``)."""

    name: str
    sqlite: str
    postgres: str

    def sql(self, dialect: str) -> str:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown SQL dialect {dialect!r}; expected one of {DIALECTS}")
        return self.sqlite if dialect == "sqlite" else self.postgres


def step(name: str, shared: str = "", *, sqlite: str = "", postgres: str = "") -> Migration:
    """A migration from SQL both dialects accept (types as placeholders), then what only one accepts."""
    return Migration(name, _typed(shared, "sqlite") + sqlite, _typed(shared, "postgres") + postgres)


def bookkeeping_sql(dialect: str) -> str:
    """The table of applied names: both backends have always kept it in this shape, so old ledgers upgrade."""
    return _typed(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied {real} NOT NULL)", dialect
    )


MIGRATIONS: tuple[Migration, ...] = (
    step(
        "0001_usage",
        """
        CREATE TABLE usage (
            id {serial},
            ts {real} NOT NULL, request_id TEXT NOT NULL, kind TEXT NOT NULL,
            key_name TEXT NOT NULL, agent TEXT, session TEXT, task TEXT,
            requested_model TEXT NOT NULL, deployment TEXT, provider TEXT, tier INTEGER,
            local {flag} NOT NULL, prompt_tokens {count} NOT NULL, completion_tokens {count} NOT NULL,
            usage_estimated {flag} NOT NULL, cost_usd {real} NOT NULL, latency_ms {real} NOT NULL,
            ttft_ms {real}, status INTEGER NOT NULL, stream {flag} NOT NULL, fallbacks INTEGER NOT NULL,
            reason TEXT NOT NULL, error TEXT, protocol TEXT NOT NULL, extra TEXT
        );
        CREATE INDEX usage_ts ON usage (ts);
        CREATE INDEX usage_request ON usage (request_id);
        CREATE INDEX usage_agent_ts ON usage (agent, ts);
        CREATE INDEX usage_session_ts ON usage (session, ts);
        """,
    ),
    step(
        "0002_keys",
        """
        CREATE TABLE keys (
            name TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
            agent TEXT, created {real} NOT NULL, revoked {real}
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value {count} NOT NULL);
        INSERT INTO meta VALUES ('keys_version', 0);
        """,
    ),
    step(
        "0003_sessions_and_flags",
        """
        CREATE TABLE sessions (
            session TEXT PRIMARY KEY, key_name TEXT NOT NULL, agent TEXT,
            first_seen {real} NOT NULL, last_seen {real} NOT NULL, requests {count} NOT NULL,
            prompt_tokens {count} NOT NULL, completion_tokens {count} NOT NULL, cost_usd {real} NOT NULL,
            max_context_ratio {real} NOT NULL, killed_reason TEXT
        );
        CREATE INDEX sessions_agent ON sessions (agent);
        CREATE INDEX sessions_last_seen ON sessions (last_seen);
        CREATE TABLE flags (name TEXT PRIMARY KEY, value TEXT, updated {real} NOT NULL);
        INSERT INTO meta VALUES ('control_version', 0);
        """,
        postgres="CREATE INDEX sessions_killed ON sessions (session) WHERE killed_reason IS NOT NULL;",
    ),
    step(
        "0004_local_model_events",
        """
        CREATE TABLE local_model_events (
            id {serial}, ts {real} NOT NULL, model TEXT NOT NULL, event TEXT NOT NULL, details TEXT
        );
        CREATE INDEX local_model_events_ts ON local_model_events (ts);
        """,
    ),
    step(
        # writes are idempotent: a record written twice (a spool replayed, a batch re-sent) leaves one row.
        # SQLite cannot add a column with a UNIQUE constraint, so it gets a unique index; 0007 aligns the names.
        "0005_record_ids",
        "CREATE INDEX usage_kind_ts ON usage (kind, ts);",
        sqlite="""
        ALTER TABLE usage ADD COLUMN record_id TEXT;
        CREATE UNIQUE INDEX usage_record_id ON usage (record_id);
        ALTER TABLE local_model_events ADD COLUMN record_id TEXT;
        CREATE UNIQUE INDEX local_model_events_record_id ON local_model_events (record_id);
        """,
        postgres="""
        ALTER TABLE usage ADD COLUMN record_id TEXT UNIQUE;
        ALTER TABLE local_model_events ADD COLUMN record_id TEXT UNIQUE;
        """,
    ),
    step(
        # Every index costs the one writer ~1 us of CPU per row (docs/decisions/0003-hot-path.md). Reports and
        # budget seeding read usage by (kind, ts); nothing reads these three. PostgreSQL ledgers made before the
        # two backends shared this list never had this step, and apply it now.
        "0006_trim_usage_indexes",
        """
        DROP INDEX IF EXISTS usage_ts;
        DROP INDEX IF EXISTS usage_agent_ts;
        DROP INDEX IF EXISTS usage_session_ts;
        """,
    ),
    step(
        # One schema on both. sessions_killed is what every gateway's kill poll reads (killed_sessions():
        # WHERE killed_reason IS NOT NULL) and, partial, holds only killed sessions, so writes barely pay for it;
        # PostgreSQL had it since 0003. PostgreSQL's record_id indexes take SQLite's names: a rename, no rebuild.
        "0007_one_schema",
        "CREATE INDEX IF NOT EXISTS sessions_killed ON sessions (session) WHERE killed_reason IS NOT NULL;",
        postgres="""
        ALTER INDEX usage_record_id_key RENAME TO usage_record_id;
        ALTER INDEX local_model_events_record_id_key RENAME TO local_model_events_record_id;
        """,
    ),
    step(
        # A record the database refuses even once cleaned is kept here with the reason, and the writer goes on
        # with the rest of its batch (docs/guardrails.md, "What the ledger guarantees"). alerts_sent holds the
        # dedupe keys of alerts already sent, so a restart does not send them again; read back by time.
        "0008_quarantine_and_alerts_sent",
        """
        CREATE TABLE quarantine (
            id {serial}, ts {real} NOT NULL, record_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
            reason TEXT NOT NULL, record TEXT NOT NULL
        );
        CREATE TABLE alerts_sent (dedupe_key TEXT PRIMARY KEY, sent {real} NOT NULL);
        CREATE INDEX alerts_sent_sent ON alerts_sent (sent);
        """,
    ),
    step(
        # Sessions that come back (docs/guardrails.md, "Sessions"): a kill holds for guardian.kill_ttl from
        # killed_at and a revive (revived_at) lifts the kills before it; implicit marks the sessions the gateway
        # named (no session header), which bulk kills spare. A kill from before this step counts from the
        # session's last request; the sessions named key:agent before this step were implicit ones.
        "0009_session_lifecycle",
        """
        ALTER TABLE sessions ADD COLUMN implicit {flag} NOT NULL DEFAULT 0;
        ALTER TABLE sessions ADD COLUMN killed_at {real};
        ALTER TABLE sessions ADD COLUMN revived_at {real};
        UPDATE sessions SET killed_at = last_seen WHERE killed_reason IS NOT NULL;
        UPDATE sessions SET implicit = 1 WHERE session = key_name || ':' || COALESCE(agent, '-');
        CREATE INDEX sessions_revived ON sessions (session) WHERE revived_at IS NOT NULL;
        """,
    ),
    step(
        # Scheduled jobs (docs/jobs.md): one row per run, keyed job@slot so every replica sharing this ledger
        # claims a slot once (a second INSERT is a unique violation). A running row holds a lease its owner
        # renews; one left by a dead replica expires and is taken over. Manual runs are queued as 'requested'.
        "0010_job_runs",
        """
        CREATE TABLE job_runs (
            run_key TEXT PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, job TEXT NOT NULL, slot {real} NOT NULL,
            trigger TEXT NOT NULL, status TEXT NOT NULL, owner TEXT, lease_until {real},
            attempts INTEGER NOT NULL DEFAULT 0, requested {real} NOT NULL, started {real}, ended {real},
            session TEXT, deployment TEXT, cost_usd {real} NOT NULL DEFAULT 0, delivered TEXT, error TEXT,
            output TEXT
        );
        CREATE INDEX job_runs_job_slot ON job_runs (job, slot);
        CREATE INDEX job_runs_status ON job_runs (status);
        """,
    ),
    step(
        # Responses API state (docs/clients.md, "Codex CLI and the Responses API"): a response kept with store
        # (the response object and the whole input it answered, both JSON), readable only by the key that made
        # it, until it expires; previous_response_id continues from it on any replica and any tier.
        "0011_stored_responses",
        """
        CREATE TABLE stored_responses (
            id TEXT PRIMARY KEY, key_name TEXT NOT NULL, created {real} NOT NULL, expires {real} NOT NULL,
            response TEXT NOT NULL, input_items TEXT NOT NULL
        );
        CREATE INDEX stored_responses_expires ON stored_responses (expires);
        """,
    ),
    step(
        # an operator's key: /admin and the dashboard (/ui) take it as they take the master key
        # (`tiergate keys create --admin`), so the master key need not be handed to every operator
        "0012_admin_keys",
        "ALTER TABLE keys ADD COLUMN admin {flag} NOT NULL DEFAULT 0",
    ),
)


def for_dialect(dialect: str) -> tuple[tuple[str, str], ...]:
    """(name, SQL) pairs of every migration, in order, for one dialect."""
    return tuple((m.name, m.sql(dialect)) for m in MIGRATIONS)


def statements(sql: str) -> list[str]:
    """A migration's SQL one statement at a time, as sqlite3 runs it (no ``;`` inside a literal here)."""
    return [s.strip() for s in sql.split(";") if s.strip()]
