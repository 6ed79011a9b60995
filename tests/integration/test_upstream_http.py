"""tiergate's upstream HTTP/1.1 client against real sockets that misbehave on purpose.

Each test runs a small asyncio server speaking raw HTTP/1.1, so the client
meets what real upstreams do: keep-alive and idle closes, chunked and
until-EOF bodies, answers cut short, answers that never come, late answers,
gzip nobody asked for, TLS.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from tiergate.adapters.base import open_event_stream, post_for_body
from tiergate.adapters.upstream_http import UpstreamHTTP
from tiergate.core.errors import AttemptError

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]  # True: keep the connection


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


class RawServer:
    """Answers every request with ``reply``; counts connections and requests."""

    def __init__(self, reply: Reply, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.reply = reply
        self.ssl_ctx = ssl_ctx
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_ctx)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.ssl_ctx else 'http'}://127.0.0.1:{port}/v1/chat/completions"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                req = await read_request(reader)
                if req is None:
                    break
                self.requests.append(req)
                if not await self.reply(reader, writer, req):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # cancelled: the test is over and asyncio.run is tearing down
        finally:
            writer.close()


def answer(body: bytes, *, status: str = "200 OK", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
    writer.write(answer(b'{"n": %d}' % req.count(b"x")))
    await writer.drain()
    return True


def sends(data: bytes, *, keep: bool) -> Reply:
    """A reply that writes ``data`` to every request; ``keep``: leave the connection open for the next."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        writer.write(data)
        await writer.drain()
        return keep

    return reply


LOOP = "asyncio"


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request, monkeypatch):
    """Every test on both loops: ``tiergate serve`` runs on uvloop where it is installed."""
    monkeypatch.setattr(sys.modules[__name__], "LOOP", request.param)


def run(coro: Awaitable[None]) -> None:
    bounded = asyncio.wait_for(coro, 30)  # type: ignore[arg-type]
    if LOOP == "uvloop":
        uvloop.run(bounded)
    else:
        asyncio.run(bounded)


HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-test"}


async def fetch(client: UpstreamHTTP, url: str) -> bytes:
    """The body of a plain POST through ``post_for_body``, as the adapters make it."""
    return (await post_for_body(client, url, b"{}", HEADERS, timeout_s=5))[0]


def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given():
    async def main():
        async with RawServer(ok) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)
            for _ in range(3):
                body, ctype = await post_for_body(client, srv.url + "?beta=true", b'{"xx": 1}', HEADERS, timeout_s=5)
                assert body == b'{"n": 2}' and ctype == "application/json"
            assert srv.connections == 1 and len(srv.requests) == 3
            first = srv.requests[0]
            assert first.startswith(b"POST /v1/chat/completions?beta=true HTTP/1.1\r\n")
            assert b"\r\nHost: 127.0.0.1:" in first and b"\r\nAuthorization: Bearer sk-test\r\n" in first
            assert b"\r\nContent-Length: 9\r\n\r\n" in first and first.endswith(b'{"xx": 1}')
            assert b"cookie" not in first.lower()
            await client.close()
            assert client.open_connections == 0

    run(main())


def test_an_idle_connection_the_upstream_closed_is_not_used_again():
    close_after = sends(answer(b"{}"), keep=False)  # like a server whose keep-alive timeout is shorter than ours

    async def main():
        async with RawServer(close_after) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)
            for _ in range(3):
                await fetch(client, srv.url)
                await asyncio.sleep(0.05)
            assert srv.connections == 3
            await client.close()

    run(main())


def test_connection_close_and_idle_timeout_open_new_connections():
    # the server would keep the connection: the client must not
    says_close = sends(answer(b"{}", extra="Connection: close\r\n"), keep=True)

    async def main():
        async with RawServer(says_close) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)
            await fetch(client, srv.url)
            await fetch(client, srv.url)
            assert srv.connections == 2
        async with RawServer(ok) as srv:
            client = UpstreamHTTP(connect_timeout_s=5, idle_timeout_s=0.05)
            await fetch(client, srv.url)
            await asyncio.sleep(0.1)
            await fetch(client, srv.url)
            assert srv.connections == 2
            await client.close()

    run(main())


def test_chunked_and_until_eof_bodies_are_read_whole():
    async def chunked(reader, writer, req):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n")
        for part in (b'{"a"', b': "', b'b"}'):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        return True

    until_eof = sends(
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"eof": true}', keep=False
    )

    async def main():
        client = UpstreamHTTP(connect_timeout_s=5)
        async with RawServer(chunked) as srv:
            assert await fetch(client, srv.url) == b'{"a": "b"}'
            assert await fetch(client, srv.url) == b'{"a": "b"}'
            assert srv.connections == 1
        async with RawServer(until_eof) as srv:
            assert await fetch(client, srv.url) == b'{"eof": true}'
        await client.close()

    run(main())


def test_an_answer_cut_short_is_a_dropped_attempt():
    cut = sends(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial', keep=False)

    async def main():
        async with RawServer(cut) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)
            with pytest.raises(AttemptError) as e:
                await fetch(client, srv.url)
            assert e.value.kind == "dropped" and e.value.retryable
            await client.close()

    run(main())


def test_a_timed_out_request_never_lends_its_late_answer_to_the_next_one():
    slow_first = asyncio.Event()

    async def late(reader, writer, req):
        if not slow_first.is_set():
            slow_first.set()
            await asyncio.sleep(0.3)
            writer.write(answer(b'{"late": true}'))
        else:
            writer.write(answer(b'{"late": false}'))
        await writer.drain()
        return True

    async def main():
        async with RawServer(late) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)
            t0 = time.perf_counter()
            with pytest.raises(AttemptError) as e:
                await post_for_body(client, srv.url, b"{}", HEADERS, timeout_s=0.1)
            assert e.value.kind == "timeout" and time.perf_counter() - t0 < 0.3
            # at once, while the late answer is still coming: on the old connection it would be taken for this one's
            body = await fetch(client, srv.url)
            assert body == b'{"late": false}' and srv.connections == 2
            await client.close()

    run(main())


def test_a_cancelled_request_closes_its_connection_before_or_during_the_body():
    async def never(reader, writer, req):
        await asyncio.sleep(10)
        return False

    async def half(reader, writer, req):
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
        await writer.drain()
        await asyncio.sleep(10)
        return False

    async def main():
        for reply in (never, half):
            async with RawServer(reply) as srv:
                client = UpstreamHTTP(connect_timeout_s=5)
                task = asyncio.create_task(post_for_body(client, srv.url, b"{}", HEADERS, timeout_s=5))
                await asyncio.sleep(0.1)
                assert client.open_connections == 1
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await asyncio.sleep(0)
                assert client.open_connections == 0, reply.__name__
                await client.close()

    run(main())


def test_refused_unreachable_malformed_and_bad_headers_are_attempt_errors_of_their_kind():
    garbage = sends(b"SMTP ready\r\n\r\n", keep=False)

    async def main():
        client = UpstreamHTTP(connect_timeout_s=5)
        async with RawServer(ok) as srv:
            port = srv.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await asyncio.sleep(0.05)
        with pytest.raises(AttemptError) as e:
            await fetch(client, f"http://127.0.0.1:{port}/v1")
        assert e.value.kind == "refused" and not e.value.retryable
        with pytest.raises(AttemptError) as e:
            await fetch(client, "http://tiergate-no-such-host.invalid/v1")
        assert e.value.kind == "connect"
        async with RawServer(garbage) as srv:
            with pytest.raises(AttemptError) as e:
                await fetch(client, srv.url)
            assert e.value.kind in ("protocol", "dropped")
        async with RawServer(ok) as srv:
            with pytest.raises(AttemptError) as e:
                await post_for_body(client, srv.url, b"{}", {"X-Bad": "a\r\nInjected: 1"}, timeout_s=5)
            assert e.value.kind == "protocol" and "X-Bad" in e.value.message
            assert srv.requests == []
        await client.close()

    run(main())


def test_error_status_carries_body_and_retry_after_and_keeps_the_connection():
    limited = sends(
        answer(
            b'{"error": {"message": "slow down", "type": "rate_limit"}}',
            status="429 Too Many Requests",
            extra="Retry-After: 7\r\n",
        ),
        keep=True,
    )

    async def main():
        async with RawServer(limited) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)
            for _ in range(2):
                with pytest.raises(AttemptError) as e:
                    await fetch(client, srv.url)
                err = e.value
                assert (err.kind, err.status, err.retry_after, err.message) == ("status", 429, 7.0, "slow down")
                assert err.body is not None and b"rate_limit" in err.body
            assert srv.connections == 1
            await client.close()

    run(main())


def test_gzip_nobody_asked_for_is_decompressed_and_early_hints_are_skipped():
    async def gz(reader, writer, req):
        assert b"accept-encoding" not in req.lower()
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(answer(gzip.compress(b'{"zipped": true}'), extra="Content-Encoding: gzip\r\n"))
        await writer.drain()
        return True

    async def main():
        async with RawServer(gz) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)
            for _ in range(2):
                resp = await client.post(srv.url, b"{}", HEADERS, timeout_s=5)
                assert resp.status == 200 and "link" not in resp.headers
                assert await resp.read() == b'{"zipped": true}'
            assert srv.connections == 1
            await client.close()

    run(main())


def test_a_head_sent_a_few_bytes_at_a_time_is_read_field_by_field():
    """The head's fields come from the bytes the connection read (tiergate.adapters.upstream_response):
    a head split across reads, a name sent twice (joined), an interim head first. (A folded line is refused
    by the parser, as RFC 9112 allows.)"""
    head = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 200 Fine Thanks\r\nContent-Type: application/json\r\nX-Twice: one\r\n"
        b"x-twice:two \r\nContent-Length: 2\r\n\r\n{}"
    )

    async def trickle(reader, writer, req):
        for i in range(0, len(head), 7):
            writer.write(head[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0)
        return True

    async def main():
        async with RawServer(trickle) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)
            for _ in range(2):  # the second on the kept-alive connection: nothing of the first head is left over
                resp = await client.post(srv.url, b"{}", HEADERS, timeout_s=5)
                assert (resp.status, resp.reason) == (200, "Fine Thanks")
                assert resp.headers["x-twice"] == "one, two"
                assert "link" not in resp.headers and resp.headers["content-type"] == "application/json"
                assert await resp.read() == b"{}"
            assert srv.connections == 1
            await client.close()

    run(main())


def test_a_head_that_never_ends_is_refused_at_its_bound():
    from tiergate.adapters.upstream_response import MAX_HEAD

    endless = sends(b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"f" * (MAX_HEAD + 4096) + b"\r\n", keep=True)

    async def main():
        async with RawServer(endless) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)
            with pytest.raises(AttemptError) as e:
                await client.post(srv.url, b"{}", HEADERS, timeout_s=30)
            assert e.value.kind == "protocol" and "response head over" in e.value.message
            await client.close()

    run(main())


def test_a_stream_relays_each_event_as_it_arrives_and_large_bodies_survive_flow_control():
    proceed = asyncio.Event()
    big = b"data: " + b"x" * 4000 + b"\n\n"

    async def sse(reader, writer, req):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        first = b"data: first\n\n"
        writer.write(b"%x\r\n%s\r\n" % (len(first), first))
        await writer.drain()
        await proceed.wait()  # the client must have the first event before the rest is even sent
        for _ in range(300):  # 1.2 MB: more than the client buffers before it pauses reading
            writer.write(b"%x\r\n%s\r\n" % (len(big), big))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def main():
        async with RawServer(sse) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)
            resp, events, first = await open_event_stream(client, srv.url, b"{}", HEADERS, timeout_s=5)
            assert first == b"data: first\n\n"
            proceed.set()
            rest = [ev async for ev in events]
            assert len(rest) == 300 and all(ev == big for ev in rest)
            assert srv.connections == 1 and client.open_connections == 1  # a finished stream's connection is kept
            await client.close()

    run(main())


def test_a_body_larger_than_the_stream_buffer_is_read_whole():
    big = b'{"data": "' + b"e" * (3 * 1024 * 1024) + b'"}'  # e.g. embeddings of many inputs

    large = sends(answer(big), keep=True)

    async def main():
        async with RawServer(large) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)
            for _ in range(2):
                body = await fetch(client, srv.url)
                assert body == big
            assert srv.connections == 1
            await client.close()

    run(main())


def test_a_stream_that_goes_quiet_times_out():
    async def quiet(reader, writer, req):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"d\r\ndata: first\n\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)
        return False

    async def main():
        async with RawServer(quiet) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)
            resp, events, first = await open_event_stream(client, srv.url, b"{}", HEADERS, timeout_s=0.2)
            with pytest.raises(AttemptError) as e:
                await events.__anext__()
            assert e.value.kind == "timeout"
            assert client.open_connections == 0
            await client.close()

    run(main())


def test_a_slow_reader_is_not_mistaken_for_a_quiet_upstream():
    big = b"data: " + b"y" * 8000 + b"\n\n"

    async def fast(reader, writer, req):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(200):  # 1.6 MB at once: the client stops reading long before it takes them
            writer.write(b"%x\r\n%s\r\n" % (len(big), big))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def main():
        async with RawServer(fast) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)
            # an idle timeout of 2 s, not 0.2: on a loaded host the reads after the pause can be that late
            resp, events, first = await open_event_stream(client, srv.url, b"{}", HEADERS, timeout_s=2.0)
            await asyncio.sleep(5.0)  # a client slow to read: reading is paused, the upstream is not quiet
            rest = [ev async for ev in events]
            assert [first, *rest] == [big] * 200
            await client.close()

    run(main())


def test_concurrent_requests_each_get_their_own_answer():
    async def echo(reader, writer, req):
        await asyncio.sleep(0.001 * (req.count(b"x") % 5))
        writer.write(answer(b'{"n": %d}' % req.count(b"x")))
        await writer.drain()
        return True

    async def main():
        async with RawServer(echo) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)

            async def one(i: int) -> bytes:
                return (await post_for_body(client, srv.url, b"x" * i, HEADERS, timeout_s=5))[0]

            for _ in range(3):
                got = await asyncio.gather(*(one(i) for i in range(1, 41)))
                assert got == [b'{"n": %d}' % i for i in range(1, 41)]
            assert srv.connections <= 40
            await client.close()

    run(main())


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            key,
            "-out",
            cert,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_upstream_is_verified(tls_files):
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def main():
        async with RawServer(ok, ssl_ctx=server_ctx) as srv:
            untrusting = UpstreamHTTP(connect_timeout_s=5)
            with pytest.raises(AttemptError) as e:
                await post_for_body(untrusting, srv.url, b"{}", HEADERS, timeout_s=5)
            assert e.value.kind == "connect" and "TLS" in e.value.message
            trusting = UpstreamHTTP(connect_timeout_s=5, ssl_context=ssl.create_default_context(cafile=cert))
            for _ in range(2):
                assert (await post_for_body(trusting, srv.url, b"{}", HEADERS, timeout_s=5))[0] == b'{"n": 0}'
            assert srv.connections == 1  # the refused handshake never got in; then one kept-alive connection
            await untrusting.close()
            await trusting.close()

    run(main())


def test_the_default_tls_context_honours_ssl_cert_file(tls_files, monkeypatch):
    cert, key = tls_files
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def main():
        async with RawServer(ok, ssl_ctx=server_ctx) as srv:
            client = UpstreamHTTP(connect_timeout_s=5)
            assert await fetch(client, srv.url) == b'{"n": 0}'
            await client.close()

    assert os.environ["SSL_CERT_FILE"] == cert
    run(main())
