"""The in-memory fake fails as the real client does: each case runs on a real socket and in memory.

Tests written against MemoryTransport are only worth what this parity is:
the same AttemptError (kind, message, status, retry-after) or the same
events, from the same scripted upstream behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tiergate.adapters.base import open_event_stream, post_for_body
from tiergate.adapters.memory_transport import (
    HANG,
    MemoryTransport,
    Reply,
    dropped,
    refused,
)
from tiergate.adapters.transport import UpstreamTransport
from tiergate.adapters.upstream_http import UpstreamHTTP
from tiergate.core.errors import AttemptError

HEADERS = {"Content-Type": "application/json"}
Wire = Callable[[asyncio.StreamWriter], Awaitable[None]]  # what the socket upstream writes after the request


def writes(data: bytes, then_wait: float = 0.0) -> Wire:
    async def wire(writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        await asyncio.sleep(then_wait)

    return wire


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
FIRST = b"d\r\ndata: first\n\n\r\n"  # one chunk: "data: first\n\n"
LIMITED = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 7\r\n"
    b"Content-Length: 58\r\n\r\n"
    b'{"error": {"message": "slow down", "type": "rate_limit"}}\n'
)

# name, the socket upstream, the same upstream in memory, streamed?
CASES = [
    ("no answer", writes(b"", then_wait=5), HANG, False),
    (
        "429 with Retry-After",
        writes(LIMITED),
        Reply.json(
            b'{"error": {"message": "slow down", "type": "rate_limit"}}\n', status=429, headers={"Retry-After": "7"}
        ),
        False,
    ),
    (
        "body cut short",
        writes(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial'),
        Reply(200, [b'{"partial', dropped()]),
        False,
    ),
    ("stream goes quiet", writes(SSE_HEAD + FIRST, then_wait=5), Reply.sse(["first", HANG]), True),
    ("stream cut", writes(SSE_HEAD + FIRST), Reply.sse(["first", dropped()]), True),
    ("stream closed before its first event", writes(SSE_HEAD + b"0\r\n\r\n"), Reply.sse([]), True),
]


async def outcome(client: UpstreamTransport, url: str, stream: bool) -> tuple:
    """What an adapter would see: the events or body, then the error's kind, message, status, retry-after."""
    got: list[bytes] = []
    try:
        if stream:
            _, events, first = await open_event_stream(client, url, b"{}", HEADERS, timeout_s=0.2)
            got.append(first)
            async for ev in events:
                got.append(ev)
        else:
            got.append((await post_for_body(client, url, b"{}", HEADERS, timeout_s=0.2))[0])
    except AttemptError as e:
        return (got, e.kind, e.message, e.status, e.retry_after, e.body)
    return (got, None)


@pytest.mark.parametrize(("name", "wire", "answer", "stream"), CASES, ids=[c[0] for c in CASES])
def test_the_fake_fails_as_the_real_client(name, wire, answer, stream):
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n{}")
            await wire(writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
        real = UpstreamHTTP(connect_timeout_s=5)
        try:
            on_the_wire = await outcome(real, url, stream)
        finally:
            await real.close()
            server.close()
        in_memory = await outcome(MemoryTransport(lambda req: answer), url, stream)
        assert in_memory == on_the_wire

    asyncio.run(asyncio.wait_for(main(), 10))


def test_refused_is_the_same():
    async def main():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        url = f"http://127.0.0.1:{port}/v1"
        real = UpstreamHTTP(connect_timeout_s=5)
        on_the_wire = await outcome(real, url, False)
        await real.close()
        assert await outcome(MemoryTransport(lambda req: refused()), url, False) == on_the_wire

    asyncio.run(asyncio.wait_for(main(), 10))
