"""SessionTracker writes a session's totals once per flush, not once per request; kills at once; it holds
at most guardian.max_tracked_sessions sessions, and rebuilds totals from what the ledger holds."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tiergate.config.guardrails import GuardianConfig
from tiergate.core.errors import SessionKilled
from tiergate.core.types import Identity, Usage
from tiergate.guardrails.sessions import SessionTracker, rebuild
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
        tracker.killed["x"] = "runaway loop"  # what sync_control reads from the ledger
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
        assert (await tracker.admit(Identity(key_name="k", agent="a"))).session == "k:a"

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
