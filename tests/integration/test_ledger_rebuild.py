"""What a restart rebuilds from the ledger, on SQLite and PostgreSQL: budgets, session totals, alerts sent.

The ledger contract's fixtures (``target``, ``make``) give each test a fresh
ledger of each backend. A restart must forget nothing the ledger holds:
budget spend is the sum of the costs of every answered request in the
window (a billed 499 too), session totals the sums of their usage rows
(whether or not the once-a-second session row was flushed before a crash),
and an alert already sent is not sent again.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import test_ledger_contract as contract

from tiergate.config.catalog import build_catalog
from tiergate.config.guardrails import GuardianConfig
from tiergate.config.loading import config_from_dict
from tiergate.core.money import counter_key
from tiergate.core.windows import window_key
from tiergate.guardrails.alerts import Alert, AlertDispatcher, LedgerSeen
from tiergate.guardrails.budgets import BudgetGuard
from tiergate.guardrails.sessions import SessionTracker
from tiergate.ledger.records import SessionRow
from tiergate.state.memory import MemoryState

RAW = {
    "providers": {"co": {"api": "openai-chat", "base_url": "http://127.0.0.1:2/v1"}},
    "deployments": [
        {
            "name": "d",
            "provider": "co",
            "model": "m",
            "tier": 1,
            "context_window": 16000,
            "price": {"input_per_mtok": 1, "output_per_mtok": 1},
        }
    ],
    "budgets": [
        {"scope": "global", "window": "day", "limit_usd": 100.0},
        {"scope": "session", "match": "*", "window": "day", "limit_usd": 100.0},
    ],
}
CFG = config_from_dict(RAW, env={})
NOW = time.time()
target, make, usage = contract.target, contract.make, contract.usage  # the contract suite's fixtures: both backends


def answered(i: int, *, status: int = 200, cost: float = 0.01, session: str = "s", ts: float | None = None):
    return usage(i, status=status, ts=NOW - 60 if ts is None else ts)._replace(
        cost_usd=cost, session=session, prompt_tokens=10 * i, completion_tokens=i, latency_ms=250.0
    )


def test_budgets_rebuilt_count_every_answered_request_whatever_its_status(make):
    led = make()
    led.start()
    rows = [
        answered(1),
        answered(2, status=499, cost=0.02),  # a stream the client left, billed for what it used
        answered(3, status=502, cost=0.03),  # failed after its first byte: settled at its cost
        answered(4, status=429, cost=0.0),
        usage(5, status=429)._replace(deployment=None, cost_usd=0.0),  # never reached a deployment: no call
        usage(6, kind="attempt", status=503)._replace(cost_usd=0.0),
        answered(7, cost=0.5, ts=NOW - 3 * 86400),  # an earlier day
    ]
    for r in rows:
        led.record(r)
    led.close()
    led = make()
    state = MemoryState()
    guard = BudgetGuard(CFG.budgets, catalog=build_catalog(CFG), state=state, tz=CFG.timezone)
    guard.seed_from_ledger(led)
    wk = window_key("day", time.time(), CFG.timezone)
    in_window = rows[:4]  # what the ledger holds for today's window, answered
    spent, reserved, calls = asyncio.run(state.budget_usage(counter_key(CFG.budgets[0], wk, "*")))
    assert spent == pytest.approx(sum(r.cost_usd for r in in_window)) and (reserved, calls) == (0.0, 4)
    ledger_total = led.query(
        "SELECT sum(cost_usd) AS c FROM usage WHERE kind = 'request' AND ts >= ?", (NOW - 86400 / 2,)
    )[0]["c"]
    assert spent == pytest.approx(ledger_total)
    assert asyncio.run(state.budget_usage(counter_key(CFG.budgets[1], wk, "s")))[0] == pytest.approx(0.06)


def test_session_totals_rebuilt_from_usage_rows_a_crash_did_not_flush(make):
    led = make()
    led.start()
    for i in range(1, 6):  # session a: five answered requests; its row was flushed after two
        led.record(answered(i, session="a"))
    led.record(SessionRow("a", "k", "agent", NOW - 70, NOW - 59, 2, 30, 3, 0.02, 0.4, None))
    for i in range(6, 9):  # session b: the crash came before its first flush
        led.record(answered(i, session="b"))
    led.record(answered(9, session="c", ts=NOW - 3 * 86400))  # c: idle past the TTL, forgotten
    led.record(usage(10, status=429)._replace(deployment=None, session="a"))  # refused before routing: not counted
    # an earlier life of session d, then a gap longer than the idle TTL, then its current life
    led.record(answered(11, session="d", ts=NOW - 2 * 86400, cost=9.0))
    led.record(SessionRow("d", "k", None, NOW - 2 * 86400, NOW - 2 * 86400, 1, 110, 11, 9.0, 0.0, None))
    led.record(answered(12, session="d"))
    led.close()
    led = make()
    led.start()  # as the gateway does: the writer first, then budgets and sessions rebuilt
    tracker = SessionTracker(GuardianConfig(session_idle_ttl=86400), ledger=led)
    tracker.load()
    got = {
        s: (st.requests, st.prompt_tokens, st.completion_tokens, round(st.cost_usd, 9))
        for s, st in tracker.states.items()
    }
    assert got == {
        "a": (5, 150, 15, 0.05),
        "b": (3, 210, 21, 0.03),
        "d": (1, 120, 12, 0.01),
    }
    assert tracker.states["a"].max_context_ratio == 0.4  # what only the row knows is kept
    assert tracker.states["b"].first_seen == pytest.approx(NOW - 60)
    # the rebuilt totals are written back at the next flush, so the sessions table catches up
    assert tracker.flush() == 3
    led.close()
    led = make()
    assert {r["session"]: r["requests"] for r in led.sessions()} == {"a": 5, "b": 3, "d": 1}


def test_session_listing_pages(make):
    led = make()
    led.start()
    for i in range(25):
        led.record(SessionRow(f"s{i:02d}", "k", None, 1.0, 100.0 + i, 1, 1, 1, 0.0, 0.0, None))
    led.close()
    led = make()
    first = [r["session"] for r in led.sessions(limit=10)]
    assert first == [f"s{i:02d}" for i in range(24, 14, -1)]
    assert [r["session"] for r in led.sessions(limit=10, offset=20)] == [f"s{i:02d}" for i in range(4, -1, -1)]
    assert len(led.sessions(since=120.0)) == 5
    assert led.session("s03")["last_seen"] == 103.0 and led.session("nope") is None


def test_alerts_sent_are_not_sent_again_after_a_restart(make):
    led = make()
    led.start()
    seen = LedgerSeen(led)
    assert seen.load() == 0
    first = AlertDispatcher([], seen=seen)
    alert = Alert(event="budget_threshold", message="80%", dedupe_key="budget:global|day:2026-11-22|*:0.8")
    assert first.emit(alert) and not first.emit(alert)
    led.close()  # a restart, or another process on the same ledger (the CLI)
    led = make()
    again = LedgerSeen(led)
    assert again.load() == 1 and alert.dedupe_key in again
    assert AlertDispatcher([], seen=again).emit(alert) is False
    other = Alert(event="budget_threshold", message="95%", dedupe_key="budget:global|day:2026-11-22|*:0.95")
    assert AlertDispatcher([], seen=again).emit(other) is True
    led.close()
    led = make()
    old = LedgerSeen(led, clock=lambda: time.time() + 41 * 86400)  # keys older than 40 days are pruned
    assert old.load() == 0 and led.alerts_sent(0.0) == set()
