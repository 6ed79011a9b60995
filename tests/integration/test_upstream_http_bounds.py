"""The upstream client's bounds against real sockets (issue 13), on asyncio and uvloop.

What MemoryTransport cannot show: that closing a response really closes
its socket at once and wakes a reader waiting in another task, that a
stream's total deadline holds even while reading is paused for a slow
client, and that a capped read stops the upstream's sending (it is not
read to its end and dropped), gzip included.
"""

from __future__ import annotations

import asyncio
import gzip
import sys
import time

import pytest
import uvloop

from tiergate.adapters.base import open_event_stream, post_for_body
from tiergate.adapters.upstream_http import UpstreamHTTP
from tiergate.core.catalog import ReadLimits
from tiergate.core.errors import AttemptError

HEADERS = {"Content-Type": "application/json"}
LOOP = "asyncio"
EVENT = b"data: " + b"w" * 200 + b"\n\n"


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "LOOP", request.param)


def run(coro) -> None:
    bounded = asyncio.wait_for(coro, 60)
    if LOOP == "uvloop":
        uvloop.run(bounded)
    else:
        asyncio.run(bounded)


class Upstream:
    """One raw HTTP/1.1 server: ``send(writer)`` answers each request; records what it sent and when it saw EOF."""

    def __init__(self, send) -> None:
        self.send = send
        self.sent = 0
        self.closed_at: float | None = None
        self.closed = asyncio.Event()  # set with closed_at
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/chat/completions"

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent += len(data)

    @staticmethod
    async def _eof(reader: asyncio.StreamReader) -> None:
        """Returns when the client closes its side (or resets it)."""
        try:
            await reader.read()
        except ConnectionError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)  # the test's body: b"{}"
            watcher = asyncio.ensure_future(self._eof(reader))
            sender = asyncio.ensure_future(self.send(self, writer))
            await asyncio.wait({watcher, sender}, return_when=asyncio.FIRST_COMPLETED)
            if not watcher.done():
                await watcher
            sender.cancel()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.closed_at = self.closed_at or time.monotonic()
            self.closed.set()
            writer.close()


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def one_event_then_quiet(up: Upstream, writer: asyncio.StreamWriter) -> None:
    await up.write(writer, STREAM_HEAD + chunk(EVENT))
    await asyncio.get_running_loop().create_future()


async def steady(up: Upstream, writer: asyncio.StreamWriter) -> None:
    await up.write(writer, STREAM_HEAD)
    while True:
        await up.write(writer, chunk(EVENT * 4))
        await asyncio.sleep(0.005)


async def endless_body(up: Upstream, writer: asyncio.StreamWriter) -> None:
    await up.write(writer, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = chunk(b"z" * 65536)
    while True:
        await up.write(writer, piece)


def test_closing_a_stream_wakes_its_reader_and_closes_the_socket_at_once():
    async def main():
        async with Upstream(one_event_then_quiet) as up:
            client = UpstreamHTTP(connect_timeout_s=5)
            resp, events, first = await open_event_stream(client, up.url, b"{}", HEADERS, timeout_s=60)
            assert first == EVENT
            reader = asyncio.ensure_future(events.__anext__())  # a relay waiting for the next event
            await asyncio.sleep(0.2)
            assert not reader.done()
            t0 = time.monotonic()
            resp.close()  # the relay's client hung up
            with pytest.raises(AttemptError) as e:
                await asyncio.wait_for(reader, 5)  # without the wake-up: the 60 s idle timeout
            assert e.value.kind == "dropped"
            await asyncio.wait_for(up.closed.wait(), 5)
            assert up.closed_at is not None and up.closed_at - t0 < 1.0  # the upstream saw its socket close
            assert client.open_connections == 0
            await client.close()

    run(main())


@pytest.mark.parametrize("paused", [False, True], ids=["read", "paused"])
def test_a_steady_stream_ends_at_its_total_deadline(paused):
    async def main():
        async with Upstream(steady) as up:
            client = UpstreamHTTP(connect_timeout_s=5)
            limits = ReadLimits(stream_timeout_s=1.0)
            t0 = time.monotonic()
            resp, events, _ = await open_event_stream(client, up.url, b"{}", HEADERS, timeout_s=30, limits=limits)
            if paused:  # a client that reads nothing: the gateway stops reading, the deadline still holds
                await asyncio.sleep(2.0)
            with pytest.raises(AttemptError) as e:
                async for _ in events:
                    pass
            assert e.value.message == "the stream went on past its 1 s deadline"
            assert time.monotonic() - t0 < 10
            assert client.open_connections == 0
            await client.close()

    run(main())


def test_a_reply_past_the_cap_stops_the_upstream_sending():
    async def main():
        async with Upstream(endless_body) as up:
            client = UpstreamHTTP(connect_timeout_s=5)
            with pytest.raises(AttemptError) as e:
                await post_for_body(client, up.url, b"{}", HEADERS, timeout_s=30, max_bytes=1 << 20)
            assert e.value.kind == "protocol" and "max_response_mb" in e.value.message
            await asyncio.wait_for(up.closed.wait(), 5)
            assert up.sent < 32 << 20  # the cap and the sockets' buffers, not an endless body
            assert client.open_connections == 0
            await client.close()

    run(main())


def test_a_declared_length_past_the_cap_is_refused_unread():
    async def declared(up: Upstream, writer: asyncio.StreamWriter) -> None:
        await up.write(
            writer, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2147483648\r\n\r\n"
        )
        while True:
            await up.write(writer, b"z" * 65536)

    async def main():
        async with Upstream(declared) as up:
            client = UpstreamHTTP(connect_timeout_s=5)
            with pytest.raises(AttemptError) as e:
                await post_for_body(client, up.url, b"{}", HEADERS, timeout_s=30, max_bytes=1 << 20)
            assert "max_response_mb" in e.value.message
            assert client.open_connections == 0
            await client.close()

    run(main())


@pytest.mark.parametrize("stream", [False, True], ids=["reply", "stream"])
def test_gzip_that_inflates_past_the_cap_is_refused(stream):
    bomb = gzip.compress(b"\0" * (200 << 20))  # 200 MB of zeros in about 200 KB

    async def send(up: Upstream, writer: asyncio.StreamWriter) -> None:
        ctype = b"text/event-stream" if stream else b"application/json"
        head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
        await up.write(writer, head % (ctype, len(bomb)) + bomb)
        await asyncio.get_running_loop().create_future()

    async def main():
        async with Upstream(send) as up:
            client = UpstreamHTTP(connect_timeout_s=5)
            with pytest.raises(AttemptError) as e:
                if stream:
                    await open_event_stream(client, up.url, b"{}", HEADERS, timeout_s=30)
                else:
                    await post_for_body(client, up.url, b"{}", HEADERS, timeout_s=30, max_bytes=1 << 20)
            assert e.value.kind == "protocol"  # past the cap, or inflating past 16 MB in one piece: never 200 MB
            assert "max_response_mb" in e.value.message or "inflates to over" in e.value.message
            await client.close()

    run(main())
