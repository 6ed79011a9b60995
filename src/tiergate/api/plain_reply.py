"""A whole JSON answer, written to the client's socket in one piece.

aiohttp turns a ``web.Response`` into bytes through about 170 lines of
Python per request (a CIMultiDict of the headers, six awaited steps of
prepare and write_eof, a StreamWriter's buffering and its C header
serialiser): a tenth of what a chat request costs the gateway
(docs/decisions/0003). A routed answer needs none of that: its headers are
ours, already made safe for a header (api/render.py), its body is complete,
and its connection is HTTP/1.1. ``tiergate.client_protocol.GatewayProtocol``
writes ``wire()`` straight to the transport; whatever it will not take that
way (HTTP/1.0, HEAD, a large body, a transport that asked us to wait)
becomes the ``web.Response`` it stands for, on aiohttp's own path.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11, RawRequestMessage

MAX_DIRECT_BODY = 256 * 1024  # larger bodies go through aiohttp's writer, which waits for the socket to drain
_SERVER = f"\r\nServer: {SERVER_SOFTWARE}"


class PlainReply:
    """Status 200, ``headers`` (each value printable ASCII) and ``body``: what the handler answered."""

    __slots__ = ("body", "headers", "_keep_alive", "_response")

    status = 200

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.body = body
        self.headers = headers
        self._keep_alive = True
        self._response: web.Response | None = None  # once it took aiohttp's path

    @property
    def keep_alive(self) -> bool:
        """What aiohttp reads after the answer: whether the connection stays open for the next request."""
        r = self._response
        return self._keep_alive if r is None else bool(r.keep_alive)

    def wire(self, message: RawRequestMessage) -> bytes | None:
        """The whole answer to the request ``message`` as bytes, or None when it must take aiohttp's path."""
        body = self.body
        if message.version != HttpVersion11 or message.method == "HEAD" or len(body) > MAX_DIRECT_BODY:
            return None
        headers = self.headers
        lines = "\r\n".join(map(": ".join, headers.items()))  # in C: no comprehension frame per answer
        # a name or value holding CR or LF would split the head: aiohttp's own serialiser refuses those
        n = len(headers) - 1
        if lines.count("\n") != n or lines.count("\r") != n or not lines.isascii():
            return None
        close = "\r\nConnection: close" if message.should_close else ""
        self._keep_alive = not close
        head = f"HTTP/1.1 200 OK\r\n{lines}\r\nContent-Length: {len(body)}\r\nDate: {rfc822_formatted_time()}{_SERVER}"
        return f"{head}{close}\r\n\r\n".encode() + body

    @property
    def body_length(self) -> int:
        """The bytes aiohttp wrote, head included (its access log's ``%b``); 0 when GatewayProtocol wrote the
        reply whole (it keeps no access log)."""
        r = self._response
        return 0 if r is None else r.body_length

    # aiohttp's path: the two calls its RequestHandler.finish_response makes of any response
    async def prepare(self, request: web.BaseRequest) -> object:
        if self._response is None:
            self._response = web.Response(body=self.body, status=200, headers=self.headers)
        return await self._response.prepare(request)

    async def write_eof(self, data: bytes = b"") -> None:
        assert self._response is not None, "prepare first"
        await self._response.write_eof(data)


Reply = web.StreamResponse | PlainReply  # what a gateway handler answers
