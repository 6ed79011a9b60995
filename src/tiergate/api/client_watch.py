"""Notice a streaming client that hung up while the relay waits on the upstream.

aiohttp tells a handler that its client left only when it next writes
(handlers are not cancelled). A relay waiting on an upstream that sends
nothing relayable (a slow model, an event that never ends) kept reading
that upstream for as long as it went on: 81 s and more in issue 13. One
timer per stream looks at the client's socket a few times a second and, on
a hang-up, closes the upstream response, which ends the relay's wait at
once; the relay then records the request as the client's (499).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

POLL_S = 0.25  # the upstream is closed within this of the client leaving


class ClientWatch:
    __slots__ = ("_request", "_close", "_loop", "_handle", "gone")

    def __init__(self, request: web.BaseRequest, close: Callable[[], None]) -> None:
        self._request = request
        self._close = close
        self._loop = asyncio.get_running_loop()
        self.gone = False
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(POLL_S, self._check)

    def _check(self) -> None:
        transport = self._request.transport
        if transport is None or transport.is_closing():
            self.gone, self._handle = True, None
            self._close()
            return
        self._handle = self._loop.call_later(POLL_S, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
