"""The digest read from a real SQLite ledger: the day's spend and groups, escalations and fail-overs,
the day's session kills only, failed job runs, and a budget's forecast over its current window."""

from __future__ import annotations

import datetime as dt

import pytest

from records import usage_row
from tiergate.config.loading import config_from_dict
from tiergate.jobs.digest import build_digest
from tiergate.ledger.job_runs import JobRuns
from tiergate.ledger.sqlite import SqliteLedger

DAY = dt.datetime(2027, 1, 14, tzinfo=dt.UTC).timestamp()  # the digest's day, "yesterday"
NOW = DAY + 86400 + 8 * 3600  # 08:00 the next day


@pytest.fixture
def ledger(tmp_path):
    led = SqliteLedger(tmp_path / "ledger.db")
    led.start()
    yield led
    led.close()


def test_the_digest_of_yesterday(ledger):
    rows = [
        usage_row(1, ts=DAY + 3600, agent="brief", cost_usd=0.25, deployment="cloud", local=False, tier=1),
        usage_row(
            2,
            ts=DAY + 7200,
            agent="brief",
            cost_usd=0.5,
            deployment="cloud",
            local=False,
            tier=1,
            reason="escalation to tier 1",
            fallbacks=1,
        ),  # fmt: skip
        usage_row(3, ts=DAY + 9000, agent="coder", task="coding"),
        usage_row(4, ts=DAY - 60, agent="early", cost_usd=9.0),  # the day before: not in the digest
        usage_row(5, ts=NOW - 3600, agent="today", cost_usd=1.0),  # today: not in yesterday's digest
    ]
    for r in rows:
        ledger.record(r)
    ledger.close()  # flush the writer
    led = SqliteLedger(ledger.path)
    led.start()
    try:
        for name, at in (("s-yesterday", DAY + 100), ("s-today", NOW - 100)):
            led.transact([(
                "INSERT INTO sessions (session, key_name, first_seen, last_seen, requests, prompt_tokens, "
                "completion_tokens, cost_usd, max_context_ratio, killed_reason, killed_at) "
                "VALUES (?, 'k', ?, ?, 1, 1, 1, 0, 0, 'too old', ?)",
                (name, at, at, at),
            )])  # fmt: skip
        runs = JobRuns(led, "me")
        claim = runs.claim("brief", DAY + 600, "schedule", now=DAY + 600, lease_s=60)
        assert claim is not None
        runs.finish(claim, "failed", now=DAY + 700, session=None, deployment=None, cost_usd=0.0, delivered="{}",
                    error="x", output=None)  # fmt: skip
        cfg = config_from_dict({"budgets": [{"scope": "global", "window": "day", "limit_usd": 1.5}]}, env={})
        d = build_digest(led, None, list(cfg.budgets), period="yesterday", now=NOW, tz="UTC")
    finally:
        led.close()
    assert d.day == "2027-01-14"
    assert d.report.cost_usd == pytest.approx(0.75) and d.report.requests == 3
    assert set(d.report.by_agent) == {"brief", "coder"}
    assert (d.escalations, d.fell_over, d.sessions_killed, d.job_failures) == (1, 1, 1, ["brief (1)"])
    (f,) = d.forecasts  # today's window: $1 spent in 8 hours -> $3 by midnight, over $1.50
    assert f.spent_usd == pytest.approx(1.0) and f.projected_usd == pytest.approx(3.0) and f.over
