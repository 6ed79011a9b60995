"""Budgets through a real gateway and stand-in: a burst is served up to every call that fits and never past
the limit, and a budget's 429 says when to come back, in each client's own format (issue 14, items 5, 9)."""

from __future__ import annotations

import concurrent.futures as cf
import math
import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import anthropic
import openai
import pytest

from procs import MASTER_KEY, wait_until
from tiergate.core.money import conservative_tokens
from tiergate.core.tokens import chat_prompt

TEXT = "Summarise the release plan in one line. " * 10  # 400 ASCII bytes
MAX_TOKENS = 20
PRICE = {"input_per_mtok": 50.0, "output_per_mtok": 50.0}
BURST = 200


def config(cloud, budgets: list[dict], tz: str = "UTC") -> dict:
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "timezone": tz,
        "providers": {"cloudco": {"api": "openai-chat", "base_url": f"{cloud.base_url}/v1"}},
        "deployments": [
            {
                "name": "cloud",
                "provider": "cloudco",
                "model": "gpt-4o-mini",
                "tier": 1,
                "context_window": 128000,
                "price": PRICE,
            }
        ],
        "routing": {"num_retries": 0},
        "budgets": budgets,
    }


def oai(gw, agent: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0, default_headers={"X-Tiergate-Agent": agent}
    )


def ask(c: openai.OpenAI):
    try:
        return c.chat.completions.with_raw_response.create(
            model="cloud", messages=[{"role": "user", "content": TEXT}], max_tokens=MAX_TOKENS
        )
    except openai.APIStatusError as exc:
        return exc


def burst(gw, agent: str) -> tuple[list, list]:
    """BURST requests released at once (a barrier) from BURST threads; (answered, refused)."""
    c = oai(gw, agent)
    gate = threading.Barrier(BURST, timeout=120)

    def one(_):
        gate.wait()
        return ask(c)

    with cf.ThreadPoolExecutor(BURST) as pool:
        results = list(pool.map(one, range(BURST)))
    refused = [r for r in results if isinstance(r, Exception)]
    return [r for r in results if not isinstance(r, Exception)], refused


def call_cost(answered) -> float:
    """What one call costs: the stand-in's reported usage at the deployment's prices (all calls alike)."""
    usages = {(u.prompt_tokens, u.completion_tokens) for u in (r.parse().usage for r in answered)}
    assert len(usages) == 1, usages
    [(prompt, completion)] = usages
    return (prompt * PRICE["input_per_mtok"] + completion * PRICE["output_per_mtok"]) / 1e6


def test_a_burst_of_200_serves_every_call_that_fits_and_never_passes_the_limit(standins, gateway):
    cloud = standins(name="cloud", models=["gpt-4o-mini"])
    limits = {"cold": 0.05, "a50": 0.05, "a20": 0.02}
    gw = gateway(
        config(
            cloud,
            [{"scope": "agent", "match": a, "window": "day", "limit_usd": lim} for a, lim in limits.items()],
        )
    )
    # every answer takes seconds, so the whole burst holds its reservations at once: nothing settles and
    # frees room before the last request has been decided
    cloud.faults({"mode": "slow", "delay_s": 5, "times": 1000})
    served: dict[str, int] = {}
    cost = 0.0
    for agent in limits:  # "cold" first: a gateway that has not yet seen this deployment's usage
        answered, refused = burst(gw, agent)
        assert all(r.status_code == 429 and r.body["code"] == "budget_exceeded" for r in refused), refused[:3]
        assert all(int(r.response.headers["retry-after"]) >= 1 for r in refused)
        served[agent] = len(answered)
        cost = call_cost(answered)
    gw.stop()
    assert cost == pytest.approx(0.006)  # (100 prompt + 20 completion tokens) x $50 a million
    settled: dict[str, float] = {}
    for row in gw.ledger_rows("kind='request'"):
        settled[row["agent"]] = settled.get(row["agent"], 0.0) + row["cost_usd"]
    for agent, limit in limits.items():
        fits = math.floor(limit / cost + 1e-9)
        assert settled[agent] <= limit + 1e-12, (agent, settled)  # never over the limit
        assert settled[agent] == pytest.approx(served[agent] * cost)
        if agent == "cold":
            # before any usage is known a reservation holds the estimate plus a quarter: at least as many as
            # such reservations fit at once, and (as calls settle and teach the ratio) up to all that fit
            est = conservative_tokens(chat_prompt({"messages": [{"role": "user", "content": TEXT}]}).tokens)
            reservation = (est * PRICE["input_per_mtok"] + MAX_TOKENS * PRICE["output_per_mtok"]) / 1e6
            assert math.floor(limit / reservation) <= served[agent] <= fits, served
        else:
            assert served[agent] == fits, served  # 8 of $0.05 and 3 of $0.02: every call that fits


def _seconds_to_next(tz: str, unit: str) -> float:
    now = datetime.now(ZoneInfo(tz))
    if unit == "hour":
        nxt = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    else:
        nxt = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=ZoneInfo(tz))
    return nxt.timestamp() - time.time()


def retry_after(exc: openai.APIStatusError | anthropic.APIStatusError) -> int:
    return int(exc.response.headers["retry-after"])


def refused_until(refuse, tz: str, unit: str) -> None:
    """``refuse()``'s Retry-After is the time to the window's end, measured around the call."""
    before = _seconds_to_next(tz, unit)
    exc = refuse()
    after = _seconds_to_next(tz, unit)
    assert math.floor(after) <= retry_after(exc) <= math.ceil(before) + 1, (after, retry_after(exc), before)
    # hours away: an SDK's automatic retries cannot help (the anthropic SDK would sleep that long), so say so
    assert exc.response.headers["x-should-retry"] == "false"


def test_budget_429s_carry_retry_after_in_each_clients_format(standins, gateway):
    cloud = standins(name="cloud", models=["gpt-4o-mini"])
    tz = "Asia/Kolkata"  # UTC+5:30: its midnight and its hours are not UTC's
    if _seconds_to_next(tz, "hour") < 90:  # no window may end during the test (its midnight is on the hour)
        time.sleep(_seconds_to_next(tz, "hour") + 1)
    gw = gateway(
        config(
            cloud,
            [
                # one call's reservation ($0.0077) fits in $0.01, two do not; one call costs $0.006
                {"scope": "agent", "match": "spender", "window": "day", "limit_usd": 0.01},
                {"scope": "agent", "match": "one-call", "window": "hour", "max_calls": 1},
            ],
            tz=tz,
        )
    )
    anth = anthropic.Anthropic(
        base_url=gw.base_url, api_key=MASTER_KEY, max_retries=0, default_headers={"X-Tiergate-Agent": "spender"}
    )

    def anthropic_refusal() -> anthropic.RateLimitError:
        with pytest.raises(anthropic.RateLimitError) as ei:
            anth.messages.create(model="cloud", max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": TEXT}])
        assert ei.value.body["type"] == "error" and ei.value.body["error"]["type"] == "rate_limit_error"
        return ei.value

    def openai_refusal(agent: str, says: str = "budget agent:") -> openai.RateLimitError:
        exc = ask(oai(gw, agent))
        assert isinstance(exc, openai.RateLimitError), exc
        assert exc.body["code"] == "budget_exceeded" and says in exc.message, exc.message
        return exc

    # 1. a slow call holds its reservation: the next one is refused, to retry once it settles (seconds)
    cloud.faults({"mode": "slow", "delay_s": 8})
    with cf.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(ask, oai(gw, "spender"))
        assert wait_until(lambda: len(cloud.requests()) == 1, timeout=30)
        for exc in (openai_refusal("spender"), anthropic_refusal()):
            # seconds away: the SDKs' own retries, which honour Retry-After, are welcome
            assert 1 <= retry_after(exc) <= 5 and "x-should-retry" not in exc.response.headers
        assert not isinstance(slow.result(timeout=60), Exception)
    # 2. settled spend leaves no room: retry at the local midnight
    refused_until(lambda: openai_refusal("spender"), tz, "day")
    refused_until(anthropic_refusal, tz, "day")
    # 3. a call cap used up is refused before planning: retry at the next local hour
    assert not isinstance(ask(oai(gw, "one-call")), Exception)
    refused_until(lambda: openai_refusal("one-call", "1 of 1 calls"), tz, "hour")
    gw.stop()
