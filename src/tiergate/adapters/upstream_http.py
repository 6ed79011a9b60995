"""The HTTP/1.1 client every upstream call goes through: pooled keep-alive connections, nothing else.

Why not aiohttp's ``ClientSession``: per request it builds a request object,
a timer context, a tracing and cookie pass and a response object around its
parser, ~150 µs of CPU per call on this machine against ~35 µs for this
client, which is most of tiergate's own cost per request
(docs/decisions/0004-upstream-client.md). Upstream calls need little of
HTTP: POST a body to a base URL from the config, read the status, a few
headers and the body, or stream the body. Parsing is httptools (llhttp, the
parser uvicorn uses); asyncio does sockets and TLS. Everything a call can
fail with becomes an ``AttemptError`` saying what happened.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

from tiergate.adapters.upstream_response import UpstreamResponse
from tiergate.core.errors import AttemptError
from tiergate.core.request_scope import REQUEST_ID

USER_AGENT = "tiergate"


class Origin(NamedTuple):
    key: tuple[str, str, int]  # scheme, host, port: connections are pooled by it
    host: str
    port: int
    tls: bool
    head: bytes  # "POST /path?query HTTP/1.1\r\nHost: ...\r\n"


def parse_origin(url: str) -> Origin:
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise AttemptError("protocol", f"not an http(s) URL: {url!r}")
    tls = u.scheme == "https"
    port = u.port or (443 if tls else 80)
    host = u.hostname
    shown = f"[{host}]" if ":" in host else host
    if u.port is not None:
        shown = f"{shown}:{port}"
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    head = f"POST {target} HTTP/1.1\r\nHost: {shown}\r\n".encode("ascii", "strict")
    return Origin((u.scheme, host, port), host, port, tls, head)


def header_block(headers: Mapping[str, str], length: int, request_id: str | None = None) -> bytes:
    """The request's header lines; ``request_id`` (printable ASCII, checked at the edge) as X-Request-ID."""
    return _fixed_lines(headers) + _varying_lines(length, request_id)


def _fixed_lines(headers: Mapping[str, str]) -> bytes:
    """The given headers as lines, checked: none may carry a line break (a header injected) or fail to
    encode. Raises AttemptError saying which."""
    lines = []
    for k, v in headers.items():
        if "\n" in v or "\r" in v or "\n" in k or "\r" in k or ":" in k:
            raise AttemptError("protocol", f"header {k!r} has a line break or a colon in its name")
        lines.append(f"{k}: {v}\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise AttemptError("protocol", "a request header is not latin-1 text") from None


def _varying_lines(length: int, request_id: str | None) -> bytes:
    if request_id is None:
        return f"Content-Length: {length}\r\n\r\n".encode()
    return f"X-Request-ID: {request_id}\r\nContent-Length: {length}\r\n\r\n".encode()


class _Connection(asyncio.Protocol):
    def __init__(self, pool: UpstreamHTTP, key: tuple[str, str, int]) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.idle_since = 0.0
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        r = self.response
        if r is None:  # bytes nobody asked for on an idle connection: it cannot be trusted again
            self.abort()
            return
        r.feed(data)

    def eof_received(self) -> bool:
        return False  # half-closed by the upstream: close our side too (connection_lost follows)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        r = self.response
        if r is not None:
            r.lost(exc)

    def send(self, response: UpstreamResponse, data: bytes) -> None:
        self.response = response
        assert self.transport is not None
        self.transport.write(data)

    def idle(self) -> None:
        self.response = None
        self.resume()
        self._pool.put_back(self)

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        self.response = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        self._pool.forget(self)


class UpstreamHTTP:
    """Keep-alive connections per origin, shared by every adapter of one app (and closed with it)."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        idle_timeout_s: float = 15.0,
        max_idle_per_origin: int = 64,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._max_idle = max_idle_per_origin
        self._ssl = ssl_context
        self._origins: dict[str, Origin] = {}
        self._blocks: dict[tuple[tuple[str, str], ...], bytes] = {}  # a headers mapping's items -> its lines
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._closing = False

    def origin(self, url: str) -> Origin:
        o = self._origins.get(url)
        if o is None:
            if len(self._origins) > 1024:  # URLs come from the config (plus a client's query string): bounded anyway
                self._origins.clear()
            o = self._origins[url] = parse_origin(url)
        return o

    async def post(self, url: str, data: bytes, headers: Mapping[str, str], *, timeout_s: float) -> UpstreamResponse:
        """Send the request; return once the status line and headers are in.

        Connecting, the answer's head and its body must all be in within ``timeout_s`` (a stream can
        switch to an idle timeout once its first event is in), or the response fails with a timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        o = self.origin(url)
        # the request's id (the client's X-Request-ID or tiergate's) goes upstream with every attempt
        request = o.head + self._lines(headers) + _varying_lines(len(data), REQUEST_ID.get()) + data
        conn = self._reuse(o.key) or await self._connect(o, min(timeout_s, self.connect_timeout_s))
        resp = UpstreamResponse(conn, loop, deadline, timeout_s)
        conn.send(resp, request)
        try:
            await resp.headers_in
        except BaseException:
            resp.close()
            raise
        return resp

    def _lines(self, headers: Mapping[str, str]) -> bytes:
        """``_fixed_lines``, kept by the headers' items: a deployment sends the same ones each time."""
        key = tuple(headers.items())
        block = self._blocks.get(key)
        if block is None:
            if len(self._blocks) >= 1024:  # headers a caller builds per request: bounded anyway
                self._blocks.clear()
            block = self._blocks[key] = _fixed_lines(headers)  # raises, and keeps nothing, when refused
        return block

    def _reuse(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            c = idle.pop()
            if (
                not c.closed
                and c.transport is not None
                and not c.transport.is_closing()
                and now - c.idle_since < self._idle_timeout_s
            ):
                return c
            c.abort()
        return None

    async def _connect(self, o: Origin, connect_timeout_s: float) -> _Connection:
        if self._closing:
            raise AttemptError("connect", "the gateway is shutting down")
        loop = asyncio.get_running_loop()
        sslctx = None
        if o.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()  # honours SSL_CERT_FILE / SSL_CERT_DIR
            sslctx = self._ssl
        try:
            async with asyncio.timeout(connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, o.key),
                    o.host,
                    o.port,
                    ssl=sslctx,
                    server_hostname=o.host if o.tls else None,
                )
        except TimeoutError:
            raise AttemptError(
                "timeout", f"connecting to {o.host}:{o.port} took over {connect_timeout_s:g} s"
            ) from None
        except ConnectionRefusedError:
            raise AttemptError("refused", "connection refused") from None
        except ssl.SSLError as exc:
            raise AttemptError("connect", f"TLS handshake with {o.host} failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise AttemptError("connect", f"cannot connect to {o.host}:{o.port}: {exc.strerror or exc}") from None
        self._open.add(conn)
        return conn

    def put_back(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if self._closing or conn.closed or len(idle) >= self._max_idle:
            conn.abort()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def close(self) -> None:
        self._closing = True
        for conn in list(self._open):
            conn.abort()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost
