"""Budget math and reservations, without a server: worst cases, atomicity, windows in a timezone."""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from tiergate.config.catalog import build_catalog
from tiergate.config.loading import config_from_dict
from tiergate.core.money import conservative_tokens, reserved_output, worst_case_cost
from tiergate.core.types import Identity
from tiergate.guardrails.budgets import BudgetGuard
from tiergate.state.memory import MemoryState

RAW = {
    "providers": {
        "box": {"api": "openai-chat", "base_url": "http://127.0.0.1:1/v1", "local": True},
        "co": {"api": "openai-chat", "base_url": "http://127.0.0.1:2/v1"},
    },
    "deployments": [
        {"name": "local", "provider": "box", "model": "m", "tier": 0, "context_window": 8192},
        {
            "name": "cloud",
            "provider": "co",
            "model": "m",
            "tier": 1,
            "context_window": 16000,
            "max_output_tokens": 2000,
            "price": {"input_per_mtok": 1000, "output_per_mtok": 1000},
        },
    ],
    "timezone": "America/New_York",
    "budgets": [{"scope": "global", "window": "day", "limit_usd": 1.0}],
}
CFG = config_from_dict(RAW, env={})
CAT = build_catalog(CFG)
WHO = Identity(key_name="k", agent="a", session="s")


@pytest.mark.parametrize(
    ("max_tokens", "prompt", "expected_out"),
    # no max_tokens: 4096 capped to the deployment's 2000; a nearly full window leaves what is left of it
    [(None, 100, 2000), (50, 100, 50), (128000, 100, 2000), (5000, 11500, 16000 - conservative_tokens(11500))],
)
def test_reserved_output_is_clamped(max_tokens, prompt, expected_out):
    d = CAT.deployments["cloud"]
    assert reserved_output(d, max_tokens, conservative_tokens(prompt)) == expected_out


def test_worst_case_covers_the_estimate_and_local_is_free():
    d = CAT.deployments["cloud"]
    assert worst_case_cost(d, 100, 10) >= d.cost(100, 10)
    assert worst_case_cost(CAT.deployments["local"], 100, 10) == 0


def test_reservations_are_all_or_nothing_and_never_pass_the_limit():
    async def main():
        state = MemoryState()
        clock = [dt.datetime(2026, 11, 22, 12, tzinfo=ZoneInfo("America/New_York")).timestamp()]
        guard = BudgetGuard(CFG.budgets, catalog=CAT, state=state, tz=CFG.timezone, clock=lambda: clock[0])
        d = CAT.deployments["cloud"]
        lines = guard.lines_for(WHO, d, 100, 100)  # about $0.25 worst case
        held = []
        for _ in range(10):
            why, _ = await guard.reserve(lines)
            if why is None:
                held.append(lines)
        assert len(held) == int(1.0 // lines[0].amount_usd)
        for h in held:
            await guard.settle(h, lines[0].amount_usd / 2)  # real cost is lower than the worst case
        spent, reserved, calls = await state.budget_usage(lines[0].key)
        assert reserved == 0 and spent <= 1.0 and calls == len(held)
        c = await guard.constraints(WHO)
        assert c.reject is None  # half the limit is still free
        # just before local midnight the window is the same; just after, a new one starts
        clock[0] = dt.datetime(2026, 11, 22, 23, 59, tzinfo=ZoneInfo("America/New_York")).timestamp()
        assert guard.lines_for(WHO, d, 100, 100)[0].key == lines[0].key
        clock[0] = dt.datetime(2026, 11, 23, 0, 1, tzinfo=ZoneInfo("America/New_York")).timestamp()
        fresh = guard.lines_for(WHO, d, 100, 100)
        assert fresh[0].key != lines[0].key and "2026-11-23" in fresh[0].key
        assert await state.budget_usage(fresh[0].key) == (0.0, 0.0, 0)
        # yesterday's counter is forgotten once its window is over; nothing is left to grow
        assert await guard.prune() == 1
        assert await state.budget_usage(lines[0].key) == (0.0, 0.0, 0)

    asyncio.run(main())


def test_release_returns_the_reservation_and_the_call():
    async def main():
        state = MemoryState()
        guard = BudgetGuard(CFG.budgets, catalog=CAT, state=state, tz=CFG.timezone)
        lines = guard.lines_for(WHO, CAT.deployments["cloud"], 100, 100)
        assert (await guard.reserve(lines))[0] is None
        await guard.release(lines)
        assert await state.budget_usage(lines[0].key) == (0.0, 0.0, 0)

    asyncio.run(main())
