"""The dashboard's live stream: one server-sent-events endpoint pushing a snapshot about every two seconds.

One snapshot is computed per tick however many pages are open (the first
stream to ask after it went stale computes it; the others wait on the same
lock and reuse it), and only while a page is open: no page, no work. At most
MAX_CLIENTS streams at once (a 503 beyond, and the page falls back to its
reload button); each stream ends at sign-out or session expiry, after
MAX_STREAM_S (the browser reconnects by itself), or when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from aiohttp import web

from tiergate.api.ui_session import secured
from tiergate.core.errors import ServerBusy, TiergateError

TICK_S = 2.0
MAX_CLIENTS = 16
MAX_STREAM_S = 300.0
SLOWDOWN = 4.0  # a snapshot is rebuilt no sooner than this many times its last build took


class LiveHub:
    """The open streams' count, the shared snapshot and the stop signal."""

    def __init__(
        self,
        build: Callable[[], Awaitable[dict[str, Any]]],
        *,
        tick_s: float = TICK_S,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._build, self.tick_s, self.max_clients, self._clock = build, tick_s, max_clients, clock
        self.clients = 0
        self._lock = asyncio.Lock()
        self._snapshot: bytes | None = None
        self._built_at = -1e18
        self._took = 0.0  # what the last build took
        self.stopping = asyncio.Event()

    async def frame(self) -> bytes:
        """The current snapshot as one SSE ``snapshot`` event, rebuilt when stale.

        Stale means older than most of a tick, and older than SLOWDOWN times what the last build
        took: a ledger so large that a build takes a second is read at most every few seconds.
        A build that fails (the ledger unreachable) is a ``problem`` event; the page keeps what it showed.
        """
        async with self._lock:
            age = self._clock() - self._built_at
            if self._snapshot is None or age >= max(self.tick_s * 0.75, self._took * SLOWDOWN):
                started = self._clock()
                try:
                    self._snapshot = orjson.dumps(await self._build())
                except TiergateError as err:
                    return b"event: problem\ndata: " + orjson.dumps({"message": err.message}) + b"\n\n"
                finally:
                    self._took = self._clock() - started
                self._built_at = self._clock()
            return b"event: snapshot\ndata: " + self._snapshot + b"\n\n"

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.clients >= self.max_clients:
            raise ServerBusy(f"{self.max_clients} live dashboard streams are open already; close a tab or reload later")
        self.clients += 1
        try:
            yield
        finally:
            self.clients -= 1

    def stop(self) -> None:
        """The server is stopping: every stream ends at its next tick (at once if waiting)."""
        self.stopping.set()


LIVE_HUB: web.AppKey[LiveHub] = web.AppKey("ui_live_hub", LiveHub)


async def stream(request: web.Request, hub: LiveHub, still_signed_in: Callable[[], bool]) -> web.StreamResponse:
    """Serve one page's stream until it leaves, signs out, its time is up or the server stops."""
    with hub.slot():
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # a reverse proxy must not hold the events back
            }
        )
        secured(resp)
        await resp.prepare(request)
        await resp.write(b"retry: 3000\n\n")
        ends = time.monotonic() + MAX_STREAM_S
        try:
            while not hub.stopping.is_set() and still_signed_in() and time.monotonic() < ends:
                await resp.write(await hub.frame())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(hub.stopping.wait(), hub.tick_s)
        except (ConnectionResetError, ConnectionError):
            pass  # the page went away
        return resp
