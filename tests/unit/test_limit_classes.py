"""Concurrency classes (issue 21 item 2): a ``shared`` limits line counts every match together (seed 001: two
agents, four subagents), and ``queue_timeout`` makes a request over it wait for a slot instead of a 429."""

from __future__ import annotations

import asyncio

import pytest

from tiergate.config.guardrails import LimitConfig
from tiergate.config.loading import config_from_dict
from tiergate.core.errors import ConfigError, RateLimited
from tiergate.core.limits import counters_for, refusal_message
from tiergate.core.types import Identity
from tiergate.guardrails.limits import LimitGuard
from tiergate.state.memory import MemoryState

SUBAGENTS = {"scope": "agent", "match": "sub-*", "max_concurrent": 2, "shared": True}


def limits(*lines: dict) -> list[LimitConfig]:
    return list(config_from_dict({"limits": list(lines)}, env={}).limits)


def agent(name: str) -> Identity:
    return Identity(key_name="k", agent=name)


@pytest.mark.parametrize(
    ("line", "who", "key"),
    [
        (SUBAGENTS, "sub-a", "agent:sub-*|*"),
        (SUBAGENTS, "sub-b", "agent:sub-*|*"),  # the same counter: a class
        ({**SUBAGENTS, "shared": False}, "sub-b", "agent:sub-*|sub-b"),  # each its own
        ({"scope": "key", "match": "jobs", "max_concurrent": 2, "shared": True}, "x", "key:jobs|*"),
    ],
)
def test_a_shared_line_is_one_counter_for_every_match(line, who, key):
    ident = Identity(key_name="jobs", agent=who) if line["scope"] == "key" else agent(who)
    (c,) = counters_for(limits(line), ident)
    assert c.key == key


def test_the_refusal_of_a_class_names_the_class():
    (c,) = counters_for(limits(SUBAGENTS), agent("sub-a"))
    assert refusal_message(c) == "concurrency limit: agents matching sub-* together allows 2 requests at once " \
        "(limits line agent:sub-*)"  # fmt: skip


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (
            {"scope": "agent", "match": "a", "rpm": 5, "queue_timeout": "5s"},
            "queue_timeout: waits for a max_concurrent",
        ),
        ({**SUBAGENTS, "queue_timeout": "soon"}, "limits[0].queue_timeout: invalid duration 'soon'"),
        ({**SUBAGENTS, "queue_timeout": "2h"}, "limits[0].queue_timeout: Input should be less than or equal to 3600"),
    ],
)
def test_queue_config_errors(line, error):
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"limits": [line]}, env={})
    assert error in exc.value.message


def test_beyond_the_class_limit_requests_queue_and_run_as_slots_free():
    async def main() -> None:
        guard = LimitGuard(limits({**SUBAGENTS, "queue_timeout": "30s"}), state=MemoryState())
        a = await guard.admit(agent("sub-a"), 1)
        b = await guard.admit(agent("sub-b"), 1)
        assert a is not None and b is not None
        third = asyncio.create_task(guard.admit(agent("sub-c"), 1))  # a third subagent: waits
        await asyncio.sleep(0.3)
        assert not third.done()
        await guard.release(a, None)  # a slot frees: the queued one runs
        c = await asyncio.wait_for(third, 10)
        assert c is not None and guard.in_flight == 2
        assert await guard.admit(agent("researcher"), 1) is None  # not a subagent: not in the class

    asyncio.run(main())


def test_a_queued_request_is_refused_when_its_queue_timeout_passes():
    async def main() -> None:
        guard = LimitGuard(limits({**SUBAGENTS, "queue_timeout": "0.3s"}), state=MemoryState())
        await guard.admit(agent("sub-a"), 1)
        await guard.admit(agent("sub-b"), 1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(RateLimited, match="together allows 2 requests at once"):
            await guard.admit(agent("sub-c"), 1)
        assert loop.time() - t0 >= 0.3

    asyncio.run(main())


def test_a_line_without_queue_timeout_refuses_at_once():
    async def main() -> None:
        guard = LimitGuard(limits(SUBAGENTS), state=MemoryState())
        await guard.admit(agent("sub-a"), 1)
        await guard.admit(agent("sub-b"), 1)
        with pytest.raises(RateLimited):
            await asyncio.wait_for(guard.admit(agent("sub-c"), 1), 1)

    asyncio.run(main())
