"""SessionTracker writes a session's totals once per flush, not once per request; kills at once; it holds
at most guardian.max_tracked_sessions sessions, and rebuilds totals from what the ledger holds."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tiergate.config.guardrails import GuardianConfig
from tiergate.core.errors import SessionKilled
from tiergate.core.types import Identity, Usage
from tiergate.guardrails.session_rows import Kill
from tiergate.guardrails.sessions import SESSION_SORTS, SessionTracker, rebuild
from tiergate.ledger.records import SessionRow


class RecordingLedger:
    def __init__(self) -> None:
        self.rows: list[object] = []

    def record(self, rec: object) -> None:
        self.rows.append(rec)

    def sessions(self) -> list:
        return []

    def control_version(self) -> int:
        return 0


def session_rows(ledger: RecordingLedger) -> list[SessionRow]:
    return [r for r in ledger.rows if isinstance(r, SessionRow)]


def test_totals_are_coalesced_until_flush_and_kills_are_written_at_once():
    async def main():
        ledger = RecordingLedger()
        tracker = SessionTracker(GuardianConfig(session_max_usd=1.0), ledger=ledger, clock=lambda: 100.0)
        a, b = Identity(key_name="k", session="a"), Identity(key_name="k", session="b")
        for _ in range(5):
            for ident in (a, b):
                state = await tracker.admit(ident)
                await tracker.settle(state, Usage(10, 2), 0.01)
        assert session_rows(ledger) == []  # five requests each, nothing written yet
        assert tracker.flush() == 2
        rows = {r.session: r for r in session_rows(ledger)}
        assert (rows["a"].requests, rows["b"].requests) == (5, 5)
        assert round(rows["a"].cost_usd, 9) == 0.05 and rows["a"].prompt_tokens == 50
        assert tracker.flush() == 0  # nothing changed since

        state = await tracker.admit(a)
        await tracker.settle(state, Usage(10, 2), 2.0)  # over session_max_usd: killed, and written now
        killed = session_rows(ledger)[-1]
        assert killed.session == "a" and killed.killed_reason and killed.requests == 6
        assert tracker.flush() == 0  # the kill's write carried the latest totals

    asyncio.run(main())


# ---------------------------------------------------------------------------- memory bounded (issue 13 item 6)
class RowLedger(RecordingLedger):
    """Reads back the latest session row it was given, as a ledger would once the writer wrote it."""

    def session(self, name: str):
        rows = [r for r in session_rows(self) if r.session == name]
        return dataclasses.asdict(rows[-1]) if rows else None


def test_tracked_sessions_are_capped_least_recently_used_first_and_come_back_with_their_totals():
    from tiergate.observability.metrics import Metrics

    async def main():
        now = [1000.0]
        ledger, metrics = RowLedger(), Metrics()
        tracker = SessionTracker(
            GuardianConfig(max_tracked_sessions=3, session_max_usd=1.0),
            ledger=ledger,
            clock=lambda: now[0],
            metrics=metrics,
        )
        for name in ("a", "b", "c"):
            state = await tracker.admit(Identity(key_name="k", session=name))
            await tracker.settle(state, Usage(10, 2), 0.4)
        await tracker.admit(Identity(key_name="k", session="a"))  # a is used again: b is now the oldest
        for name in ("d", "e"):
            now[0] += 1
            await tracker.admit(Identity(key_name="k", session=name))
        assert list(tracker.states) == ["a", "d", "e"] and tracker.evicted == 2
        assert {r.session: r.cost_usd for r in session_rows(ledger)} == {"b": 0.4, "c": 0.4}  # written as they went
        assert metrics.registry.get_sample_value("tiergate_sessions_evicted_total") == 2
        tracker.flush()
        assert metrics.registry.get_sample_value("tiergate_sessions_tracked") == 3
        back = await tracker.admit(Identity(key_name="k", session="b"))  # read back from the ledger, not afresh
        assert (back.requests, back.cost_usd) == (1, 0.4) and len(tracker.states) == 3
        await tracker.settle(back, Usage(10, 2), 0.7)  # so the session limit still holds across an eviction
        with pytest.raises(SessionKilled):
            await tracker.admit(Identity(key_name="k", session="b"))

    asyncio.run(main())


def test_a_killed_session_stays_refused_after_it_leaves_memory():
    async def main():
        ledger = RowLedger()
        tracker = SessionTracker(GuardianConfig(max_tracked_sessions=2), ledger=ledger, clock=lambda: 5.0)
        tracker.killed["x"] = Kill("runaway loop", 5.0)  # what sync() reads from the ledger
        for name in ("p", "q", "r"):
            await tracker.admit(Identity(key_name="k", session=name))
        with pytest.raises(SessionKilled, match="runaway loop"):
            await tracker.admit(Identity(key_name="k", session="x"))
        assert "x" not in tracker.states

    asyncio.run(main())


def test_session_ids_are_capped_as_the_ledger_stores_them():
    from tiergate.core.sanitize import clean_id

    async def main():
        tracker = SessionTracker(GuardianConfig(), ledger=RecordingLedger(), clock=lambda: 5.0)
        long_id = "x" * 4096
        state = await tracker.admit(Identity(key_name="k", session=long_id))
        assert state.session == clean_id(long_id) and len(state.session) == 256
        bad = await tracker.admit(Identity(key_name="k", session="s\udcff"))
        assert bad.session == "s\ufffd"
        assert (await tracker.admit(Identity(key_name="k", agent="a"))).session == "k:a:1970-01-01"  # implicit

    asyncio.run(main())


def test_pages_of_sessions_most_recent_first():
    async def main():
        now = [0.0]
        tracker = SessionTracker(GuardianConfig(), ledger=RecordingLedger(), clock=lambda: now[0])
        for i in range(25):
            now[0] = float(i)
            await tracker.admit(Identity(key_name="k", session=f"s{i:02d}"))
        total, page = tracker.page(limit=10, offset=0)
        assert total == 25 and [s.session for s in page] == [f"s{i:02d}" for i in range(24, 14, -1)]
        _, last = tracker.page(limit=10, offset=20)
        assert [s.session for s in last] == [f"s{i:02d}" for i in range(4, -1, -1)]
        assert tracker.page(limit=10, offset=30) == (25, [])

    asyncio.run(main())


def test_rebuild_takes_the_larger_of_the_flushed_row_and_the_usage_the_ledger_holds():
    row = {
        "session": "a",
        "key_name": "k",
        "agent": "x",
        "first_seen": 10.0,
        "last_seen": 20.0,
        "requests": 2,
        "prompt_tokens": 20,
        "completion_tokens": 2,
        "cost_usd": 0.2,
        "max_context_ratio": 0.5,
        "killed_reason": None,
        "implicit": 0,
        "killed_at": None,
    }
    sums = [
        {"session": "a", "key_name": "k", "agent": "x", "requests": 3, "prompt_tokens": 30, "completion_tokens": 3}
        | {"cost_usd": 0.3, "first_ts": 9.9, "last_ts": 25.0},
        {"session": "b", "key_name": "k", "agent": None, "requests": 1, "prompt_tokens": 5, "completion_tokens": 1}
        | {"cost_usd": 0.1, "first_ts": 30.0, "last_ts": 31.0},
    ]
    got = {
        s.session: (s.requests, s.cost_usd, s.first_seen, s.last_seen, changed) for s, changed in rebuild([row], sums)
    }
    assert got == {"a": (3, 0.3, 10.0, 25.0, True), "b": (1, 0.1, 30.0, 31.0, True)}
    unchanged = {s.session: changed for s, changed in rebuild([row], [])}
    assert unchanged == {"a": False}  # no usage beyond the row: nothing to write back


# ---------------------------------------------------------------------------- sessions that come back (issue 15 item 5)
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
HOUR = 3600.0


class ControlLedger(RowLedger):
    """Kills and revives as the ledger's sessions table holds them, with its control version."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 0
        self.control: dict[str, dict] = {}
        self.pruned: list[tuple[float, float | None]] = []

    def control_version(self) -> int:
        return self.version

    def session_kills(self, *, since: float) -> list[dict]:
        return [r for r in self.control.values() if max(r["killed_at"] or -1, r["revived_at"] or -1) >= since]

    def sessions(self, **_: object) -> list:
        return []

    def session_usage(self, **_: object) -> list:
        return []

    def kill(self, sid: str, reason: str, at: float) -> None:  # what `tiergate sessions kill` writes
        self.control[sid] = {"session": sid, "killed_reason": reason, "killed_at": at, "revived_at": None}
        self.version += 1

    def revive_session(self, sid: str, *, now: float, kill_ttl_s: float | None = None, held_kill: bool = False) -> bool:
        row = self.control.get(sid)
        if held_kill:  # the caller's kill may not be written yet: recorded anyway
            row = self.control.setdefault(sid, {"session": sid, "killed_reason": "", "killed_at": None})
        if row is None or row["killed_reason"] is None:
            return False
        row.update(killed_reason=None, killed_at=None, revived_at=now)
        self.version += 1
        return True

    def prune_sessions(self, *, before: float, killed_before: float | None) -> int:
        self.pruned.append((before, killed_before))
        return 0


def implicit(agent: str = "a") -> Identity:
    return Identity(key_name="k", agent=agent)  # no session header


def test_naming_the_implicit_session_keeps_every_other_field_of_the_identity():
    """identify() builds the named Identity field by field (cheaper than dataclasses.replace): a field
    added to Identity and not copied there fails here."""
    tracker = SessionTracker(GuardianConfig(), ledger=RecordingLedger(), clock=lambda: T0)
    values = {"key_name": "k", "agent": "a", "task": "coding", "local_only": True, "tags": ("t",)}
    unset = [f.name for f in dataclasses.fields(Identity) if f.name not in values]
    assert unset == ["session", "session_implicit"], f"a new Identity field to copy in identify(): {unset}"
    named = tracker.identify(Identity(**values))
    assert dataclasses.replace(named, session=None, session_implicit=False) == Identity(**values)
    assert named.session_implicit and named.session == tracker.identify(Identity(key_name="k", agent="a")).session


def test_a_request_without_a_session_counts_in_the_implicit_session_of_its_day():
    async def main():
        now = [T0]
        tracker = SessionTracker(
            GuardianConfig(), ledger=RecordingLedger(), clock=lambda: now[0], tz="America/Los_Angeles"
        )
        explicit = Identity(key_name="k", agent="a", session="s-1")
        assert tracker.identify(explicit) is explicit
        named = tracker.identify(implicit())
        assert (named.session, named.session_implicit) == ("k:a:2027-01-15", True)  # 08:00Z is LA's midnight
        assert tracker.identify(Identity(key_name="k")).session == "k:-:2027-01-15"
        state = await tracker.admit(implicit())
        assert (state.session, state.implicit) == ("k:a:2027-01-15", True)
        now[0] = T0 - 1
        assert (await tracker.admit(implicit())).session == "k:a:2027-01-14"
        assert not (await tracker.admit(explicit)).implicit

    asyncio.run(main())


def test_an_implicit_session_past_max_age_starts_a_new_one_where_an_explicit_one_is_killed():
    async def main():
        now = [T0 + 10]
        ledger = RecordingLedger()
        tracker = SessionTracker(GuardianConfig(session_max_age=HOUR), ledger=ledger, clock=lambda: now[0])
        first = await tracker.admit(implicit())
        await tracker.settle(first, Usage(10, 2), 0.5)
        await tracker.admit(Identity(key_name="k", session="run-1"))
        now[0] += HOUR + 1
        again = await tracker.admit(implicit())  # never refused for its age
        assert (first.session, again.session) == ("k:a:2027-01-15T08:00", "k:a:2027-01-15T09:00")
        assert (again.requests, again.cost_usd) == (0, 0.0)
        with pytest.raises(SessionKilled, match="session_max_age"):
            await tracker.admit(Identity(key_name="k", session="run-1"))
        tracker.flush()
        assert {r.session: r.implicit for r in session_rows(ledger)} == {"k:a:2027-01-15T08:00": True, "run-1": False}

    asyncio.run(main())


def test_a_kill_holds_for_kill_ttl_then_the_session_starts_afresh():
    async def main():
        now = [T0]
        ledger = RecordingLedger()
        tracker = SessionTracker(GuardianConfig(session_max_usd=1.0, kill_ttl=60), ledger=ledger, clock=lambda: now[0])
        state = await tracker.admit(Identity(key_name="k", session="s"))
        await tracker.settle(state, Usage(10, 2), 2.0)  # over session_max_usd: killed now
        assert session_rows(ledger)[-1].killed_at == T0
        now[0] += 60
        with pytest.raises(SessionKilled, match="session_max_usd"):
            await tracker.admit(Identity(key_name="k", session="s"))
        now[0] += 1
        back = await tracker.admit(Identity(key_name="k", session="s"))
        assert (back.requests, back.cost_usd, back.killed_reason, back.first_seen) == (0, 0.0, None, T0 + 61)
        assert "s" not in tracker.killed

        forever = SessionTracker(
            GuardianConfig(session_max_usd=1.0, kill_ttl=None), ledger=ledger, clock=lambda: now[0]
        )
        state = await forever.admit(Identity(key_name="k", session="t"))
        await forever.settle(state, Usage(10, 2), 2.0)
        now[0] += 1e6
        with pytest.raises(SessionKilled):
            await forever.admit(Identity(key_name="k", session="t"))

    asyncio.run(main())


def test_a_kill_read_back_from_the_ledger_expires_too():
    async def main():
        now = [T0]
        ledger = RowLedger()
        ledger.record(SessionRow("s", "k", None, T0 - 10, T0 - 5, 3, 3, 3, 9.0, 0.0, "loop", False, T0 - 5))
        tracker = SessionTracker(
            GuardianConfig(kill_ttl=60, max_tracked_sessions=1), ledger=ledger, clock=lambda: now[0]
        )
        tracker._in_ledger_only = True  # as after an eviction: the session is read back when it returns
        now[0] = T0 + 56
        back = await tracker.admit(Identity(key_name="k", session="s"))
        assert (back.cost_usd, back.killed_reason) == (0.0, None)

    asyncio.run(main())


def test_kills_and_revives_made_elsewhere_reach_the_tracker_at_its_next_sync():
    async def main():
        now = [T0]
        ledger = ControlLedger()
        tracker = SessionTracker(GuardianConfig(session_max_usd=5.0), ledger=ledger, clock=lambda: now[0])
        tracker.load()
        state = await tracker.admit(Identity(key_name="k", session="s"))
        await tracker.settle(state, Usage(10, 2), 4.0)
        assert await tracker.sync() is False  # nothing changed
        ledger.kill("s", "runaway loop", T0)
        assert await tracker.sync() is True
        with pytest.raises(SessionKilled, match="runaway loop"):
            await tracker.admit(Identity(key_name="k", session="s"))
        now[0] += 1
        ledger.revive_session("s", now=now[0])
        await tracker.sync()
        back = await tracker.admit(Identity(key_name="k", session="s"))
        assert (back.cost_usd, back.requests) == (0.0, 0)  # afresh: its $4 no longer counts toward the $5

        # a revive older than a kill lifts nothing: the guardian killed "t" after the revive was made
        t = await tracker.admit(Identity(key_name="k", session="t"))
        ledger.kill("t", "old", T0)
        ledger.revive_session("t", now=T0 + 0.5)
        now[0] += 1
        await tracker.settle(t, Usage(10, 2), 6.0)
        await tracker.sync()
        with pytest.raises(SessionKilled, match="session_max_usd"):
            await tracker.admit(Identity(key_name="k", session="t"))

    asyncio.run(main())


def test_a_revive_by_hand_is_at_once_here_and_resets_the_totals_every_replica_shares():
    from tiergate.state.memory import MemoryState

    async def main():
        now = [T0]
        ledger, shared = ControlLedger(), MemoryState()
        cfg = GuardianConfig(session_max_usd=1.0)
        a, b = (SessionTracker(cfg, ledger=ledger, clock=lambda: now[0], shared=shared) for _ in range(2))
        for t in (a, b):
            t.load()
        ident = Identity(key_name="k", session="s")
        state = await a.admit(ident)
        await a.settle(state, Usage(10, 2), 2.0)  # the guardian on replica a kills it, in the shared state too
        # (its session row still waits in the writer's queue: this ledger never gets it)
        with pytest.raises(SessionKilled):
            await b.admit(ident)  # b sees the kill in the shared totals
        now[0] += 1
        assert await a.revive("s") is True
        fresh = await a.admit(ident)
        assert (fresh.cost_usd, fresh.killed_reason) == (0.0, None)
        await a.settle(fresh, Usage(1, 1), 0.25)
        await b.sync()  # b follows the ledger's revive, and keeps the new life's totals
        again = await b.admit(ident)
        assert (again.cost_usd, again.requests, again.killed_reason) == (0.25, 1, None)
        assert await a.revive("s") is False  # not killed any more

    asyncio.run(main())


def test_prune_asks_the_ledger_for_rows_past_retention_keeping_kills_in_force():
    now = [T0]
    ledger = ControlLedger()
    SessionTracker(GuardianConfig(session_retention="30d", kill_ttl="2h"), ledger=ledger, clock=lambda: now[0]).prune()
    SessionTracker(GuardianConfig(session_retention=10, kill_ttl=None), ledger=ledger, clock=lambda: now[0]).prune()
    assert ledger.pruned == [(T0 - 30 * 86400, T0 - 2 * HOUR), (T0 - 10, None)]


def test_a_session_rebuilt_from_usage_rows_learns_it_is_implicit_at_its_next_request():
    async def main():
        ledger = RecordingLedger()
        tracker = SessionTracker(GuardianConfig(), ledger=ledger, clock=lambda: T0)
        sid = tracker.identify(implicit()).session
        (state, _), *_ = rebuild([], [{"session": sid, "key_name": "k", "agent": "a", "requests": 1} | ZERO])
        tracker.states[sid] = state  # what load() holds for a session with usage and no row yet
        assert not state.implicit
        back = await tracker.admit(implicit())
        await tracker.settle(back, Usage(1, 1), 0.0)
        tracker.flush()
        assert back is state and [r.implicit for r in session_rows(ledger)] == [True]  # bulk kills spare it

    asyncio.run(main())


ZERO = {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "first_ts": T0 - 5, "last_ts": T0 - 1}


def test_expired_kills_leave_memory_and_their_sessions_still_start_afresh():
    async def main():
        now = [T0]
        tracker = SessionTracker(
            GuardianConfig(session_max_usd=1.0, kill_ttl=60), ledger=RowLedger(), clock=lambda: now[0]
        )
        state = await tracker.admit(Identity(key_name="k", session="s"))
        await tracker.settle(state, Usage(1, 1), 2.0)
        tracker.killed["gone"] = Kill("old", T0 - 120)  # a session that never came back
        tracker.expire_idle()
        assert set(tracker.killed) == {"s"}
        now[0] += 61
        tracker.expire_idle()
        assert tracker.killed == {}
        back = await tracker.admit(Identity(key_name="k", session="s"))  # judged from its state: the kill is over
        assert (back.cost_usd, back.killed_reason) == (0.0, None)

    asyncio.run(main())


def test_pages_of_sessions_sorted_by_spend_age_and_context():
    async def main():
        now = [0.0]
        tracker = SessionTracker(GuardianConfig(), ledger=RecordingLedger(), clock=lambda: now[0])
        # (session, first seen, spend, context ratio)
        for sid, at, cost, ratio in (("a", 1.0, 0.3, 0.10), ("b", 2.0, 0.9, 0.97), ("c", 3.0, 0.1, 0.85)):
            now[0] = at
            state = await tracker.admit(Identity(key_name="k", session=sid))
            await tracker.settle(state, Usage(10, 2), cost)
            state.max_context_ratio = ratio
        order = {sort: [s.session for s in tracker.page(limit=3, sort=sort)[1]] for sort in SESSION_SORTS}
        assert order == {
            "last_seen": ["c", "b", "a"],
            "spend": ["b", "a", "c"],  # the largest spend first
            "age": ["a", "b", "c"],  # the oldest first
            "context": ["b", "c", "a"],  # the fullest context first
        }
        assert [s.session for s in tracker.page(limit=1, offset=1, sort="spend")[1]] == ["a"]

    asyncio.run(main())
