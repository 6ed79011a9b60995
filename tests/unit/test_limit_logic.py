"""Rate and concurrency limits without a server: config, which counters apply, messages, the guard's outage modes."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tiergate.config.guardrails import LimitConfig
from tiergate.config.loading import config_from_dict
from tiergate.core.errors import ConfigError, RateLimited, StateUnavailable
from tiergate.core.limits import (
    counters_for,
    end_tokens,
    refusal_message,
    retry_after_s,
    tokens_fit,
)
from tiergate.core.types import Identity, Usage
from tiergate.guardrails.limits import LimitGuard
from tiergate.observability.metrics import Metrics
from tiergate.state.memory import MemoryState


def limits(*lines: dict) -> list[LimitConfig]:
    return list(config_from_dict({"limits": list(lines)}, env={}).limits)


CI = Identity(key_name="ci-bot", agent="researcher")


@pytest.mark.parametrize(
    ("line", "ident", "want"),
    [
        # (limits line, identity, [(kind, key, cap)])
        (
            {"scope": "key", "match": "ci-bot", "rpm": 60, "tpm": 200000, "max_concurrent": 4},
            CI,
            [
                ("rpm", "key:ci-bot|ci-bot", 60),
                ("tpm", "key:ci-bot|ci-bot", 200000),
                ("max_concurrent", "key:ci-bot|ci-bot", 4),
            ],
        ),
        ({"scope": "key", "match": "other", "rpm": 5}, CI, []),
        ({"scope": "key", "match": "ci-*", "rpm": 5}, CI, [("rpm", "key:ci-*|ci-bot", 5)]),
        ({"scope": "agent", "match": "*", "max_concurrent": 2}, CI, [("max_concurrent", "agent:*|researcher", 2)]),
        (
            {"scope": "agent", "match": "*", "max_concurrent": 2},
            Identity(key_name="k", agent="writer"),
            [("max_concurrent", "agent:*|writer", 2)],
        ),  # each agent its own counter
        ({"scope": "agent", "match": "*", "rpm": 2}, Identity(key_name="k"), []),  # no agent named: not counted
        ({"scope": "agent", "match": "Researcher", "rpm": 2}, CI, []),  # names are case-sensitive
        ({"scope": "key", "match": "*", "tpm": 10}, Identity(key_name="master"), [("tpm", "key:*|master", 10)]),
    ],
)
def test_which_counters_a_request_is_counted_in(line, ident, want):
    got = counters_for(limits(line), ident)
    assert [(c.kind, c.key, c.cap) for c in got] == want


def test_every_matching_line_applies_in_config_order():
    got = counters_for(
        limits(
            {"scope": "key", "match": "*", "rpm": 100},
            {"scope": "agent", "match": "researcher", "max_concurrent": 1},
            {"scope": "key", "match": "ci-bot", "rpm": 10},
        ),
        CI,
    )
    assert [(c.kind, c.key) for c in got] == [
        ("rpm", "key:*|ci-bot"),
        ("max_concurrent", "agent:researcher|researcher"),
        ("rpm", "key:ci-bot|ci-bot"),
    ]


@pytest.mark.parametrize(
    ("line", "kind", "want"),
    [
        ({"scope": "key", "match": "ci-bot", "rpm": 60}, "rpm", "rate limit: key ci-bot allows 60 requests per minute"),
        (
            {"scope": "key", "match": "ci-bot", "tpm": 1000},
            "tpm",
            "rate limit: key ci-bot allows 1000 tokens per minute; this request needs about 300",
        ),
        (
            {"scope": "agent", "match": "*", "max_concurrent": 2},
            "max_concurrent",
            "concurrency limit: agent researcher allows 2 requests at once (limits line agent:*)",
        ),
        (
            {"scope": "key", "match": "ci-*", "rpm": 1},
            "rpm",
            "rate limit: key ci-bot allows 1 requests per minute (limits line key:ci-*)",
        ),
    ],
)
def test_refusals_name_who_and_which_limit(line, kind, want):
    (c,) = [c for c in counters_for(limits(line), CI) if c.kind == kind]
    assert refusal_message(c, tokens=300) == want


@pytest.mark.parametrize(
    ("kind", "wait", "want"),
    [
        ("rpm", 0.2, 1),
        ("rpm", 1.0, 1),
        ("rpm", 1.0000001, 1),
        ("rpm", 1.01, 2),
        ("rpm", 59.5, 60),
        ("rpm", 0.0, 1),
        ("tpm", 12.3, 13),
        ("max_concurrent", 25.0, 1),  # nobody knows when a running request ends: retry in 1 s
    ],
)
def test_retry_after_is_whole_seconds_and_at_least_one(kind, wait, want):
    c = next(
        c
        for c in counters_for(limits({"scope": "key", "match": "*", "rpm": 1, "tpm": 1, "max_concurrent": 1}), CI)
        if c.kind == kind
    )
    assert retry_after_s(c, wait) == want


@pytest.mark.parametrize(
    ("estimate", "usage", "want"),
    [
        (100, None, 0),  # never routed: nothing more to count
        (100, Usage(prompt_tokens=80, completion_tokens=50), 50),  # prompt overestimated: not given back
        (100, Usage(prompt_tokens=130, completion_tokens=50), 80),  # prompt underestimated: the rest counts now
    ],
)
def test_tokens_counted_when_a_request_ends(estimate, usage, want):
    assert end_tokens(estimate, usage) == want


@pytest.mark.parametrize(
    ("used", "tokens", "cap", "fits"),
    [
        (0, 10, 100, True),
        (90, 10, 100, True),
        (91, 10, 100, False),
        (0, 500, 100, True),
        (1, 500, 100, False),
    ],
)
def test_tokens_fit(used, tokens, cap, fits):
    assert tokens_fit(used, tokens, cap) is fits


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (
            {"scope": "user", "match": "x", "rpm": 1},
            "limits[0].scope: Input should be 'key' or 'agent'; allowed values: key, agent",
        ),
        ({"scope": "key", "match": "x"}, "limits[0]: set at least one of rpm, tpm, max_concurrent"),
        ({"scope": "key", "match": "x", "rpm": 0}, "limits[0].rpm: Input should be greater than 0"),
        ({"scope": "key", "rpm": 1}, "limits[0].match: Field required"),
        (
            {"scope": "key", "match": "x", "rpm": 1, "burst": 2},
            "limits[0].burst: unknown field; allowed fields: "
            "match, max_concurrent, queue_timeout, rpm, scope, shared, tpm",
        ),
    ],
)
def test_config_errors_name_the_field_and_what_is_allowed(line, error):
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"limits": [line]}, env={})
    assert error in exc.value.message


def test_two_lines_with_one_scope_and_match_are_refused():
    with pytest.raises(ConfigError, match="two limits share scope and match"):
        config_from_dict(
            {"limits": [{"scope": "key", "match": "x", "rpm": 1}, {"scope": "key", "match": "x", "tpm": 5}]}, env={}
        )


# ---------------------------------------------------------------------------- LimitGuard on MemoryState


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_guard_refuses_with_retry_after_and_counts_the_metric():
    async def main():
        clock, metrics = Clock(), Metrics()
        guard = LimitGuard(
            limits({"scope": "key", "match": "ci-bot", "rpm": 2}), state=MemoryState(), metrics=metrics, clock=clock
        )
        await guard.admit(CI, 10)
        clock.t += 20
        await guard.admit(CI, 10)
        clock.t += 10
        with pytest.raises(RateLimited) as exc:
            await guard.admit(CI, 10)
        assert exc.value.status == 429 and exc.value.retry_after == 30  # the first admission leaves the window
        assert exc.value.message == "rate limit: key ci-bot allows 2 requests per minute"
        assert b'tiergate_rate_limited_total{limit="rpm",scope="key"} 1.0' in metrics.render()
        clock.t += 30
        assert await guard.admit(CI, 10) is not None
        assert await guard.admit(Identity(key_name="other"), 10) is None  # no line applies

    asyncio.run(main())


def test_guard_releases_slots_and_renews_only_what_is_in_flight():
    async def main():
        clock, state = Clock(), MemoryState()
        guard = LimitGuard(
            limits({"scope": "agent", "match": "*", "max_concurrent": 1, "tpm": 1000}),
            state=state,
            clock=clock,
            lease_ttl_s=30,
        )
        a = await guard.admit(CI, 100)
        assert guard.in_flight == 1
        with pytest.raises(RateLimited, match="allows 1 requests at once"):
            await guard.admit(CI, 100)
        clock.t += 25
        await guard.renew()  # still running: its lease now ends at 1055
        clock.t += 20
        with pytest.raises(RateLimited):
            await guard.admit(CI, 100)
        await guard.release(a, Usage(prompt_tokens=100, completion_tokens=400))
        assert guard.in_flight == 0
        tpm = next(c for c in a.counters if c.kind == "tpm")
        assert await state.limit_usage(tpm, now=clock.t) == 500  # prompt at admission + completion at the end
        assert await guard.admit(CI, 100) is not None

    asyncio.run(main())


class FlakyState(MemoryState):
    """MemoryState whose limit calls fail like an unreachable Redis while ``down``."""

    down = True

    async def limit_admit(self, *a, **kw):
        if self.down:
            raise StateUnavailable("shared state unavailable: Redis at redis://x failed during limit admit: boom")
        return await super().limit_admit(*a, **kw)


def test_outage_fail_closed_refuses_with_503_naming_the_outage():
    async def main():
        guard = LimitGuard(limits({"scope": "key", "match": "*", "rpm": 5}), state=FlakyState(), mode="fail_closed")
        with pytest.raises(StateUnavailable) as exc:
            await guard.admit(CI, 1)
        assert exc.value.status == 503
        assert "limits cannot be checked (on_outage.limits: fail_closed)" in exc.value.message
        assert "Redis at redis://x" in exc.value.message

    asyncio.run(main())


def test_outage_fail_open_admits_warns_once_per_outage_and_counts(caplog):
    async def main():
        metrics, state = Metrics(), FlakyState()
        guard = LimitGuard(
            limits({"scope": "key", "match": "*", "rpm": 5}), state=state, mode="fail_open", metrics=metrics
        )
        with caplog.at_level(logging.WARNING, logger="tiergate.guardrails.limits"):
            for _ in range(3):
                assert await guard.admit(CI, 1) is None  # admitted, unchecked: nothing to release
            state.down = False
            assert await guard.admit(CI, 1) is not None
            state.down = True
            assert await guard.admit(CI, 1) is None
        assert b"tiergate_limits_unchecked_total 4.0" in metrics.render()
        assert sum("without checking" in r.message for r in caplog.records) == 2  # once per outage
        assert sum("checked again" in r.message for r in caplog.records) == 1

    asyncio.run(main())


def test_workers_without_shared_state_refuse_limits_counted_per_process():
    from tiergate.server import check_workers

    cfg = config_from_dict({"limits": [{"scope": "key", "match": "*", "rpm": 5}]}, env={})
    check_workers(cfg, 1)
    with pytest.raises(ConfigError, match=r"limits \(without state: redis://\.\.\.\) would be enforced per process"):
        check_workers(cfg, 2)
    check_workers(
        config_from_dict(
            {"limits": [{"scope": "key", "match": "*", "rpm": 5}], "state": "redis://127.0.0.1:6379/0"}, env={}
        ),
        2,
    )
