"""One contract, two ledgers: SQLite and PostgreSQL answer every Ledger method the same way.

PostgreSQL-only cases put a CuttableProxy between the ledger and the server
to make an outage: records spool to disk without blocking the caller, and
land exactly once when the database is back (or when the next ledger opens
on the same spool).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from procs import wait_until
from tcp_cut import CuttableProxy
from tiergate.core.errors import LedgerUnavailable, SessionNotFound
from tiergate.core.sanitize import clean_id, clean_text
from tiergate.core.types import UsageRecord
from tiergate.ledger.base import Ledger, open_ledger
from tiergate.ledger.records import Kills, LocalModelEvent, SessionRow, hash_key, pending


def usage(
    i: int, *, ts: float | None = None, kind: str = "request", status: int = 200, agent: str = "a"
) -> UsageRecord:
    return UsageRecord(
        ts=ts if ts is not None else time.time(),
        request_id=f"r{i}",
        kind=kind,
        key_name="k",
        agent=agent,
        session="s",
        task="t",
        requested_model="auto",
        deployment="d",
        provider="p",
        tier=1,
        local=i % 2 == 0,
        prompt_tokens=i,
        completion_tokens=1,
        usage_estimated=False,
        cost_usd=0.001,
        latency_ms=1.0,
        ttft_ms=None,
        status=status,
        stream=False,
        fallbacks=0,
        reason="r",
        extra={"note": "x"} if i == 0 else {},
    )


def session_row(name: str, *, last_seen: float, requests: int, killed: str | None = None) -> SessionRow:
    return SessionRow(
        name, "k", "agent", 1.0, last_seen, requests, 10 * requests, requests, 0.5 * requests, 0.25, killed
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    """Where a ledger lives: a SQLite path, or a PostgreSQL schema of this test's own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def make(target, tmp_path):
    opened: list[Ledger] = []

    def factory(url: str | None = None) -> Ledger:
        led = open_ledger(url or target, spool=tmp_path / "spool")
        opened.append(led)
        return led

    yield factory
    for led in opened:
        led.close()


def count(led: Ledger, where: str = "1=1", params: tuple = ()) -> int:
    return int(led.query(f"SELECT count(*) AS n FROM usage WHERE {where}", params)[0]["n"])


# ---------------------------------------------------------------------------- both backends
def test_close_drains_every_queued_record(make):
    led = make()
    led.start()
    for i in range(5000):
        led.record(usage(i))
    led.record(session_row("s1", last_seen=2.0, requests=1))
    led.record(LocalModelEvent(time.time(), "m", "load", "{}"))
    led.close()  # returns only when every record is written
    again = make()
    assert count(again) == 5000
    assert int(again.query("SELECT sum(prompt_tokens) AS s FROM usage")[0]["s"]) == sum(range(5000))
    assert [r["session"] for r in again.sessions()] == ["s1"]
    h = again.health()
    assert (h["ok"], h["spooled"], h["error"]) == (True, 0, None) and h["backend"] in ("sqlite", "postgresql")


def test_usage_rows_answer_the_report_and_budget_queries(make):
    from tiergate.ledger.report import build_report, day_bounds

    led = make()
    led.start()
    start, end = day_bounds("2026-11-20")
    for i in range(6):
        led.record(usage(i, ts=start + 60 * i))
    led.record(usage(10, ts=start + 5, kind="attempt", status=503))
    led.record(usage(11, ts=end + 5))  # the next day
    led.close()
    led = make()
    rows = led.query(
        "SELECT key_name, agent, session, task, deployment, cost_usd FROM usage "
        "WHERE kind = 'request' AND status < 400 AND deployment IS NOT NULL AND ts >= ? AND ts < ?",
        (start, end),
    )
    assert len(rows) == 6 and rows[0]["deployment"] == "d" and rows[0]["agent"] == "a"
    assert count(led, "request_id LIKE 'r1%' AND ts >= ?", (start,)) == 3  # r1, r10, r11: a literal % survives
    extra = led.query("SELECT extra, local FROM usage WHERE request_id = ?", ("r0",))[0]
    assert extra["extra"] == '{"note":"x"}' and extra["local"] == 1
    rep = build_report(led, "2026-11-20")
    assert (rep.requests, rep.failed_attempts, rep.prompt_tokens) == (6, 1, sum(range(6)))
    assert rep.local_share == 0.5 and rep.by_agent["a"].requests == 6


def test_keys_create_list_revoke_and_versions(make):
    led = make()
    v0 = led.keys_version()
    key = led.create_key("bot", agent="researcher")
    assert key.startswith("tg-") and led.keys_version() == v0 + 1
    active = led.active_key_hashes()
    assert list(active) == [hash_key(key)] and active[hash_key(key)].agent == "researcher"
    with pytest.raises(ValueError, match="already exists"):
        led.create_key("bot")
    led.create_key("other")
    assert [(k.name, k.prefix, k.revoked) for k in led.list_keys()] == [
        ("bot", key[:8], None),
        ("other", led.list_keys()[1].prefix, None),
    ]
    assert led.revoke_key("bot") and not led.revoke_key("bot") and not led.revoke_key("ghost")
    assert [k.name for k in led.active_key_hashes().values()] == ["other"]
    assert led.list_keys()[0].revoked is not None
    assert make().keys_version() == led.keys_version()  # another process sees the same version


@pytest.mark.parametrize("name", ["master", "Master", "anonymous", "jobs", " jobs "])
def test_keys_named_like_tiergates_own_identities_are_refused(make, name):
    """A virtual key named "master" would have passed for the master key: rights go by the key's name."""
    led = make()
    with pytest.raises(ValueError, match="tiergate's own"):
        led.create_key(name)
    assert led.list_keys() == []


def test_admin_keys_are_marked_in_the_list_and_the_active_set(make):
    led = make()
    ops = led.create_key("ops", admin=True)
    bot = led.create_key("bot", agent="researcher")
    active = led.active_key_hashes()
    assert active[hash_key(ops)].admin is True and active[hash_key(bot)].admin is False
    assert [(k.name, k.admin) for k in led.list_keys()] == [("ops", True), ("bot", False)]


def test_flags_and_control_version(make):
    led = make()
    v0 = led.control_version()
    led.set_flag("emergency", "budget gone")
    led.set_flag("other", "x")
    assert led.flags() == {"emergency": "budget gone", "other": "x"}
    led.set_flag("emergency", None)
    assert led.flags() == {"other": "x"} and led.control_version() == v0 + 3


def test_kill_sessions_and_killed_sessions(make):
    led = make()
    led.start()
    for name, agent, cost in (("s1", "a", 1.0), ("s2", "a", 5.0), ("s3", "b", 9.0)):
        led.record(SessionRow(name, "k", agent, 1.0, 2.0, 1, 1, 1, cost, 0.1, None))
    led.record(SessionRow("k:a:2027-01-15", "k", "a", 1.0, 2.0, 1, 1, 1, 7.0, 0.1, None, True))  # a default session
    led.close()
    led = make()
    v0 = led.control_version()
    bulk = led.kill_sessions("over budget", over_usd=4.0)
    assert (sorted(bulk.killed), bulk.spared) == (["s2", "s3"], ["k:a:2027-01-15"])  # bulk kills spare defaults
    assert led.kill_sessions("agent a", agent="a") == Kills(["s1"], ["k:a:2027-01-15"])  # s2 was killed already
    with pytest.raises(SessionNotFound, match="no session named 'future'"):
        led.kill_sessions("ahead of time", session="future")  # an id never seen is not blocked in advance
    assert led.kill_sessions("nothing", session="s1") == Kills([], [])  # its kill is in force
    assert led.killed_sessions() == {"s1": "agent a", "s2": "over budget", "s3": "over budget"}
    assert led.kill_sessions("by name", session="k:a:2027-01-15") == Kills(["k:a:2027-01-15"], [])  # named: killed
    assert led.control_version() == v0 + 3
    assert led.session("future") is None


def test_a_session_only_its_gateway_knows_yet_is_killed_with_the_row_it_gives(make):
    led = make()
    held = SessionRow("fresh", "k", "a", 1.0, 2.0, 3, 3, 3, 0.5, 0.1, None)
    with pytest.raises(SessionNotFound):
        led.kill_sessions("loop", session="fresh")
    with pytest.raises(SessionNotFound):  # a row for another id proves nothing
        led.kill_sessions(
            "loop", session="fresh", known=SessionRow("other", "k", "a", 1.0, 2.0, 3, 3, 3, 0.5, 0.1, None)
        )
    v0, t0 = led.control_version(), time.time()
    assert led.kill_sessions("loop", session="fresh", known=held) == Kills(["fresh"], [])
    row = led.session("fresh")
    assert (row["killed_reason"], row["requests"], row["agent"]) == ("loop", 3, "a") and row["killed_at"] >= t0
    assert led.control_version() == v0 + 1  # other gateways read it at their next poll


def test_bulk_kills_take_default_sessions_only_when_asked_and_expired_kills_can_be_made_again(make):
    led = make()
    led.start()
    led.record(SessionRow("s", "k", "a", 1.0, 2.0, 1, 1, 1, 3.0, 0.1, None))
    led.record(SessionRow("k:a:d", "k", "a", 1.0, 2.0, 1, 1, 1, 3.0, 0.1, None, True))
    led.close()
    led = make()
    t0 = time.time()
    assert sorted(led.kill_sessions("all", over_usd=0, include_implicit=True, kill_ttl_s=1e-3).killed) == ["k:a:d", "s"]
    assert all(r["killed_at"] >= t0 for r in led.session_kills(since=t0))
    assert wait_until(lambda: time.time() - t0 > 0.01)  # both kills are past their 1 ms ttl
    assert led.kill_sessions("again", session="s", kill_ttl_s=1e-3).killed == ["s"]  # an expired kill is no kill
    assert led.kill_sessions("again", session="s", kill_ttl_s=None).killed == []  # without a ttl it still holds
    assert {r["session"]: r["killed_reason"] for r in led.session_kills(since=0.0)} == {"s": "again", "k:a:d": "all"}


def test_a_revive_lifts_a_kill_in_force_and_starts_the_session_afresh(make):
    led = make()
    led.start()
    led.record(SessionRow("s", "k", "a", 1.0, 2.0, 3, 30, 3, 6.0, 0.5, None))
    led.close()
    led = make()
    with pytest.raises(SessionNotFound):
        led.revive_session("nobody", now=time.time())
    assert led.revive_session("s", now=time.time()) is False  # not killed: nothing to lift
    led.kill_sessions("loop", session="s")
    killed_at = led.session("s")["killed_at"]
    assert led.revive_session("s", now=killed_at + 3600, kill_ttl_s=60) is False  # that kill expired long ago
    v0 = led.control_version()
    assert led.revive_session("s", now=killed_at + 1, kill_ttl_s=60) is True
    row = led.session("s")
    assert (row["killed_reason"], row["killed_at"], row["revived_at"]) == (None, None, killed_at + 1)
    assert (row["first_seen"], row["requests"], row["cost_usd"], row["prompt_tokens"]) == (killed_at + 1, 0, 0.0, 0)
    assert led.control_version() == v0 + 1
    assert [r["revived_at"] for r in led.session_kills(since=killed_at)] == [killed_at + 1]


def test_a_revive_of_a_kill_still_in_the_writers_queue_holds_when_the_kill_lands(make):
    led = make()
    led.start()
    led.record(session_row("s", last_seen=10.0, requests=1))
    led.close()
    led = make()
    now = time.time()
    assert led.revive_session("s", now=now, held_kill=True) is True  # the row holds no kill yet
    assert led.revive_session("never-written", now=now, held_kill=True) is True  # nor any row at all
    led.start()
    for name in ("s", "never-written"):  # the guardian's kill rows, written after the revive
        led.record(SessionRow(name, "k", "agent", 1.0, now - 0.5, 3, 3, 3, 9.0, 0.0, "over", False, now - 0.5))
    led.close()
    led = make()
    for name in ("s", "never-written"):
        row = led.session(name)
        assert (row["killed_reason"], row["revived_at"], row["cost_usd"]) == (None, now, 0.0), name


def test_an_upsert_never_brings_back_a_kill_its_revive_lifted(make):
    led = make()
    led.start()
    led.record(session_row("s", last_seen=10.0, requests=1))
    led.close()
    led = make()
    led.kill_sessions("stop", session="s")
    at = led.session("s")["killed_at"]
    led.revive_session("s", now=at + 1)
    led.start()
    # a tracker that had not seen the revive yet: its later row still carries the old kill
    led.record(SessionRow("s", "k", "agent", at + 1, at + 5, 1, 1, 1, 0.1, 0.0, "stop", False, at))
    led.close()
    led = make()
    assert led.session("s")["killed_reason"] is None and led.session("s")["requests"] == 1
    led.start()
    led.record(SessionRow("s", "k", "agent", at + 1, at + 6, 2, 2, 2, 9.0, 0.0, "over", False, at + 2))  # a new kill
    led.close()
    row = make().session("s")
    assert (row["killed_reason"], row["killed_at"], row["revived_at"]) == ("over", at + 2, at + 1)


def test_prune_sessions_deletes_old_rows_and_keeps_kills_in_force(make):
    led = make()
    led.start()
    now = time.time()
    led.record(SessionRow("old", "k", None, 1.0, now - 3600, 1, 1, 1, 0.1, 0.0, None))
    led.record(SessionRow("recent", "k", None, 1.0, now, 1, 1, 1, 0.1, 0.0, None))
    led.record(SessionRow("old-kill-over", "k", None, 1.0, now - 3600, 1, 1, 1, 0.1, 0.0, "x", False, now - 3000))
    led.record(SessionRow("old-kill-in-force", "k", None, 1.0, now - 3600, 1, 1, 1, 0.1, 0.0, "x", False, now - 10))
    led.close()
    led = make()
    assert led.prune_sessions(before=now - 60, killed_before=None) == 1  # without kill_ttl: every kill stays
    assert led.prune_sessions(before=now - 60, killed_before=now - 600) == 1
    assert sorted(r["session"] for r in led.sessions()) == ["old-kill-in-force", "recent"]
    assert led.query("SELECT count(*) AS n FROM usage")[0]["n"] == 0  # (usage rows are never pruned here)


def test_session_upsert_keeps_kill_and_ignores_older_rows(make):
    led = make()
    led.start()
    led.record(session_row("s", last_seen=10.0, requests=1))
    led.close()
    led = make()
    led.kill_sessions("stop", session="s")
    led.start()
    led.record(session_row("s", last_seen=20.0, requests=2))  # the tracker's later row has no kill in it
    led.record(LocalModelEvent(5.0, "llama", "load", '{"s": 1}'))
    led.close()
    led = make()
    led.start()
    led.record(session_row("s", last_seen=15.0, requests=9))  # an older row replayed late changes nothing
    led.close()
    led = make()
    (row,) = led.sessions()
    assert (row["requests"], row["last_seen"], row["killed_reason"], row["cost_usd"]) == (2, 20.0, "stop", 1.0)
    events = led.query("SELECT ts, model, event, details FROM local_model_events")
    assert [dict(e) for e in events] == [{"ts": 5.0, "model": "llama", "event": "load", "details": '{"s": 1}'}]


def test_stored_responses_belong_to_their_key_and_expire(make):
    led = make()
    led.store_response("resp_1", key_name="a", response='{"id": "resp_1"}', input_items="[]", keep_s=3600)
    led.store_response("resp_old", key_name="a", response="{}", input_items="[]", keep_s=-1)
    row = led.stored_response("resp_1", key_name="a")
    assert row is not None and row["response"] == '{"id": "resp_1"}' and row["input_items"] == "[]"
    assert led.stored_response("resp_1", key_name="b") is None  # another key's response does not exist for it
    assert led.stored_response("resp_old", key_name="a") is None  # expired reads as absent
    assert not led.delete_response("resp_1", key_name="b")
    assert led.prune_responses(before=time.time()) == 1
    assert led.delete_response("resp_1", key_name="a") and led.stored_response("resp_1", key_name="a") is None


def test_migrations_apply_once(make):
    first = make()
    names = [r["name"] for r in first.query("SELECT name FROM schema_migrations ORDER BY name")]
    assert first.applied_migrations == names and "0005_record_ids" in names
    second = make()
    assert second.applied_migrations == []
    assert [r["name"] for r in second.query("SELECT name FROM schema_migrations ORDER BY name")] == names


def test_two_ledgers_migrating_one_fresh_database_at_once(make):
    barrier, results, errors = threading.Barrier(2), [], []

    def open_one() -> None:
        barrier.wait()
        try:
            results.append(make().applied_migrations)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 2
    applied = results[0] + results[1]  # each migration applied by exactly one of them
    assert sorted(applied) == sorted(set(applied)) and {"0001_usage", "0005_record_ids"} <= set(applied)
    assert make().applied_migrations == []


def test_a_record_written_twice_is_one_row(make):
    led = make()
    same = pending(usage(1))
    led._write_batch([same, pending(usage(2))])  # what a spool replay or a re-sent batch does
    led._write_batch([same])
    event = pending(LocalModelEvent(1.0, "m", "load", "{}"))
    led._write_batch([event])
    led._write_batch([event])
    assert count(led) == 2 and count(led, "record_id = ?", (same.record_id,)) == 1
    assert led.query("SELECT count(*) AS n FROM local_model_events")[0]["n"] == 1


# ---------------------------------------------------------------------------- hostile data (issue 14)
BAD = "\udcff"  # a header's non-UTF-8 byte as aiohttp hands it over: no UTF-8 encoder takes it


def hostile(i: int) -> UsageRecord:
    """Lone surrogates in every text field (and a NUL, and numbers no column holds)."""
    return usage(i)._replace(
        request_id=f"r{i}{BAD}",
        key_name=f"k{BAD}",
        agent=f"a{BAD}",
        session=f"s{BAD}" * 200,  # and too long
        task=f"t{BAD}",
        requested_model=f"m{BAD}",
        deployment=f"d{BAD}",
        provider=f"p{BAD}",
        reason=f"r{BAD}",
        error=f"e{BAD}\x00",
        extra={f"x{BAD}": f"y{BAD}"},
        prompt_tokens=10**300,
        cost_usd=float("nan"),
    )


def test_lone_surrogates_in_every_text_field_are_written_cleaned_and_later_records_too(make):
    led = make()
    led.start()
    led.record(usage(1))
    led.record(hostile(2))
    led.record(SessionRow(f"s{BAD}", f"k{BAD}", f"a{BAD}", 1.0, 2.0, 10**30, 1, 1, float("inf"), 0.0, f"x{BAD}"))
    led.record(LocalModelEvent(1.0, f"m{BAD}", "load", f"{{{BAD}}}"))
    assert wait_until(lambda: led.written == 2, timeout=30), led.health()
    for i in range(3, 6):  # every later record, from every client, still lands
        led.record(usage(i))
    assert wait_until(lambda: led.written == 5, timeout=30), led.health()
    h = led.health()
    assert h["ok"] and h["writer"]["alive"] and h["writer"]["failed_batches"] == 0 and h["writer"]["quarantined"] == 0
    led.close()
    led = make()
    assert sorted(r["request_id"] for r in led.query("SELECT request_id FROM usage")) == [
        "r1",
        "r2\ufffd",
        "r3",
        "r4",
        "r5",
    ]
    row = led.query("SELECT * FROM usage WHERE request_id = ?", ("r2\ufffd",))[0]
    rec = hostile(2)
    for column in ("key_name", "agent", "session", "task", "requested_model", "deployment", "provider"):
        assert row[column] == clean_id(getattr(rec, column)), column
    assert row["session"] == clean_id(rec.session) and len(row["session"]) == 256
    assert (row["reason"], row["error"]) == ("r\ufffd", "e\ufffd\ufffd")
    assert (row["prompt_tokens"], row["cost_usd"], row["extra"]) == (2**63 - 1, 0.0, '{"x\ufffd":"y\ufffd"}')
    (session,) = led.sessions()
    assert (session["session"], session["agent"], session["requests"]) == ("s\ufffd", "a\ufffd", 2**63 - 1)
    assert session["killed_reason"] == clean_text(f"x{BAD}")
    assert led.query("SELECT model FROM local_model_events")[0]["model"] == "m\ufffd"
    assert led.query("SELECT count(*) AS n FROM quarantine")[0]["n"] == 0


def test_an_unwritable_record_is_quarantined_with_its_reason_and_its_batch_is_written(make):
    led = make()
    led.start()
    unwritable = usage(2)._replace(prompt_tokens="abc", session=f"s{BAD}")  # no cleaning can make this a number
    for rec in (usage(1), unwritable, usage(3)):  # one batch (queued within the writer's 20 ms)
        led.record(rec)
    assert wait_until(lambda: led.written == 2, timeout=30), led.health()
    led.record(usage(4))  # and the writer goes on
    assert wait_until(lambda: led.written == 3, timeout=30), led.health()
    h = led.health()
    assert h["ok"] and h["writer"]["quarantined"] == 1 and h["quarantine"]["table"] == "quarantine"
    led.close()
    led = make()
    assert sorted(r["request_id"] for r in led.query("SELECT request_id FROM usage")) == ["r1", "r3", "r4"]
    (q,) = led.query("SELECT ts, record_id, kind, reason, record FROM quarantine")
    assert q["kind"] == "usage" and q["reason"] == "TypeError: not an integer: str" and q["ts"] > 0
    assert '"prompt_tokens": "abc"' in q["record"] and '"session": "s\\udcff"' in q["record"]  # as it was sent
    led._write_batch([pending(unwritable)._replace(record_id=q["record_id"])])  # the same record again: one row
    assert led.query("SELECT count(*) AS n FROM quarantine")[0]["n"] == 1


# ---------------------------------------------------------------------------- PostgreSQL outages
@pytest.fixture
def proxy():
    p = CuttableProxy("127.0.0.1", 5432).start()
    yield p
    p.stop()


def postgres_via(proxy: CuttableProxy, pg_schema, spool: Path):  # type: ignore[no-untyped-def]
    from tiergate.ledger.postgres import PostgresLedger

    return PostgresLedger(pg_schema.url(port=proxy.port), spool_dir=spool, retry_max_s=0.5, close_timeout_s=10)


def test_outage_spools_without_blocking_and_every_record_lands_once(proxy, pg_schema, tmp_path):
    led = postgres_via(proxy, pg_schema, tmp_path / "spool")
    led.start()
    for i in range(200):
        led.record(usage(i))
    assert wait_until(lambda: led.pending() == 0 and led.written == 200, timeout=20)
    proxy.cut()
    slowest = 0.0
    for i in range(200, 500):
        t0 = time.perf_counter()
        led.record(usage(i))
        slowest = max(slowest, time.perf_counter() - t0)
        if i % 50 == 0:
            time.sleep(0.05)  # several batches, not one
    assert slowest < 0.5  # the request path only queues (loose: a loaded CI machine stalls threads)
    assert wait_until(lambda: led.health()["spooled"] == 300, timeout=20), led.health()
    health = led.health()
    assert health["ok"] is False and health["backend"] == "postgresql" and health["error"]
    with pytest.raises(LedgerUnavailable) as err:
        led.keys_version()
    assert err.value.status == 503
    assert list((tmp_path / "spool").rglob("*.jsonl"))
    proxy.restore()
    assert wait_until(lambda: led.health()["spooled"] == 0 and led.health()["ok"], timeout=30), led.health()
    assert led.keys_version() == 0
    led.close()
    assert not list((tmp_path / "spool").rglob("*.jsonl"))
    rows = pg_schema.rows("SELECT request_id, count(*) AS n FROM usage GROUP BY request_id")
    assert len(rows) == 500 and {r["n"] for r in rows} == {1}


def test_spool_left_by_a_ledger_closed_during_an_outage_is_replayed_next_start(proxy, pg_schema, tmp_path):
    spool = tmp_path / "spool"
    first = postgres_via(proxy, pg_schema, spool)
    first.start()
    first.record(usage(0))
    assert wait_until(lambda: first.written == 1, timeout=20)
    proxy.cut()
    for i in range(1, 101):
        first.record(usage(i))
        first.record(session_row("s", last_seen=float(i), requests=i))
    t0 = time.monotonic()
    first.close()  # the database is down: close spools what is left, in bounded time
    assert time.monotonic() - t0 < 12
    first.record(usage(101))  # a straggler after close: spooled too, never a network wait
    assert first.health()["spooled"] == 201
    proxy.restore()
    second = postgres_via(proxy, pg_schema, spool)
    assert second.health()["spooled"] == 201  # seen at open, replayed once started
    second.start()
    assert wait_until(lambda: second.health()["spooled"] == 0, timeout=30), second.health()
    second.close()
    assert not list(spool.rglob("*.jsonl"))
    rows = pg_schema.rows("SELECT request_id FROM usage")
    assert sorted(r["request_id"] for r in rows) == sorted(f"r{i}" for i in range(102))
    assert pg_schema.rows("SELECT requests FROM sessions") == [{"requests": 100}]


def test_the_spool_takes_hostile_records_through_an_outage_and_a_stop_and_replays_them(proxy, pg_schema, tmp_path):
    spool = tmp_path / "spool"
    first = postgres_via(proxy, pg_schema, spool)
    first.start()
    first.record(usage(0))
    assert wait_until(lambda: first.written == 1, timeout=20)
    proxy.cut()
    first.record(hostile(1))  # orjson alone refuses it ("str is not valid UTF-8"): the spool failed on it
    first.record(usage(2)._replace(prompt_tokens="abc"))  # spools as it is; the database refuses it at replay
    first.record(usage(3))
    assert wait_until(lambda: first.health()["spooled"] == 3, timeout=20), first.health()
    first.record(hostile(4))
    first.record(SessionRow(f"s{BAD}", "k", None, 1.0, 2.0, 10**30, 1, 1, 0.5, 0.0, None))
    first.close()  # SIGTERM while the database is down: the rest goes to the spool too
    assert first.health()["spooled"] == 5 and not list(tmp_path.glob("*.quarantine.jsonl"))
    proxy.restore()
    second = postgres_via(proxy, pg_schema, spool)
    second.start()  # replays before its writer starts
    assert second.health()["spooled"] == 0, second.health()
    second.close()
    rows = {r["request_id"]: r for r in pg_schema.rows("SELECT request_id, session, prompt_tokens FROM usage")}
    assert sorted(rows) == ["r0", "r1\ufffd", "r3", "r4\ufffd"]
    assert rows["r1\ufffd"]["session"] == clean_id(hostile(1).session)
    assert rows["r1\ufffd"]["prompt_tokens"] == 2**63 - 1
    assert [r["reason"] for r in pg_schema.rows("SELECT reason FROM quarantine")] == ["TypeError: not an integer: str"]
    assert pg_schema.rows("SELECT session, requests FROM sessions") == [{"session": "s\ufffd", "requests": 2**63 - 1}]


def test_unreachable_at_open_is_a_clear_503_without_the_password(pg_schema, tmp_path):
    proxy = CuttableProxy("127.0.0.1", 5432).start()
    port = proxy.port
    proxy.stop()  # nothing listens there now
    with pytest.raises(LedgerUnavailable) as err:
        open_ledger(pg_schema.url(port=port, password="hunter2-secret"), spool=tmp_path)
    assert err.value.status == 503 and "hunter2-secret" not in err.value.message and ":***@" in err.value.message
