"""The client side of the socket: deadlines, a connection limit, malformed HTTP, and the drain on SIGTERM.

aiohttp's ``RequestHandler`` parses and dispatches; this subclass adds what a
gateway facing many agents needs and aiohttp leaves open:

- **deadlines** (server.header_timeout_s, body_timeout_s, keepalive_timeout_s):
  each connection is in one ``core.client_conn.Phase``, entered at a time it
  remembers; one sweep a second closes the ones past their phase's deadline.
  Nothing is scheduled per request (no timer handle on the hot path), so a
  deadline holds to within a second. aiohttp bounds only idle keep-alive (by
  default 3,630 s, and a request head or body that stops halfway not at all).
- **a body that stops short** of its Content-Length or final chunk gets 408
  in the client's own envelope (the handler's ``request.read()`` raises
  ``RequestTimeout``), then the connection closes: every handler gets the
  deadline, none has to ask for it.
- **server.max_connections**: see ``ConnectionGate``.
- **malformed HTTP**: aiohttp answers a request its parser refuses with a
  plain-text 400 that repeats the raw bytes (an Authorization header among
  them) and logs a traceback each time. Here: a JSON 400 that names the kind
  of fault and repeats nothing, ``tiergate_malformed_requests_total``, and one
  log line per client address per minute.
- **the drain**: ``ConnectionGate.drain``.
- **a routed answer in one write**: ``finish_response`` sends an
  ``api.plain_reply.PlainReply`` as one ``transport.write`` of its head and
  body, not through aiohttp's response machinery (a tenth of a chat
  request's cost); anything else goes aiohttp's way.

The hooks reach into aiohttp's ``RequestHandler`` (``_messages``,
``_request_factory``, ``_request_handler``, ``_current_request``,
``_lingering_time``, ``_upgraded``, ``_paused``; a request's ``_message`` and
``_finish``); tests/integration/test_raw_sockets.py exercises each one against
the installed aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.hdrs import EXPECT
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from tiergate.api.common import error_response, openai_error_body
from tiergate.api.edge import STATIC_ROUTES, AiohttpHandler
from tiergate.api.plain_reply import PlainReply
from tiergate.api.render import mark_cut_by_shutdown
from tiergate.config.schema import ServerConfig
from tiergate.core.client_conn import (
    MALFORMED_WHY,
    WAITING,
    Deadlines,
    OncePer,
    Phase,
    eviction_victim,
    malformed_kind,
)
from tiergate.core.errors import MalformedHTTP, RequestTimeout, ServerBusy
from tiergate.core.ids import IdSource
from tiergate.observability.metrics import Metrics

log = logging.getLogger("tiergate.server")

SWEEP_S = 1.0  # how often deadlines are checked: each holds to within this
DRAIN_IDLE_GRACE_S = 2.0  # at SIGTERM an idle keep-alive connection stays open this long for a request in transit
CUT_WAIT_S = 5.0  # after the drain, for cut handlers to record their requests before their sockets are closed
MALFORMED_LOG_WINDOW_S = 60.0
# the phases as plain names: per request, an Enum class attribute costs more than the check itself
_IDLE, _HEADER, _BODY, _BUSY = Phase.IDLE, Phase.HEADER, Phase.BODY, Phase.BUSY


class GatewayProtocol(RequestHandler):
    """One client connection: aiohttp's handler, which also knows its phase and since when."""

    __slots__ = ("_gate", "_phase", "_since", "_body", "_start_task", "_app_request", "_app_handler", "refused")

    def __init__(self, gate: ConnectionGate, *, refused: bool, **kwargs: Any) -> None:
        super().__init__(gate.server, loop=gate.loop, **kwargs)
        self._gate = gate
        self._phase = Phase.FRESH
        self._since = gate.loop.time()
        self._body: Any = None  # the payload of the newest request head parsed, while its body arrives
        self._start_task: asyncio.Task[None] | None = None
        self._app_request = self._request_factory
        self._app_handler = self._request_handler  # the app's: its router walks to the route
        self.refused = refused
        self._request_handler = self._refuse if refused else self._dispatch

    # ------------------------------------------------------------------ aiohttp's events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_task = self._task_handler
        if self._start_task is not None:
            self._start_task.add_done_callback(lambda _: self._gate.finished(self))

    def connection_lost(self, exc: BaseException | None) -> None:
        self._gate.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._waiter is not None and self._phase is not _HEADER:
            # aiohttp waits for a request head (fresh, or kept alive after an answer): one starts now
            self._phase, self._since = _HEADER, self._loop.time()
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:  # a request head ended
            payload = self._messages[-1][1]
            if payload.is_eof():
                self._phase = _BUSY
            else:
                self._phase, self._since, self._body = _BODY, self._loop.time(), payload
        elif self._phase is _BODY and self._body.is_eof():
            self._phase, self._body = _BUSY, None

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """A ``PlainReply`` in one write to the socket (api/plain_reply.py); any other answer, and one the
        transport is not ready for, the way aiohttp writes it."""
        reply: object = resp  # aiohttp's router was told handlers answer a StreamResponse (api/edge.py)
        if type(reply) is PlainReply and not self._upgraded and not self._paused and self.transport is not None:
            wire = reply.wire(request._message)
            if wire is not None:
                request._finish()
                self.transport.write(wire)
                return resp, False
        return await super().finish_response(request, resp, start_time)

    def _went_idle(self) -> None:
        """BUSY that aiohttp says is over: its start() awaits the next request head.

        Read when the sweep or the gate asks, not set per response (that would cost every
        request): aiohttp's keep-alive bookkeeping says when the last answer ended.
        """
        if self._phase is _BUSY and self._waiter is not None and not self._messages:
            self._phase = _IDLE
            self._since = min(self._loop.time(), self._next_keepalive_close_time - self._keepalive_timeout)

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """A request head the parser refused (status 400): JSON naming the kind of fault, no bytes of it."""
        if status != 400:
            return super().handle_error(request, status, exc, message)
        kind = malformed_kind([c.__name__ for c in type(exc).__mro__]) if exc is not None else "other"
        self._gate.malformed(kind, request.remote)
        err = MalformedHTTP(f"malformed HTTP request: {MALFORMED_WHY[kind]}")
        resp = web.Response(status=400, body=orjson.dumps(openai_error_body(err)), content_type="application/json")
        resp.force_close()
        resp.headers["Connection"] = "close"  # aiohttp answers a head it could not parse as HTTP/1.0: say it anyway
        return resp

    # ------------------------------------------------------------------ the gate's questions and orders
    @property
    def phase(self) -> Phase:
        self._went_idle()
        return self._phase

    @property
    def since(self) -> float:
        self._went_idle()
        return self._since

    @property
    def waiting(self) -> bool:
        """Nothing of a request received and none being answered: closing it now loses nothing."""
        self._went_idle()
        return self._phase in WAITING and not self._messages and not self._request_in_progress

    @property
    def start_task(self) -> asyncio.Task[None] | None:
        return self._start_task

    def enforce(self, deadlines: Deadlines, now: float) -> str | None:
        """Close the connection if its phase's deadline passed; returns the phase label it was closed in."""
        self._went_idle()
        if self._phase is Phase.BODY and self._body.is_eof():
            self._phase, self._body = Phase.BUSY, None
        label = deadlines.expired(self._phase, self._since, now)
        if label is None:
            return None
        if self._phase is not Phase.BODY:
            if self._request_in_progress:
                return None
            self.force_close()
            return label
        current = self._current_request
        if current is not None and current.content is self._body:
            # the handler is reading this body: it answers 408 in the client's envelope, then the socket closes
            self._body.set_exception(
                RequestTimeout(f"the request body did not arrive within {deadlines.body_s:g} s (server.body_timeout_s)")
            )
            self._lingering_time = 0.0
            self.close()
            self._phase, self._body = Phase.BUSY, None
        else:
            self.force_close()
        return label

    def drain(self) -> None:
        """SIGTERM: every request that arrives from now on is answered with Connection: close."""
        app_request = self._app_request
        if app_request is None:  # aiohttp clears it once the connection is lost: nothing left to answer
            return

        def closing_request(message: Any, *args: Any) -> web.BaseRequest:
            return app_request(message._replace(should_close=True), *args)

        self._request_factory = closing_request

    def cut(self) -> None:
        """The drain is over: the request still in flight ends now, recorded as cut by the shutdown."""
        if self._current_request is not None:
            mark_cut_by_shutdown(self._current_request)
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()

    def _dispatch(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        """A route whose path has no variable part, by one lookup; any other request, and one that expects
        100-continue, through the app's router. Returns the handler's coroutine: no frame of its own."""
        hit = self._gate.static_routes.get((request.method, request.rel_url.path_safe))
        if hit is None or EXPECT in request.headers:
            assert self._app_handler is not None
            return self._app_handler(request)
        match_info, handler = hit
        # what the app's router would have set: the same route, app and handler (the app's request factory
        # makes every request a web.Request)
        request._match_info = match_info  # type: ignore[attr-defined]
        return handler(request)  # type: ignore[arg-type]

    async def _refuse(self, request: web.BaseRequest) -> web.StreamResponse:
        err = ServerBusy(
            f"all {self._gate.max_connections} connections (server.max_connections) have a request in flight; "
            "retry shortly"
        )
        resp = error_response(
            err, anthropic=request.path.startswith("/v1/messages"), request_id=self._gate.request_ids.new()
        )
        resp.force_close()
        return resp


def static_dispatch(app: web.Application) -> dict[tuple[str, str], tuple[UrlMappingMatchInfo, AiohttpHandler]]:
    """(method, path) -> the match info aiohttp's router would build for it (frozen, shared: a route
    without a variable part matches nothing per request) and the route's handler."""
    out = {}
    for key, route in app.get(STATIC_ROUTES, {}).items():
        match_info = UrlMappingMatchInfo({}, route)
        match_info.add_app(app)
        match_info.freeze()
        out[key] = (match_info, route.handler)
    return out


class _Dropped(asyncio.Protocol):
    """Beyond every bound: closed unread."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class ConnectionGate:
    """The protocol factory for ``loop.create_server``: admits, sheds, sweeps and drains client connections.

    At server.max_connections open connections a new one is let in by closing
    the open connection that has waited longest for a request head (a socket
    left silent, a slowloris head, a long-idle keep-alive): nothing in flight is
    lost, so a thousand idle sockets cannot keep /health or anyone's request
    out. Only when every connection has a request in flight is the new one
    refused, and with an answer rather than a reset: its request head is read
    (under the header deadline) and answered 503 with Retry-After and
    Connection: close in the client's envelope, never handed to the app. An
    immediate reply on accept would race the client's request: a socket
    closed with unread bytes is reset, and the reset can destroy the reply
    before the client reads it. Past another server.max_connections refusals
    pending, a connection is closed unread (nothing else bounds the
    descriptors then).
    """

    def __init__(
        self, server: web.Server, cfg: ServerConfig, metrics: Metrics, app: web.Application | None = None
    ) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.metrics = metrics
        self.max_connections = cfg.max_connections
        self.deadlines = Deadlines(cfg.header_timeout_s, cfg.body_timeout_s, cfg.keepalive_timeout_s)
        self.request_ids = IdSource()
        self._open: set[GatewayProtocol] = set()  # admitted, socket open: what max_connections counts
        self._refusing: set[GatewayProtocol] = set()  # beyond the limit, answered 503 once their head is read
        self._running: set[GatewayProtocol] = set()  # aiohttp's task still running: what the drain waits for
        self._draining = False
        self._malformed_log = OncePer(MALFORMED_LOG_WINDOW_S)
        self.static_routes = static_dispatch(app) if app is not None else {}
        self._kwargs: dict[str, Any] = {
            # what aiohttp's Server would pass its handlers: the runner's kwargs and the app's handler_args
            # (app.py's auto_decompress=False: api/common.read_body decodes gzip/deflate with a bound)
            **getattr(server, "_kwargs", {}),
            "access_log": None,
            # aiohttp's own idle timer never fires before the sweep would; it only backs it up
            "keepalive_timeout": cfg.keepalive_timeout_s + cfg.header_timeout_s,
            "lingering_time": min(10.0, cfg.body_timeout_s),  # reading a body its handler did not want
        }

    def __call__(self) -> asyncio.Protocol:
        refused = False
        if len(self._open) >= self.max_connections:
            victim = eviction_victim((p, p.phase, p.since) for p in self._open if p.waiting or p.phase is Phase.HEADER)
            if victim is not None:
                self._open.discard(victim)
                victim.force_close()
                self._shed("evicted")
            elif len(self._refusing) >= self.max_connections:
                self._shed("dropped")
                return _Dropped()
            else:
                refused = True
                self._shed("refused")
        proto = GatewayProtocol(self, refused=refused, **self._kwargs)
        (self._refusing if refused else self._open).add(proto)
        self._running.add(proto)
        if self._draining:
            proto.drain()
        return proto

    # ------------------------------------------------------------------ bookkeeping
    def closed(self, proto: GatewayProtocol) -> None:
        self._open.discard(proto)
        self._refusing.discard(proto)

    def finished(self, proto: GatewayProtocol) -> None:
        self.closed(proto)
        self._running.discard(proto)

    def _shed(self, action: str) -> None:
        self.metrics.child(self.metrics.connections_shed, action).inc()

    def malformed(self, kind: str, remote: str | None) -> None:
        self.metrics.child(self.metrics.malformed_requests, kind).inc()
        held_back = self._malformed_log.allow(remote or "?", self.loop.time())
        if held_back is not None:
            more = f" ({held_back} more from this address in the last minute, not logged)" if held_back else ""
            log.warning("malformed HTTP request from %s: %s; answered 400%s", remote, kind, more)

    @property
    def open_connections(self) -> int:
        return len(self._open) + len(self._refusing)

    # ------------------------------------------------------------------ the sweep
    def sweep(self, now: float) -> None:
        """Close every connection past its phase's deadline."""
        for proto in [*self._open, *self._refusing]:
            label = proto.enforce(self.deadlines, now)
            if label is not None:
                if proto.phase is not Phase.BUSY:  # closed now; a 408 being written closes after it
                    self.closed(proto)
                if proto.start_task is None:  # never connected: no task will report it finished
                    self._running.discard(proto)
                self.metrics.child(self.metrics.client_timeouts, label).inc()
        self.metrics.client_connections.set(self.open_connections)

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            self.sweep(self.loop.time())

    # ------------------------------------------------------------------ SIGTERM
    async def drain(self, timeout_s: float, hurry: asyncio.Event) -> int:
        """Answer what is in flight for up to ``timeout_s``; then cut what remains. Returns how many were cut.

        The listener is closed already. Requests arriving on open connections
        are still answered, with Connection: close; a connection idle at the
        signal stays open DRAIN_IDLE_GRACE_S for a request already on its way,
        then closes. A second Ctrl-C (``hurry``) ends the drain at once.
        """
        loop = self.loop
        start = loop.time()
        end = start + timeout_s
        self._draining = True
        for proto in self._running:
            proto.drain()
        while self._running and not hurry.is_set():
            now = loop.time()
            if now >= end:
                break
            for proto in list(self._running):
                if proto.waiting and now - max(proto.since, start) >= DRAIN_IDLE_GRACE_S:
                    proto.force_close()
            await _first(hurry.wait(), asyncio.sleep(min(0.25, end - now)))
        left = list(self._running)
        for proto in left:
            proto.cut()
        tasks = [t for p in left if (t := p.start_task) is not None and not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=CUT_WAIT_S)
        for proto in left:
            proto.force_close()
        busy = sum(1 for p in left if not p.waiting)
        if busy:
            log.warning(
                "drain: %d request(s) still in flight after %g s were cut (server.drain_timeout_s)", busy, timeout_s
            )
        return busy


async def _first(*aws: Awaitable[Any]) -> None:
    """Wait until the first of ``aws`` is done; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
