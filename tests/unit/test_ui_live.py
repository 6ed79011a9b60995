"""The live stream's hub (api/ui_live.py): one build per tick however many pages ask, slower when builds are
slow, a failed build as a problem event, and a bounded number of streams."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tiergate.api.ui_live import LiveHub
from tiergate.core.errors import LedgerUnavailable, ServerBusy


def test_one_build_per_tick_shared_by_every_page_and_slower_when_builds_are_slow():
    async def main():
        now, builds = [0.0], []

        async def build():
            builds.append(now[0])
            now[0] += took[0]  # the build's own duration on the hub's clock
            return {"n": len(builds)}

        took = [0.0]
        hub = LiveHub(build, tick_s=2.0, clock=lambda: now[0])
        frames = await asyncio.gather(*(hub.frame() for _ in range(10)))  # ten pages at once
        assert builds == [0.0] and len(set(frames)) == 1
        assert frames[0] == b'event: snapshot\ndata: {"n":1}\n\n'
        now[0] = 1.0
        await hub.frame()
        assert len(builds) == 1  # still fresh
        now[0] = 2.0
        await hub.frame()
        assert len(builds) == 2  # a tick later: rebuilt
        took[0] = 3.0  # a slow ledger: the next build takes 3 s
        now[0] = 4.0
        await hub.frame()
        assert len(builds) == 3
        now[0] += 10.0  # 10 s later: under 4 x 3 s, not rebuilt yet
        await hub.frame()
        assert len(builds) == 3
        now[0] += 2.0
        await hub.frame()
        assert len(builds) == 4

    asyncio.run(main())


def test_a_failed_build_is_a_problem_event_and_the_next_tick_tries_again():
    async def main():
        fail = [True]

        async def build():
            if fail[0]:
                raise LedgerUnavailable("the ledger database is unreachable")
            return {"ok": True}

        hub = LiveHub(build, tick_s=0.0)
        frame = await hub.frame()
        assert frame.startswith(b"event: problem\ndata: ")
        assert orjson.loads(frame.split(b"data: ", 1)[1]) == {"message": "the ledger database is unreachable"}
        fail[0] = False
        assert (await hub.frame()).startswith(b"event: snapshot")

    asyncio.run(main())


def test_streams_are_bounded():
    async def build():
        return {}

    hub = LiveHub(build, max_clients=2)
    with hub.slot(), hub.slot():
        with pytest.raises(ServerBusy, match="2 live dashboard streams"):
            with hub.slot():
                pass
    assert hub.clients == 0
    with hub.slot():
        assert hub.clients == 1
