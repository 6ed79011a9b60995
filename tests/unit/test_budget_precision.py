"""Reservations sized to what a call can bill, and when a refused client may come back (issue 14, items 5, 9).

Pure tables first (reservation sizes, Retry-After across window ends and time zones), then the guard and
the hold on an in-memory state: how many $0.006 calls a budget admits before and after the deployment's
ratio is learned, and the Retry-After a reject budget's refusal carries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from pipeline_harness import build, raw_config
from tiergate.config.catalog import build_catalog
from tiergate.config.guardrails import BudgetConfig
from tiergate.config.loading import config_from_dict
from tiergate.core.errors import BudgetExceeded
from tiergate.core.money import (
    SETTLE_RETRY_S,
    BudgetLine,
    budget_retry_after,
    conservative_tokens,
    over_limit,
    reserved_output,
    reserved_prompt,
    usd_text,
    worst_case_cost,
)
from tiergate.core.tokens import MIN_SAMPLES, chat_prompt, learn
from tiergate.core.types import Identity, RequestFeatures, Usage
from tiergate.core.windows import window_bounds
from tiergate.guardrails.budget_hold import BudgetHold
from tiergate.guardrails.budgets import BudgetGuard
from tiergate.state.memory import MemoryState

TZ = "America/New_York"
NOON = datetime(2026, 11, 22, 12, tzinfo=ZoneInfo(TZ)).timestamp()
TEXT = "x" * 400  # the stand-in bills len(text) // 4 = 100 prompt tokens
PRICE = 50.0  # USD per million, input and output: (100 + 20) tokens = $0.006


def catalog_and_config(*budgets: dict):
    raw = {
        "providers": {"co": {"api": "openai-chat", "base_url": "http://127.0.0.1:2/v1"}},
        "deployments": [
            {
                "name": "cloud",
                "provider": "co",
                "model": "m",
                "tier": 1,
                "context_window": 128000,
                "price": {"input_per_mtok": PRICE, "output_per_mtok": PRICE},
            }
        ],
        "timezone": TZ,
        "budgets": list(budgets),
    }
    cfg = config_from_dict(raw, env={})
    return cfg, build_catalog(cfg)


def features(text: str = TEXT, max_tokens: int | None = 20) -> RequestFeatures:
    body = {"messages": [{"role": "user", "content": text}]}
    p = chat_prompt(body)
    return RequestFeatures(model="cloud", prompt_tokens_est=p.tokens, prompt=p, max_tokens=max_tokens)


# --------------------------------------------------------------------------- reservation sizes
def test_a_hi_with_max_tokens_5_reserves_15_tokens_not_45():
    f = features("hi", 5)
    _, cat = catalog_and_config()
    d = cat.deployments["cloud"]
    prompt = reserved_prompt(f.prompt_tokens_est, f.prompt, None)
    # "hi" + a message + the reply priming = 8 (what OpenAI bills), plus a quarter = 10; then the 5 output
    assert (f.prompt_tokens_est, prompt, reserved_output(d, 5, prompt)) == (8, 10, 5)


@pytest.mark.parametrize(
    ("samples", "expected_prompt"),
    [
        (0, conservative_tokens(107)),  # 400 bytes / 4 + 4 + 3 = 107, plus a quarter
        (MIN_SAMPLES - 1, conservative_tokens(107)),
        (MIN_SAMPLES, 102),  # the deployment's own 4.0 bytes a token, plus 1/64
    ],
)
def test_the_prompt_reserved_follows_the_deployment_once_it_is_learned(samples, expected_prompt):
    f = features()
    ratio = None
    for _ in range(samples):
        ratio = learn(ratio, f.prompt, 100)
    assert reserved_prompt(f.prompt_tokens_est, f.prompt, ratio) == expected_prompt


def test_cache_breakpoints_reserve_the_prompt_at_the_cache_write_price():
    _, cat = catalog_and_config()
    d = dataclasses.replace(cat.deployments["cloud"], cache_write_per_mtok=2 * PRICE)
    plain = worst_case_cost(d, 0, 20, prompt_tokens=100)
    cached = worst_case_cost(d, 0, 20, prompt_tokens=100, cache_writes=True)
    assert plain == pytest.approx((100 + 20) * PRICE / 1e6)
    assert cached == pytest.approx((100 * 2 * PRICE + 20 * PRICE) / 1e6)
    cheap_writes = dataclasses.replace(d, cache_write_per_mtok=PRICE / 2)
    assert worst_case_cost(cheap_writes, 0, 20, prompt_tokens=100, cache_writes=True) == pytest.approx(plain)


# --------------------------------------------------------------------------- Retry-After
class Rule:
    """A budgets[] line as money.BudgetRule reads it."""

    def __init__(self, limit_usd: float | None = 1.0, max_calls: int | None = None) -> None:
        self.limit_usd, self.max_calls = limit_usd, max_calls


def at(y, mo, d, h, mi, s=0, tz=TZ, fold=0) -> float:
    return datetime(y, mo, d, h, mi, s, fold=fold, tzinfo=ZoneInfo(tz)).timestamp()


@pytest.mark.parametrize(
    ("window", "now", "tz", "expected"),
    [
        ("day", at(2026, 11, 22, 23, 59, 30), TZ, 30),  # half a minute to local midnight
        ("day", at(2026, 3, 8, 0, 0), TZ, 23 * 3600),  # spring forward: a 23-hour day
        ("day", at(2026, 11, 1, 0, 0), TZ, 25 * 3600),  # fall back: a 25-hour day
        ("hour", at(2026, 1, 10, 10, 15, tz="Asia/Kolkata"), "Asia/Kolkata", 45 * 60),  # a half-hour offset
        # Lord Howe turns its clocks back 30 minutes at 02:00: both passes through 01:30-02:00 end a window
        ("hour", at(2026, 4, 5, 1, 45, tz="Australia/Lord_Howe"), "Australia/Lord_Howe", 15 * 60),
        ("hour", at(2026, 4, 5, 1, 45, tz="Australia/Lord_Howe", fold=1), "Australia/Lord_Howe", 15 * 60),
        ("week", at(2026, 11, 22, 23, 0, tz="Europe/Berlin"), "Europe/Berlin", 3600),  # Sunday night
        ("month", at(2026, 3, 1, 0, 0, tz="Europe/Berlin"), "Europe/Berlin", 31 * 86400 - 3600),  # DST in March
        # 23:00 UTC is already 13:00 tomorrow in Kiritimati (UTC+14): 11 hours to its midnight
        ("day", datetime(2026, 11, 22, 23, 0, tzinfo=UTC).timestamp(), "Pacific/Kiritimati", 11 * 3600),
        ("day", at(2026, 11, 22, 23, 59, 59) + 0.8, TZ, 1),  # never 0
    ],
)
def test_retry_after_is_the_time_to_the_window_end_when_nothing_in_flight_frees_room(window, now, tz, expected):
    _, end = window_bounds(window, now, tz)
    rule = Rule(limit_usd=1.0)
    # spent alone leaves no room for the request: only the next window has it
    assert budget_retry_after(rule, spent=0.99, reserved=0.0, calls=5, amount_usd=0.02, now=now, window_end=end) == (
        expected
    )
    assert budget_retry_after(rule, spent=0.99, reserved=0.5, calls=5, amount_usd=0.02, now=now, window_end=end) == (
        expected
    )


@pytest.mark.parametrize(
    ("rule", "spent", "reserved", "calls", "amount", "expected"),
    [
        (Rule(1.0), 0.5, 0.49, 3, 0.02, SETTLE_RETRY_S),  # what is in flight fills it; settling frees room
        (Rule(1.0), 0.98, 0.01, 3, 0.02, SETTLE_RETRY_S),  # exactly enough once settled
        (Rule(1.0), 0.99, 0.01, 3, 0.02, 3600),  # settled spend alone leaves too little
        (Rule(1.0), 0.5, 0.5, 3, 0.0, SETTLE_RETRY_S),  # exhausted before planning, by reservations
        (Rule(1.0), 1.0, 0.0, 3, 0.0, 3600),  # exhausted by settled spend
        (Rule(1.0, max_calls=3), 0.1, 0.2, 3, 0.02, 3600),  # a call cap: calls in flight stay counted
        (Rule(None, max_calls=3), 0.0, 0.0, 3, 0.0, 3600),
    ],
)
def test_retry_after_is_a_few_seconds_when_settling_in_flight_reservations_frees_enough(
    rule, spent, reserved, calls, amount, expected
):
    now = NOON
    got = budget_retry_after(
        rule, spent=spent, reserved=reserved, calls=calls, amount_usd=amount, now=now, window_end=now + 3600
    )
    assert got == expected
    # and never past the window's own end
    assert budget_retry_after(
        rule, spent=spent, reserved=reserved, calls=calls, amount_usd=amount, now=now, window_end=now + 1
    ) == min(expected, 1)


# --------------------------------------------------------------------------- the guard and the hold
async def admitted(guard: BudgetGuard, ident: Identity, f: RequestFeatures, n: int = 200) -> list[BudgetHold]:
    """Reserve for ``n`` requests at once (none settles in between): the ones that got a hold."""
    d = guard.catalog.deployments["cloud"]
    held = []
    for _ in range(n):
        hold = BudgetHold(guard, ident, f)
        try:
            if await hold.reserve(d) is None:
                held.append(hold)
        except BudgetExceeded:
            pass
    return held


def guard_for(*budgets: dict) -> tuple[BudgetGuard, MemoryState]:
    cfg, cat = catalog_and_config(*budgets)
    state = MemoryState()
    return BudgetGuard(cfg.budgets, catalog=cat, state=state, tz=cfg.timezone, clock=lambda: NOON), state


def test_a_burst_is_admitted_up_to_every_call_that_fits_once_the_ratio_is_learned():
    async def main():
        guard, state = guard_for(
            *({"scope": "agent", "match": a, "window": "day", "limit_usd": lim} for a, lim in BUDGETS.items())
        )
        f = features()
        call = Usage(100, 20)  # what the stand-in bills this request: $0.006
        cost = guard.catalog.deployments["cloud"].usage_cost(call)
        assert cost == pytest.approx(0.006)
        # cold: nothing learned, reservations hold the estimate plus a quarter: 6 of the 8 that fit
        cold = await admitted(guard, Identity("k", agent="cold"), f)
        assert len(cold) == 6
        for hold in cold:
            await hold.settle(cost, call)  # the upstream's own count teaches the ratio
        # warm: every call that fits, and none more, however many arrive at once
        for agent, limit in BUDGETS.items():
            if agent == "cold":
                continue
            warm = await admitted(guard, Identity("k", agent=agent), f)
            assert len(warm) == int(limit / cost + 1e-9), agent
            for hold in warm:
                await hold.settle(cost, call)
            spent, reserved, _ = await state.budget_usage(_key(guard, agent))
            assert reserved == 0 and spent <= limit + 1e-12 and limit - spent < cost

    asyncio.run(main())


BUDGETS = {"cold": 0.05, "a50": 0.05, "a20": 0.02, "a80": 0.08}


def _key(guard: BudgetGuard, agent: str) -> str:
    """The agent's counter key today."""
    return guard.lines_for(Identity("k", agent=agent), guard.catalog.deployments["cloud"], 1, 1)[0].key


def test_estimated_usage_teaches_nothing():
    async def main():
        guard, _ = guard_for({"scope": "global", "window": "day", "limit_usd": 1.0})
        f = features()
        for _ in range(MIN_SAMPLES + 2):
            hold = BudgetHold(guard, Identity("k"), f)
            assert await hold.reserve(guard.catalog.deployments["cloud"]) is None
            await hold.settle(0.001, Usage(100, 20, estimated=True))
        assert guard.ratios == {}

    asyncio.run(main())


def test_a_reject_refusal_says_when_to_retry():
    async def main():
        guard, state = guard_for({"scope": "global", "window": "day", "limit_usd": 0.01})
        d, f, who = guard.catalog.deployments["cloud"], features(), Identity("k")
        first = BudgetHold(guard, who, f)
        assert await first.reserve(d) is None  # $0.0077 held: the next one does not fit while it is in flight
        with pytest.raises(BudgetExceeded) as in_flight:
            await BudgetHold(guard, who, f).reserve(d)
        assert in_flight.value.retry_after == SETTLE_RETRY_S
        await first.settle(0.006, Usage(100, 20))
        with pytest.raises(BudgetExceeded) as spent:
            await BudgetHold(guard, who, f).reserve(d)
        midnight = window_bounds("day", NOON, TZ)[1]
        assert spent.value.retry_after == 12 * 3600 == midnight - NOON
        # exhausted by settled spend: refused before planning, with the same wait
        await state.budget_add(guard.lines_for(who, d, 1, 1), 0.004)  # now spent to the limit
        with pytest.raises(BudgetExceeded) as before_planning:
            await BudgetHold(guard, who, f).check()
        assert before_planning.value.retry_after == 12 * 3600

    asyncio.run(main())


def test_a_deployment_budget_that_blocks_every_candidate_says_when_it_resets():
    h = build(
        raw_config(
            budgets=[{"scope": "deployment", "match": "frontier", "window": "day", "max_calls": 1, "action": "reject"}]
        )
    )
    asyncio.run(h.ask(model="frontier", max_tokens=10))
    with pytest.raises(BudgetExceeded) as refused:
        asyncio.run(h.ask(model="frontier", max_tokens=10))
    _, midnight = window_bounds("day", h.clock[0], h.cfg.timezone)
    assert refused.value.retry_after == math.ceil(midnight - h.clock[0])


@pytest.mark.parametrize(
    ("usd", "text"),
    [(0, "0.0000"), (0.000459, "0.000459"), (0.0005, "0.000500"), (0.0015, "0.00150"), (0.01, "0.0100"), (8, "8.0000")],
)
def test_refusal_messages_show_small_budgets_apart(usd, text):
    """A $0.0005 budget with $0.000459 spent must not read '$0.0005 of $0.0005 used'."""
    assert usd_text(usd) == text


def test_a_small_budget_refusal_says_what_is_left():
    rule = BudgetConfig(scope="agent", match="researcher", window="month", limit_usd=0.0005, action="reject")
    why = over_limit(BudgetLine(rule, "k", "researcher", 0.000153), spent=0.000459, reserved=0.0, calls=3)
    assert why == (
        "budget agent:researcher:month (researcher): $0.000459 of $0.0005 used this month, "
        "request needs up to $0.000153"
    )
