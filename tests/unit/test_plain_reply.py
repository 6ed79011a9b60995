"""api/plain_reply.PlainReply: the bytes it writes are one well-formed HTTP/1.1 answer, read back by an
independent parser (the standard library's), and what it cannot write safely goes aiohttp's way."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from http.client import HTTPResponse

import pytest
from aiohttp import ClientSession, web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_parser import RawRequestMessagePy
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from tiergate.api.plain_reply import MAX_DIRECT_BODY, PlainReply

BODY = json.dumps({"id": "chatcmpl-1", "choices": [{"message": {"content": "hi"}}]}).encode()
HEADERS = {"X-Request-ID": "req-1", "X-Tiergate-Deployment": "local", "Content-Type": "application/json"}


def message(method: str = "POST", version=HttpVersion11, should_close: bool = False) -> RawRequestMessagePy:
    empty = CIMultiDictProxy(CIMultiDict())
    path = "/v1/chat/completions"
    return RawRequestMessagePy(method, path, version, empty, (), should_close, None, False, False, URL(path))


class _Sock:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self._data)


def parsed(wire: bytes) -> tuple[HTTPResponse, bytes]:
    resp = HTTPResponse(_Sock(wire))  # type: ignore[arg-type]
    resp.begin()
    return resp, resp.read()


def test_the_wire_is_one_http_11_answer_with_every_header_and_the_exact_length():
    reply = PlainReply(BODY, dict(HEADERS))
    wire = reply.wire(message())
    assert wire is not None
    resp, body = parsed(wire + b"HTTP/1.1 200 OK\r\n")  # what follows belongs to the next answer
    assert (resp.status, resp.version, body) == (200, 11, BODY)
    for name, value in HEADERS.items():
        assert resp.getheader(name) == value
    names = [k.lower() for k, _ in resp.getheaders()]
    assert names.count("content-length") == 1 and resp.getheader("Content-Length") == str(len(BODY))
    assert resp.getheader("Date") and resp.getheader("Server")
    assert "connection" not in names and reply.keep_alive is True


def test_a_request_that_closes_its_connection_is_told_so():
    """aiohttp's drain marks requests should_close (client_protocol.GatewayProtocol.drain): they must hear it."""
    reply = PlainReply(BODY, dict(HEADERS))
    wire = reply.wire(message(should_close=True))
    assert wire is not None
    resp, body = parsed(wire)
    assert resp.getheader("Connection") == "close" and body == BODY
    assert reply.keep_alive is False


@pytest.mark.parametrize(
    ("why", "msg", "body", "headers"),
    [
        ("HTTP/1.0 keeps its own keep-alive rules", message(version=HttpVersion10), BODY, HEADERS),
        ("HEAD has no body", message(method="HEAD"), BODY, HEADERS),
        ("a large body waits for the socket", message(), b"x" * (MAX_DIRECT_BODY + 1), HEADERS),
        ("LF in a value would split the head", message(), BODY, {**HEADERS, "X-Tiergate-Reason": "a\nSet-Cookie: x"}),
        ("CR in a value", message(), BODY, {**HEADERS, "X-Tiergate-Reason": "a\rb"}),
        ("CRLF in a name", message(), BODY, {"X-A\r\nX-B": "1"}),
        ("not ASCII", message(), BODY, {**HEADERS, "X-Tiergate-Reason": "caf\u00e9"}),
    ],
)
def test_what_cannot_be_written_whole_and_safely_takes_aiohttps_path(why, msg, body, headers):
    assert PlainReply(body, dict(headers)).wire(msg) is None, why


def test_the_largest_direct_body_is_still_written_whole():
    body = b"x" * MAX_DIRECT_BODY
    wire = PlainReply(body, dict(HEADERS)).wire(message())
    assert wire is not None and parsed(wire)[1] == body


def test_served_by_plain_aiohttp_it_is_an_ordinary_response(caplog):
    """Without tiergate's protocol (aiohttp's own RequestHandler) the reply is prepared and written as a
    web.Response: same status, headers and body, the connection kept alive for the next request, and
    aiohttp's access log (its default format) reads it as it reads any response."""
    caplog.set_level(logging.INFO, logger="aiohttp.access")

    async def handler(request: web.Request) -> PlainReply:
        return PlainReply(BODY, dict(HEADERS))

    async def run() -> list[tuple[int, str, bytes]]:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)  # type: ignore[arg-type]
        server = TestServer(app)
        await server.start_server()
        out = []
        try:
            async with ClientSession() as s:
                for _ in range(2):
                    async with s.post(server.make_url("/v1/chat/completions"), data=b"{}") as r:
                        out.append((r.status, r.headers["X-Tiergate-Deployment"], await r.read()))
        finally:
            await server.close()
        return out

    assert asyncio.run(run()) == [(200, "local", BODY)] * 2
    logged = [r for r in caplog.records if r.name == "aiohttp.access"]
    assert len(logged) == 2 and all(r.levelno == logging.INFO for r in logged), [r.getMessage() for r in logged]
    for r in logged:  # status, then the bytes written (head and body)
        assert int(r.getMessage().split('" 200 ', 1)[1].split()[0]) > len(BODY), r.getMessage()
