"""SessionTracker writes a session's totals once per flush, not once per request; kills at once."""

from __future__ import annotations

import asyncio

from tiergate.config.guardrails import GuardianConfig
from tiergate.core.types import Identity, Usage
from tiergate.guardrails.sessions import SessionTracker
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
