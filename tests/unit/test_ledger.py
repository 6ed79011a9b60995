"""The SQLite ledger: migrations once, batched writes, close() drains everything queued."""

from __future__ import annotations

import sqlite3

import pytest

from records import usage_row
from tiergate.core.types import UsageRecord
from tiergate.ledger.sqlite import MIGRATIONS, SqliteLedger, hash_key


def rec(i: int) -> UsageRecord:
    return usage_row(i)


def test_close_drains_every_queued_record(tmp_path):
    led = SqliteLedger(tmp_path / "l.db")
    led.start()
    for i in range(30_000):
        led.record(rec(i))
    led.close()  # returns only when all of them are on disk
    conn = sqlite3.connect(tmp_path / "l.db")
    assert conn.execute("SELECT count(*), sum(prompt_tokens) FROM usage").fetchone() == (30_000, sum(range(30_000)))


def test_migrations_apply_once_and_are_recorded(tmp_path):
    SqliteLedger(tmp_path / "l.db").close()
    SqliteLedger(tmp_path / "l.db").close()
    conn = sqlite3.connect(tmp_path / "l.db")
    assert [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")] == [
        n for n, _ in MIGRATIONS
    ]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_ledger_from_before_0006_upgrades_with_its_rows_and_reads_by_kind_and_time(tmp_path, monkeypatch):
    """0006 drops three usage indexes nothing reads.

    Rows stay, booleans stay 0/1, the report's query uses (kind, ts)."""
    import tiergate.ledger.sqlite as sq

    monkeypatch.setattr(sq, "MIGRATIONS", MIGRATIONS[:5])
    old = SqliteLedger(tmp_path / "l.db")
    old.start()
    for i in range(3):
        old.record(rec(i))
    old.close()
    monkeypatch.undo()
    led = SqliteLedger(tmp_path / "l.db")
    assert led.applied_migrations == ["0006_trim_usage_indexes", *(n for n, _ in MIGRATIONS[6:])]  # and the later ones
    led.start()
    led.record(rec(3))
    led.close()
    conn = sqlite3.connect(tmp_path / "l.db")
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'usage'")}
    assert {"usage_kind_ts", "usage_request", "usage_record_id"} <= indexes
    assert not indexes & {"usage_ts", "usage_agent_ts", "usage_session_ts"}
    assert conn.execute("SELECT count(*), sum(local), sum(stream), typeof(local) FROM usage").fetchone() == (
        4,
        4,
        0,
        "integer",
    )
    plan = " ".join(
        str(r)
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT kind FROM usage WHERE kind IN ('request', 'attempt') AND ts >= 0 AND ts < 1"
        )
    )
    assert "usage_kind_ts" in plan


def test_keys_are_hashed_unique_and_revocable(tmp_path):
    led = SqliteLedger(tmp_path / "l.db")
    v0 = led.keys_version()
    key = led.create_key("bot", agent="researcher")
    assert led.keys_version() == v0 + 1
    active = led.active_key_hashes()
    assert hash_key(key) in active and active[hash_key(key)].agent == "researcher"
    with pytest.raises(ValueError, match="already exists"):
        led.create_key("bot")
    assert led.revoke_key("bot") and not led.revoke_key("bot")
    assert led.active_key_hashes() == {}
    led.close()
