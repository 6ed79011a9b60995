"""One upstream HTTP/1.1 response as ``UpstreamHTTP.post`` returns it: httptools feeds it what the connection
reads; it holds status and headers, then hands out the body whole (``read``) or as it comes (``chunks``),
inflating gzip, under a total and an idle deadline, pausing the socket when the reader falls behind, and
giving its connection back to the pool (or closing it) when done. Every way it can fail is an
``AttemptError`` saying what happened.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import zlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httptools

from tiergate.core.errors import AttemptError

if TYPE_CHECKING:  # the connection owns this response while it is read; the pool owns the connection
    from tiergate.adapters.upstream_http import _Connection

PAUSE_AT = 256 * 1024  # bytes buffered from a stream the client has not taken yet: stop reading the socket
MAX_HEAD = 256 * 1024  # bytes of status line and header fields (every vendor's fit in a few KiB)
INFLATE_STEP = 16 * 1024 * 1024  # most bytes one piece of a streamed gzip body may inflate to (a bomb is refused)


class UpstreamResponse:
    """One response: status and headers are in when ``post`` returns; the body is read or streamed."""

    def __init__(self, conn: _Connection, loop: asyncio.AbstractEventLoop, deadline: float, timeout_s: float) -> None:
        self._conn = conn
        self._loop = loop
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}  # lower-case names
        self.headers_in: asyncio.Future[None] = loop.create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._pause_at = PAUSE_AT  # read() takes the whole body at once: it lifts this
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._keep_alive = False
        self._until_eof = False  # no length, not chunked: the body ends when the connection does
        self._error: AttemptError | None = None
        self._inflate: zlib._Decompress | None = None
        self._interim = False  # a 1xx (103 Early Hints, 100 Continue) precedes the real answer
        self._done = False  # released or closed: the connection is no longer this response's
        # One timer per response, not an asyncio.timeout per wait (~3 vs ~8 µs each here): it fails the
        # response at the deadline, or, once idle_timeout() is set, when no data came for that long.
        self._timeout_s = timeout_s
        self._idle_s: float | None = None
        self._expires_at = deadline
        self._started = loop.time()
        self._total_s = 0.0  # a stream's whole-life deadline (set with idle_timeout), from the request
        self._hard_at = float("inf")
        self._inflate_room: int | None = None  # read(limit) of a gzip body: bytes it may still inflate to
        self._head_left = MAX_HEAD  # bytes the head may still take (0 once it is in): else nothing bounds it
        self._timer: asyncio.TimerHandle | None = loop.call_at(deadline, self._on_timer)

    # -- the parser's callbacks (httptools calls them from feed_data)
    def on_status(self, status: bytes) -> None:
        self.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        k = name.decode("latin-1").lower()
        v = value.decode("latin-1").rstrip(" \t")  # llhttp keeps the whitespace before the line's end
        self.headers[k] = f"{self.headers[k]}, {v}" if k in self.headers else v

    def on_headers_complete(self) -> None:
        p = self._parser
        assert p is not None
        self.status = p.get_status_code()
        if 100 <= self.status < 200:
            self._interim = True
            self.headers, self.reason = {}, ""
            return
        self._head_left = 0  # the head is in
        self._keep_alive = p.should_keep_alive()
        h = self.headers
        self._until_eof = "content-length" not in h and "chunked" not in h.get("transfer-encoding", "").lower()
        enc = h.get("content-encoding", "identity").strip().lower()
        if enc in ("gzip", "deflate"):  # not asked for (no Accept-Encoding), but some proxies compress anyway
            self._inflate = zlib.decompressobj(47)  # gzip or zlib, detected from the header
        elif enc not in ("", "identity"):
            self._fail(AttemptError("protocol", f"upstream sent content-encoding {enc!r}, which was not asked for"))
            return
        if not self.headers_in.done():
            self.headers_in.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._error is not None:  # failed while the parser was still going through a packet
            return
        if self._idle_s is not None:
            self._expires_at = self._loop.time() + self._idle_s
        if self._inflate is not None:
            body = self._inflated(body)
        if body:
            self._chunks.append(body)
            self._buffered += len(body)
            if self._buffered > self._pause_at:
                self._conn.pause()
            self._wake()

    def _inflated(self, body: bytes) -> bytes:
        """Decompress one piece, never past what the reader wants: a small gzip body can inflate 1000-fold."""
        assert self._inflate is not None
        room = self._inflate_room
        if room is not None:  # read(limit): inflate to just past the limit, then drop the rest
            if room <= 0:
                return b""
            out = self._inflate.decompress(body, room)
            self._inflate_room = room - len(out)
            return out
        out = self._inflate.decompress(body, INFLATE_STEP)
        if self._inflate.unconsumed_tail:
            self._fail(AttemptError("protocol", f"upstream sent gzip that inflates to over {INFLATE_STEP} bytes"))
            return b""
        return out

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._inflate is not None and self._inflate_room != 0:
            tail = self._inflate.flush()
            if tail:
                self._chunks.append(tail)
        self._complete = True
        self._wake()

    # -- from the connection
    def feed(self, data: bytes) -> None:
        if self._parser is None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(AttemptError("protocol", f"upstream sent malformed HTTP: {exc}"))
            return
        except zlib.error as exc:
            self._fail(AttemptError("protocol", f"upstream sent a body that does not decompress: {exc}"))
            return
        if self._head_left > 0:  # the head is not complete after this packet: all of it was head
            self._head_left -= len(data)
            if self._head_left <= 0:
                self._fail(AttemptError("protocol", f"upstream sent a response head over {MAX_HEAD // 1024} KiB"))

    def lost(self, exc: BaseException | None) -> None:
        if self._complete:
            return
        if self._until_eof and self.headers_in.done():
            self.on_message_complete()  # the connection's end is the body's end
            self._keep_alive = False
            return
        if isinstance(exc, ssl.SSLError):
            self._fail(AttemptError("dropped", f"TLS error: {exc}"))
        else:
            self._fail(AttemptError("dropped", "connection dropped by upstream"))

    def _fail(self, err: AttemptError) -> None:
        if self._error is None:
            self._error = err
        if not self.headers_in.done():
            self.headers_in.set_exception(err)
            self.headers_in.exception()  # retrieved: a caller that was cancelled meanwhile must not log it
        self._wake()
        self._conn.abort()

    def _on_timer(self) -> None:
        self._timer = None
        if self._done or self._complete or self._error is not None:
            return
        now = self._loop.time()
        if now >= self._hard_at:  # even while paused: a client reading slowly does not make a stream endless
            self._fail(AttemptError("timeout", f"the stream went on past its {self._total_s:g} s deadline"))
            return
        if now < self._expires_at or self._conn.paused:  # data came meanwhile, or we stopped reading
            self._timer = self._loop.call_at(min(self._hard_at, max(self._expires_at, now + 0.05)), self._on_timer)
            return
        if self._idle_s is not None:
            self._fail(AttemptError("timeout", f"no data from upstream for {self._idle_s:g} s"))
        else:
            self._fail(AttemptError("timeout", f"no answer within {self._timeout_s:g} s"))

    def idle_timeout(self, seconds: float, *, total_s: float | None = None) -> None:
        """From now on the response may last while data comes at least every ``seconds`` (streams), and
        at most ``total_s`` from the request, however steadily it comes."""
        self._idle_s = seconds
        self._expires_at = self._loop.time() + seconds
        if total_s is not None:
            self._total_s, self._hard_at = total_s, self._started + total_s
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._loop.call_at(min(self._expires_at, self._hard_at), self._on_timer)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- for the caller
    async def _more(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _take(self) -> bytes:
        out = b"".join(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        self._chunks.clear()
        self._buffered = 0
        self._conn.resume()
        return out

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body (or its first ``limit`` bytes; the connection is then not reused)."""
        self._pause_at = limit if limit is not None else 1 << 62
        if limit is not None and self._inflate is not None:
            self._inflate_room = max(1, limit + 1 - self._buffered)
        self._conn.resume()
        try:
            while not self._complete and self._error is None and (limit is None or self._buffered < limit):
                await self._more()
        except BaseException:  # cancelled (the caller's deadline, a client that hung up): the answer is abandoned
            self.close()
            raise
        if self._error is not None and not self._complete:
            raise self._error
        body = self._take()
        if limit is not None and len(body) > limit:
            body = body[:limit]
        self.release()
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (the response's timer bounds each wait)."""
        try:
            while True:
                if self._chunks:
                    yield self._take()
                    continue
                if self._error is not None:
                    raise self._error
                if self._complete:
                    return
                await self._more()
        finally:
            self.release()

    def release(self) -> None:
        """Done with the response: a finished one gives its connection back to the pool, else it is closed."""
        if self._done:
            return
        self._done = True
        self._stop_timer()
        self._parser = None  # the parser calls back into this object: no cycle left for the cyclic GC
        if self._complete and self._keep_alive and self._error is None:
            self._conn.idle()
        else:
            self._conn.abort()

    def close(self) -> None:
        """Walk away from the response and close its socket, at once; a reader waiting for the body in
        another task (a relay whose client hung up) is woken with a "dropped" error."""
        if not self._done:
            self._done = True
            self._stop_timer()
            self._parser = None
            if self._error is None and not self._complete:
                self._error = AttemptError("dropped", "the response was closed before its end")
            self._chunks.clear()
            self._buffered = 0
            self._conn.abort()
            self._wake()
