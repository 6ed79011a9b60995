"""One contract for SharedState: MemoryState and RedisState must behave alike.

Each test runs against both. "Two replicas" are two RedisState instances on
one real Redis (with a unique key prefix per test, deleted afterwards); for
MemoryState they are the same instance, which is what one process shares.
Redis tests skip locally when no Redis answers and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from procs import require
from tiergate.config.guardrails import BudgetConfig, LimitConfig
from tiergate.core import breaker as br
from tiergate.core.limits import LimitCounter
from tiergate.core.money import BudgetLine, over_limit
from tiergate.state.memory import MemoryState

REDIS_URL = os.environ.get("TIERGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REFRESH_S = 0.2


def _redis_problem() -> str | None:
    try:
        import redis
    except ImportError as exc:
        return f"the redis package is not installed: {exc}"
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        client.close()
    except Exception as exc:  # any failure means no usable Redis
        return f"Redis at {REDIS_URL} is not reachable: {exc}"
    return None


class MemoryBackend:
    name = "memory"

    @contextlib.asynccontextmanager
    async def states(self, n: int = 2, **_: object) -> AsyncIterator[tuple]:
        s = MemoryState()
        yield (s,) * n

    async def settle_refresh(self) -> None:
        pass


class RedisBackend:
    name = "redis"

    def __init__(self) -> None:
        self.prefix = f"tiergate-test:{uuid.uuid4().hex}:"

    @contextlib.asynccontextmanager
    async def states(
        self, n: int = 2, *, url: str = REDIS_URL, refresh_s: float = REFRESH_S, **kw: object
    ) -> AsyncIterator[tuple]:
        from tiergate.state.redis_state import RedisState

        # the contract is about results, not deadlines: 200 reservations at once opened 128 connections, and a
        # loaded CI host took past the default 3 s to accept one (the outage tests give their own timeouts)
        kw.setdefault("timeout_s", 15.0)
        started = []
        try:
            for _ in range(n):
                s = RedisState(url, prefix=self.prefix, refresh_s=refresh_s, **kw)
                await s.start()
                started.append(s)
            yield tuple(started)
        finally:
            for s in started:
                await s.close()

    async def settle_refresh(self) -> None:
        await asyncio.sleep(REFRESH_S * 2 + 0.1)

    def keys(self) -> list[str]:
        import redis

        with redis.Redis.from_url(REDIS_URL, decode_responses=True) as r:
            return list(r.scan_iter(match=self.prefix + "*"))

    def cleanup(self) -> None:
        import redis

        with redis.Redis.from_url(REDIS_URL, decode_responses=True) as r:
            keys = list(r.scan_iter(match=self.prefix + "*"))
            if keys:
                r.delete(*keys)


def _redis_backend():
    require(_redis_problem() is None, _redis_problem() or "")
    b = RedisBackend()
    return b


@pytest.fixture(params=["memory", "redis"])
def backend(request):
    if request.param == "memory":
        yield MemoryBackend()
        return
    b = _redis_backend()
    yield b
    b.cleanup()


@pytest.fixture
def redis_backend():
    b = _redis_backend()
    yield b
    b.cleanup()


def run(coro, timeout_s: float = 120) -> object:
    """asyncio.run, bounded: a hang fails with every task's stack instead of stalling the worker."""

    async def bounded() -> object:
        task = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if done:
            return task.result()
        out = io.StringIO()
        for t in asyncio.all_tasks():
            if t is not asyncio.current_task():
                print(f"--- {t.get_name()}", file=out)
                t.print_stack(limit=40, file=out)
        print(out.getvalue(), file=sys.stderr, flush=True)  # in case the cancellation hangs too
        task.cancel()
        raise AssertionError(f"hung for {timeout_s}s; tasks:\n{out.getvalue()}")

    return asyncio.run(bounded())


def budget(name: str, *, limit_usd: float | None = None, max_calls: int | None = None) -> BudgetConfig:
    return BudgetConfig(name=name, scope="agent", match="researcher", limit_usd=limit_usd, max_calls=max_calls)


def line(b: BudgetConfig, amount: float, window: str = "2025-01-01") -> BudgetLine:
    return BudgetLine(b, f"{b.id}|{window}|researcher", "researcher", amount)


async def wait_for(predicate, within_s: float = 3.0) -> float:
    """Seconds until predicate() held; fails after ``within_s``."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > within_s:
            raise AssertionError(f"condition not met within {within_s}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - t0


# ---------------------------------------------------------------------------- breakers


def test_breaker_opens_at_threshold_counting_failures_from_every_replica(backend):
    async def body():
        async with backend.states(2) as (a, b):
            s = await a.breaker_failure("cloud", now=100.0, threshold=3, error="HTTP 500")
            assert s.opened_at is None and s.failures == 1
            s = await b.breaker_failure("cloud", now=101.0, threshold=3, error="HTTP 502")
            assert s.opened_at is None and s.failures == 2
            assert await a.breaker_admit("cloud", now=101.5, cooldown_s=30)
            assert a.breaker_snapshot(now=101.5, cooldown_s=30) == {}
            s = await a.breaker_failure("cloud", now=102.0, threshold=3, error="HTTP 503")
            assert s == br.BreakerState(failures=3, opened_at=102.0, last_error="HTTP 503")
            assert a.breaker_states() == {"cloud": s}
            assert a.breaker_snapshot(now=110.0, cooldown_s=30) == {
                "cloud": br.unavailable_reason(s, now=110.0, cooldown_s=30)
            }
            assert not await a.breaker_admit("cloud", now=110.0, cooldown_s=30)
            assert not await b.breaker_admit("cloud", now=131.9, cooldown_s=30)

    run(body())


def test_definitive_failure_opens_at_once(backend):
    async def body():
        async with backend.states(2) as (a, b):
            s = await a.breaker_failure("local", now=50.0, threshold=5, error="connection refused", definitive=True)
            assert s.opened_at == 50.0 and s.failures == 1
            assert not await b.breaker_admit("local", now=51.0, cooldown_s=10)
            assert "connection refused" in a.breaker_snapshot(now=51.0, cooldown_s=10)["local"]

    run(body())


def test_half_open_admits_exactly_one_probe_per_cooldown_across_replicas(backend):
    async def body():
        async with backend.states(2) as (a, b):
            await a.breaker_failure("d", now=100.0, threshold=1, error="down")

            async def admits(now: float) -> int:
                oks = await asyncio.gather(*(s.breaker_admit("d", now=now, cooldown_s=30) for s in (a, b) * 25))
                return sum(oks)

            assert await admits(129.9) == 0  # still open
            assert await admits(130.0) == 1  # half-open: one probe, whichever replica asked first
            assert await admits(145.0) == 0  # the probe is in flight
            assert "probe in flight" in a.breaker_snapshot(now=145.0, cooldown_s=30)["d"]
            assert await admits(160.0) == 1  # that probe never came back: one more after a cooldown
            s = await b.breaker_failure("d", now=161.0, threshold=1, error="still down")
            assert s.opened_at == 161.0 and s.probe_started_at is None  # probe failed: open again
            assert await admits(190.0) == 0
            assert await admits(191.0) == 1
            await b.breaker_success("d")
            assert b.breaker_states() == {}
            assert await admits(192.0) == 50  # closed: everything goes

    run(body())


def test_success_closes_and_resets_the_failure_count(backend):
    async def body():
        async with backend.states(2) as (a, b):
            await a.breaker_failure("d", now=1.0, threshold=2, error="e")
            await b.breaker_success("d")
            s = await a.breaker_failure("d", now=2.0, threshold=2, error="e")
            assert s.failures == 1 and s.opened_at is None  # the count restarted after the success
            await a.breaker_failure("d", now=3.0, threshold=2, error="e")
            await a.breaker_success("d")
            assert a.breaker_states() == {} and a.breaker_snapshot(now=3.0, cooldown_s=30) == {}
            await backend.settle_refresh()
            assert b.breaker_states() == {}
            assert await b.breaker_admit("d", now=4.0, cooldown_s=30)

    run(body())


def test_snapshot_shows_own_writes_at_once_and_other_replicas_within_refresh_s(backend):
    async def body():
        async with backend.states(2) as (a, b):
            await a.breaker_failure("gpu", now=time.time(), threshold=1, error="refused", definitive=True)
            assert "gpu" in a.breaker_snapshot(now=time.time(), cooldown_s=30)  # no waiting for our own write
            waited = await wait_for(lambda: "gpu" in b.breaker_snapshot(now=time.time(), cooldown_s=30))
            assert waited <= REFRESH_S + 0.3, f"other replica saw the open breaker after {waited:.3f}s"
            await a.breaker_success("gpu")
            waited = await wait_for(lambda: b.breaker_snapshot(now=time.time(), cooldown_s=30) == {})
            assert waited <= REFRESH_S + 0.3

    run(body())


# ---------------------------------------------------------------------------- budgets


def test_reserve_is_all_or_nothing_and_says_why_like_over_limit(backend):
    async def body():
        async with backend.states(2) as (a, b):
            roomy, tight = budget("roomy", limit_usd=10.0), budget("tight", limit_usd=1.0)
            assert await a.budget_reserve([line(roomy, 0.7), line(tight, 0.7)]) is None
            # the second line no longer fits: neither line may move
            want = [line(roomy, 0.5), line(tight, 0.5)]
            spent, reserved, calls = await b.budget_usage(want[1].key)
            why = await b.budget_reserve(want)
            assert why == over_limit(want[1], spent=spent, reserved=reserved, calls=calls)
            assert why.startswith("budget tight (researcher): $0.7000 of $1 used")
            assert await a.budget_usage(want[0].key) == (0.0, 0.7, 1)
            assert await a.budget_usage(want[1].key) == (0.0, 0.7, 1)
            # the calls limit says so in its own words
            few = budget("few", max_calls=1)
            assert await a.budget_reserve([line(few, 0.0)]) is None
            why = await b.budget_reserve([line(roomy, 0.1), line(few, 0.0)])
            assert why == "budget few (researcher): 1 of 1 calls used this day"
            assert await a.budget_usage(line(roomy, 0).key) == (0.0, 0.7, 1)
            # a free request (amount 0) passes a spent-out money limit
            assert await a.budget_reserve([line(tight, 0.0)]) is None

    run(body())


def test_concurrent_reservations_never_pass_the_money_limit(backend):
    async def body():
        async with backend.states(2) as (a, b):
            b_cfg = budget("money", limit_usd=1.0)
            ln = line(b_cfg, 0.003)
            results = await asyncio.gather(*(s.budget_reserve([ln]) for s in (a, b) * 250))
            admitted = [r for r in results if r is None]
            assert len(admitted) == 333  # floor(1.0 / 0.003)
            assert all(r.startswith("budget money (researcher): ") for r in results if r is not None)
            spent, reserved, calls = await a.budget_usage(ln.key)
            assert (spent, calls) == (0.0, 333) and reserved == pytest.approx(0.999)

    run(body())


def test_concurrent_reservations_never_pass_max_calls(backend):
    async def body():
        async with backend.states(2) as (a, b):
            ln = line(budget("calls", max_calls=37), 0.01)
            results = await asyncio.gather(*(s.budget_reserve([ln]) for s in (a, b) * 250))
            assert sum(r is None for r in results) == 37
            assert (await b.budget_usage(ln.key))[2] == 37

    run(body())


def test_concurrent_multi_line_reservations_move_every_line_together(backend):
    async def body():
        async with backend.states(2) as (a, b):
            money, calls = budget("money", limit_usd=1.0), budget("calls", max_calls=60)
            lines = [line(money, 0.01), line(calls, 0.01)]  # money allows 100, calls allow 60
            other = [line(money, 0.01)]  # requests that touch only the money line
            results = await asyncio.gather(
                *(s.budget_reserve(lines) for s in (a, b) * 100), *(s.budget_reserve(other) for s in (a, b) * 100)
            )
            both, only_money = results[:200], results[200:]
            n_both, n_money = sum(r is None for r in both), sum(r is None for r in only_money)
            assert n_both <= 60 and n_both + n_money == 100
            _, reserved_m, calls_m = await a.budget_usage(lines[0].key)
            _, _, calls_c = await a.budget_usage(lines[1].key)
            assert calls_c == n_both and calls_m == n_both + n_money
            assert reserved_m == pytest.approx(1.0)

    run(body())


def test_settle_and_release_math(backend):
    async def body():
        async with backend.states(2) as (a, b):
            x, y = budget("x", limit_usd=5.0), budget("y", limit_usd=5.0, max_calls=10)
            lines = [line(x, 0.5), line(y, 0.5)]
            assert await a.budget_reserve(lines) is None
            assert await b.budget_reserve(lines) is None
            assert await a.budget_usage(lines[1].key) == (0.0, 1.0, 2)
            # settle: the reservation goes, the real cost is spent; (before, after) per line
            assert await b.budget_settle(lines, 0.2) == [(0.0, 0.2), (0.0, 0.2)]
            assert await a.budget_usage(lines[0].key) == (0.2, 0.5, 2)
            assert await a.budget_settle(lines, 0.25) == [(0.2, 0.45), (0.2, 0.45)]
            assert await a.budget_usage(lines[1].key) == (0.45, 0.0, 2)  # calls stay counted once settled
            # release: the reservation and the call go back, never below zero
            assert await a.budget_reserve(lines) is None
            assert await a.budget_usage(lines[0].key) == (0.45, 0.5, 3)
            await b.budget_release(lines)
            assert await a.budget_usage(lines[0].key) == (0.45, 0.0, 2)
            for _ in range(3):
                await b.budget_release(lines)
            assert await a.budget_usage(lines[0].key) == (0.45, 0.0, 0)
            assert await a.budget_usage(lines[1].key) == (0.45, 0.0, 0)

    run(body())


def test_add_counts_unreserved_calls_for_reconciliation(backend):
    """budget_add: spend served during an outage joins the shared counters, without touching reservations."""

    async def body():
        async with backend.states(2) as (a, b):
            x = budget("x", limit_usd=1.0, max_calls=3)
            lines = [line(x, 0.4)]
            assert await a.budget_reserve(lines) is None
            await b.budget_add(lines, 0.3)
            await b.budget_add(lines, 0.1)
            spent, reserved, calls = await a.budget_usage(lines[0].key)
            assert (round(spent, 9), reserved, calls) == (0.4, 0.4, 3)
            assert (await a.budget_reserve(lines) or "").startswith("budget x ")  # the added calls count to max_calls

    run(body())


def test_session_totals_add_up_across_replicas_and_keep_the_first_seen(backend):
    async def body():
        async with backend.states(2) as (a, b):
            t = await a.session_add("s1", now=100.0, cost_usd=0.25, prompt_tokens=10, completion_tokens=5, ttl_s=60)
            assert (t.first_seen, t.requests, t.cost_usd, t.prompt_tokens, t.completion_tokens) == (
                100.0,
                1,
                0.25,
                10,
                5,
            )
            t = await b.session_add("s1", now=200.0, cost_usd=0.5, prompt_tokens=1, completion_tokens=2, ttl_s=60)
            assert (t.first_seen, t.requests, t.cost_usd, t.prompt_tokens, t.completion_tokens) == (
                100.0,
                2,
                0.75,
                11,
                7,
            )
            other = await b.session_add("s2", now=300.0, cost_usd=0, prompt_tokens=0, completion_tokens=0, ttl_s=60)
            assert (other.first_seen, other.requests) == (300.0, 1)
            assert await a.session_get("never") is None
            assert (await a.session_get("s1")).cost_usd == 0.75
            await a.session_kill("s1", "over budget", ttl_s=60, at=150.0)
            await b.session_kill("s1", "second reason", ttl_s=60, at=160.0)  # the first reason and time stay
            t = await b.session_get("s1")
            assert (t.killed_reason, t.killed_at, t.requests) == ("over budget", 150.0, 2)

    run(body())


def test_a_session_reset_drops_only_a_life_begun_before_the_cut(backend):
    """A lifted kill: every replica may ask for the reset; only totals of the life that ended go."""

    async def body():
        async with backend.states(2) as (a, b):
            await a.session_add("s1", now=100.0, cost_usd=9.0, prompt_tokens=10, completion_tokens=5, ttl_s=60)
            await a.session_kill("s1", "over budget", ttl_s=60, at=120.0)
            assert await b.session_reset("s1", before=130.0) is True
            assert await a.session_get("s1") is None
            t = await b.session_add("s1", now=140.0, cost_usd=0.5, prompt_tokens=1, completion_tokens=1, ttl_s=60)
            assert (t.first_seen, t.requests, t.cost_usd, t.killed_reason) == (140.0, 1, 0.5, None)
            assert await a.session_reset("s1", before=130.0) is False  # a replica late to the lift: the new life stays
            assert (await b.session_get("s1")).cost_usd == 0.5
            assert await a.session_reset("never", before=1e12) is False

    run(body())


def test_usage_of_a_counter_never_touched_is_zero(backend):
    async def body():
        async with backend.states(1) as (a,):
            assert await a.budget_usage("nobody|2025-01-01|nothing") == (0.0, 0.0, 0)

    run(body())


def test_seeded_spend_counts_toward_the_limit_on_every_replica(backend):
    async def body():
        async with backend.states(2) as (a, b):
            cfg = budget("seeded", limit_usd=1.0, max_calls=5)
            a.budget_seed(line(cfg, 0).key, 0.9, 3)
            assert await b.budget_usage(line(cfg, 0).key) == (0.9, 0.0, 3)  # no waiting: the next read sees it
            why = await b.budget_reserve([line(cfg, 0.2)])
            assert why == over_limit(line(cfg, 0.2), spent=0.9, reserved=0.0, calls=3)
            assert await b.budget_reserve([line(cfg, 0.1)]) is None
            assert await a.budget_reserve([line(cfg, 0.0)]) is None
            assert await a.budget_reserve([line(cfg, 0.0)]) == "budget seeded (researcher): 5 of 5 calls used this day"

    run(body())


def test_prune_forgets_ended_windows_but_not_reservations_or_current_ones(backend):
    async def body():
        async with backend.states(2) as (a, b):
            cfg = budget("p", limit_usd=10.0)
            old_idle, old_busy, cur = line(cfg, 0.1, "2024-12-31"), line(cfg, 0.1, "2024-12-30"), line(cfg, 0.1)
            for ln in (old_idle, old_busy, cur):
                assert await a.budget_reserve([ln]) is None
            await a.budget_settle([old_idle], 0.05)
            await a.set_flag(f"latched:{old_idle.key}", "old latch")
            await a.set_flag(f"latched:{cur.key}", "current latch")
            await a.set_flag("emergency", "manual")

            def current(key: str) -> bool:
                return "|2025-01-01|" in key

            assert await b.budget_prune(current) == 2  # the idle old counter and its latch
            assert await a.budget_usage(old_idle.key) == (0.0, 0.0, 0)
            assert await a.budget_usage(old_busy.key) == (0.0, 0.1, 1)  # still reserved: kept
            assert await a.budget_usage(cur.key) == (0.0, 0.1, 1)
            assert await a.flag(f"latched:{old_idle.key}") is None
            assert await a.flag(f"latched:{cur.key}") == "current latch"
            assert await a.flag("emergency") == "manual"
            await a.budget_release([old_busy])
            assert await b.budget_prune(current) == 1
            assert await b.budget_prune(current) == 0

    run(body())


# ---------------------------------------------------------------------------- rate and concurrency limits


def counter(kind: str, cap: int, value: str = "ci-bot") -> LimitCounter:
    lim = LimitConfig(scope="key", match="*", **{kind: cap})
    return LimitCounter(kind, f"{lim.id}|{value}", cap, lim, value)  # type: ignore[arg-type]


async def admit(state, counters, now: float, lease: str, tokens: int = 0, ttl: float = 30.0):
    return await state.limit_admit(counters, now=now, tokens=tokens, lease=lease, lease_ttl_s=ttl)


def test_rpm_is_an_exact_sliding_minute_across_replicas(backend):
    async def body():
        async with backend.states(2) as (a, b):
            rpm = counter("rpm", 3)
            assert await admit(a, [rpm], 100.0, "r1") is None
            assert await admit(b, [rpm], 110.0, "r2") is None
            assert await admit(a, [rpm], 120.0, "r3") is None
            i, wait = await admit(b, [rpm], 130.0, "r4")
            assert i == 0 and wait == pytest.approx(30.0)  # the admission at 100 leaves the window at 160
            assert (await admit(a, [rpm], 159.999, "r5"))[0] == 0
            assert await admit(b, [rpm], 160.0, "r6") is None
            _, wait = await admit(a, [rpm], 161.0, "r7")
            assert wait == pytest.approx(9.0)  # then the one at 110, at 170
            assert await a.limit_usage(rpm, now=161.0) == 3 and await b.limit_usage(rpm, now=230.0) == 0

    run(body())


def test_rpm_allows_no_double_burst_at_a_minute_boundary(backend):
    async def body():
        async with backend.states(2) as (a, b):
            rpm = counter("rpm", 5)
            for i in range(5):
                assert await admit((a, b)[i % 2], [rpm], 59.9 + i * 0.01, f"x{i}") is None
            # a fixed per-minute counter would start afresh at 60.0 and admit 5 more
            assert all([(await admit(b, [rpm], 60.0 + i, f"y{i}")) is not None for i in range(50)])
            assert await admit(a, [rpm], 119.95, "z") is None

    run(body())


def test_concurrent_admissions_admit_exactly_the_limit(backend):
    async def body():
        async with backend.states(2) as (a, b):
            for kind, cap, tokens, want in (("rpm", 37, 0, 37), ("max_concurrent", 7, 0, 7), ("tpm", 1000, 30, 33)):
                c = counter(kind, cap, value=f"burst-{kind}")
                results = await asyncio.gather(
                    *(admit(s, [c], 100.0, f"{kind}-{i}", tokens=tokens) for i, s in enumerate((a, b) * 250))
                )
                assert sum(r is None for r in results) == want, kind
                assert all(r[0] == 0 for r in results if r is not None)
                assert await a.limit_usage(c, now=100.0) == want * max(1, tokens), kind

    run(body())


def test_admission_is_all_or_nothing_across_counters(backend):
    async def body():
        async with backend.states(2) as (a, b):
            rpm, tpm, slot = counter("rpm", 10), counter("tpm", 1000), counter("max_concurrent", 1, value="agent-x")
            assert await admit(a, [rpm, tpm, slot], 100.0, "l1", tokens=100) is None
            # the slot is taken: the request is not counted in the rpm or tpm windows either
            assert await admit(b, [rpm, tpm, slot], 101.0, "l2", tokens=100) == (2, 0.0)
            assert await a.limit_usage(rpm, now=101.0) == 1 and await a.limit_usage(tpm, now=101.0) == 100
            assert await a.limit_usage(slot, now=101.0) == 1

    run(body())


def test_tokens_per_minute_counts_prompts_at_admission_and_completions_at_release(backend):
    async def body():
        async with backend.states(2) as (a, b):
            tpm = counter("tpm", 1000)
            assert await admit(a, [tpm], 100.0, "t1", tokens=600) is None
            assert await admit(b, [tpm], 110.0, "t2", tokens=300) is None
            i, wait = await admit(a, [tpm], 120.0, "t3", tokens=200)
            assert i == 0 and wait == pytest.approx(40.0)  # 100 tokens must go: the 600 at 100 leave at 160
            await b.limit_release([tpm], now=115.0, tokens=50, lease="t2")  # t2's completion
            await b.limit_release([tpm], now=115.0, tokens=50, lease="t2")  # released twice: counted once
            assert await a.limit_usage(tpm, now=120.0) == 950
            assert await admit(a, [tpm], 125.0, "t4", tokens=50) is None
            assert await admit(b, [tpm], 160.0, "t5", tokens=600) is None  # the 600 left at 160
            # a request larger than the limit runs only in an empty window
            assert (await admit(a, [tpm], 200.0, "big", tokens=5000))[0] == 0
            assert await admit(a, [tpm], 300.0, "big", tokens=5000) is None
            _, wait = await admit(b, [tpm], 301.0, "t6", tokens=1)
            assert wait == pytest.approx(59.0)

    run(body())


def test_concurrency_leases_release_renew_and_expire(backend):
    """A replica that dies holding slots stops renewing: its slots come back when the leases expire."""

    async def body():
        async with backend.states(2) as (a, b):
            slot = counter("max_concurrent", 2)
            assert await admit(a, [slot], 100.0, "L1") is None
            assert await admit(a, [slot], 100.0, "L2") is None
            assert await admit(b, [slot], 100.5, "L3") == (0, 0.0)
            await a.limit_release([slot], now=101.0, tokens=0, lease="L1")
            assert await admit(b, [slot], 101.0, "L3") is None  # lease until 131
            await a.limit_renew([(slot, "L2")], expires_at=150.0)  # L2 still running on a
            assert await admit(b, [slot], 130.5, "L4") is not None
            assert await admit(b, [slot], 131.0, "L4") is None  # L3's replica died: its lease ran out at 131
            await b.limit_renew([(slot, "L3")], expires_at=200.0)  # a lease taken back stays gone
            assert await a.limit_usage(slot, now=131.0) == 2
            assert await admit(a, [slot], 149.0, "L5") is not None
            assert await admit(a, [slot], 150.0, "L5") is None  # L2 was renewed until 150
            await a.limit_release([slot], now=151.0, tokens=0, lease="never-held")  # harmless

    run(body())


def test_limit_counters_never_touched_are_empty(backend):
    async def body():
        async with backend.states(1) as (a,):
            for kind in ("rpm", "tpm", "max_concurrent"):
                assert await a.limit_usage(counter(kind, 1, value="nobody"), now=5.0) == 0

    run(body())


# ---------------------------------------------------------------------------- flags


def test_flags_are_shared_between_replicas(backend):
    async def body():
        async with backend.states(2) as (a, b):
            assert await b.flag("emergency") is None
            await a.set_flag("emergency", "GPU on fire")
            assert await b.flag("emergency") == "GPU on fire"
            await b.set_flag("emergency", "still")
            assert await a.flag("emergency") == "still"
            await a.set_flag("emergency", None)
            assert await b.flag("emergency") is None
            await a.set_flag("emergency", None)  # deleting what is not there is fine

    run(body())


# ---------------------------------------------------------------------------- lifecycle


def test_close_releases_a_replica_and_may_be_called_again(backend):
    async def body():
        async with backend.states(2) as (a, b):
            await a.set_flag("emergency", "on")
            await a.close()
            await a.close()  # twice is fine, and the backend closes each state once more on the way out
            assert await b.flag("emergency") == "on"  # closing one replica loses nothing the others share
        assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("tiergate-")] == []

    run(body())


# ---------------------------------------------------------------------------- Redis only


def test_redis_counters_and_latches_expire_and_money_is_exact(redis_backend):
    import redis

    async def body():
        async with redis_backend.states(1) as (a,):
            ln = line(budget("ttl", limit_usd=100.0), 0.1)
            for amount in (0.1, 0.2, 0.7, 0.3333333, 1e-7):
                odd = line(ln.budget, amount)
                assert await a.budget_reserve([odd]) is None
                await a.budget_release([odd])
            assert await a.budget_usage(ln.key) == (0.0, 0.0, 0)  # integer units: back to exactly zero
            await a.set_flag(f"latched:{ln.key}", "x")
            await a.set_flag("emergency", "y")
            await a.breaker_failure("d", now=1.0, threshold=1, error="e")
            with redis.Redis.from_url(REDIS_URL, decode_responses=True) as r:
                p = redis_backend.prefix
                for key in (f"{p}budget:{ln.key}", f"{p}flag:latched:{ln.key}"):
                    assert 39 * 86400 < r.ttl(key) <= 40 * 86400, key
                assert 0 < r.ttl(f"{p}breaker:d") <= 7 * 86400
                assert r.ttl(f"{p}flag:emergency") == -1  # a manual switch stays until switched off
            assert await a.budget_prune(lambda key: False) == 2

    run(body())


def test_redis_seed_never_lowers_a_shared_counter_or_drops_reservations(redis_backend):
    async def body():
        async with redis_backend.states(2) as (a, b):
            ln = line(budget("s", limit_usd=10.0), 0.5)
            assert await a.budget_reserve([ln]) is None
            await a.budget_settle([ln], 2.0)
            assert await a.budget_reserve([ln]) is None
            b.budget_seed(ln.key, 1.0, 1)  # a restarting replica's ledger lags behind: keep the larger
            assert await a.budget_usage(ln.key) == (2.0, 0.5, 2)
            b.budget_seed(ln.key, 3.0, 7)  # Redis lost data, the ledger knows more
            assert await a.budget_usage(ln.key) == (3.0, 0.5, 7)

    run(body())


class Proxy:
    """A TCP proxy to Redis in its own thread that can be cut and restored, to make Redis 'go away'."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    def up(self) -> None:
        async def start() -> None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(5)

    def down(self) -> None:
        async def stop() -> None:
            if self.server is not None:
                self.server.close()
                self.server = None
            for w in list(self.writers):
                w.transport.abort()
            self.writers.clear()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)

    def shutdown(self) -> None:
        self.down()
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_redis_unreachable_raises_state_unavailable_never_falls_back(redis_backend):
    from tiergate.core.errors import StateUnavailable, TiergateError
    from tiergate.state.redis_state import RedisState

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens here once the socket closes

    async def never_started():
        st = RedisState(f"redis://:hunter2@127.0.0.1:{dead}/0", prefix=redis_backend.prefix, timeout_s=0.5)
        with pytest.raises(StateUnavailable) as err:
            await st.start()
        assert isinstance(err.value, TiergateError) and err.value.status == 503
        assert f"127.0.0.1:{dead}" in err.value.message and "hunter2" not in err.value.message
        with pytest.raises(StateUnavailable):
            st.budget_seed("k|w|v", 1.0, 1)

    run(never_started())

    proxy = Proxy(("127.0.0.1", 6379))
    proxy.up()

    async def outage():
        url = f"redis://127.0.0.1:{proxy.port}/0"
        async with redis_backend.states(1, url=url, timeout_s=0.5, stale_after_s=1.0) as (a,):
            ln = line(budget("o", limit_usd=1.0), 0.1)
            assert await a.budget_reserve([ln]) is None
            proxy.down()
            calls = [
                a.budget_reserve([ln]),
                a.budget_settle([ln], 0.1),
                a.budget_release([ln]),
                a.budget_usage(ln.key),
                a.budget_prune(lambda k: False),
                a.flag("x"),
                a.set_flag("x", "y"),
                a.breaker_admit("d", now=1.0, cooldown_s=1),
                a.breaker_success("d"),
                a.breaker_failure("d", now=1.0, threshold=1, error="e"),
            ]
            for call in calls:
                with pytest.raises(StateUnavailable):
                    await call
            with pytest.raises(StateUnavailable):
                a.budget_seed(ln.key, 1.0, 1)
            await asyncio.sleep(1.3)  # the breaker cache is now too old to trust
            with pytest.raises(StateUnavailable, match="old"):
                a.breaker_snapshot(now=1.0, cooldown_s=1)
            proxy.up()  # Redis is back: everything works again without a restart
            await wait_for(lambda: _snapshot_ok(a), within_s=3)
            assert await a.budget_usage(ln.key) == (0.0, 0.1, 1)
            assert await a.budget_reserve([ln]) is None

    try:
        run(outage())
    finally:
        proxy.shutdown()


def _snapshot_ok(state) -> bool:
    from tiergate.core.errors import StateUnavailable

    try:
        state.breaker_snapshot(now=1.0, cooldown_s=1)
        return True
    except StateUnavailable:
        return False


def test_redis_limit_keys_expire_and_outages_raise_state_unavailable(redis_backend):
    import redis

    from tiergate.core.errors import StateUnavailable
    from tiergate.state.redis_limits import KEY_TTL_S

    proxy = Proxy(("127.0.0.1", 6379))
    proxy.up()

    async def body():
        url = f"redis://127.0.0.1:{proxy.port}/0"
        async with redis_backend.states(1, url=url, timeout_s=0.5) as (a,):
            cs = [counter("rpm", 5), counter("tpm", 100), counter("max_concurrent", 2)]
            assert await admit(a, cs, time.time(), "k1", tokens=10) is None
            with redis.Redis.from_url(REDIS_URL, decode_responses=True) as r:
                keys = redis_backend.keys()
                assert len(keys) == 4, keys  # three sets and the token total
                assert all(0 < r.ttl(k) <= KEY_TTL_S for k in keys)
            proxy.down()
            for call in (
                admit(a, cs, time.time(), "k2", tokens=10),
                a.limit_release(cs, now=time.time(), tokens=5, lease="k1"),
                a.limit_renew([(cs[2], "k1")], expires_at=time.time() + 30),
                a.limit_usage(cs[0], now=time.time()),
            ):
                with pytest.raises(StateUnavailable):
                    await call
            proxy.up()
            assert await a.limit_usage(cs[2], now=time.time()) == 1  # nothing was counted per process meanwhile

    try:
        run(body())
    finally:
        proxy.shutdown()
