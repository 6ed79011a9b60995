"""MemoryTransport keeps UpstreamHTTP's contract: what adapter and pipeline tests driven through it rely on.

Its parity with the real client's errors on real sockets is in
tests/integration/test_memory_transport_parity.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tiergate.adapters.memory_transport import (
    HANG,
    MemoryTransport,
    Reply,
    SentRequest,
    connect_failed,
    connect_timeout,
    dropped,
    in_order,
    malformed,
    refused,
    sse_event,
)
from tiergate.core.errors import AttemptError

URL = "http://upstream.test/v1/chat/completions"
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-test"}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


async def body_of(transport: MemoryTransport, *, timeout_s: float = 5, data: bytes = b"{}") -> bytes:
    resp = await transport.post(URL, data, HEADERS, timeout_s=timeout_s)
    return await resp.read()


async def chunks_of(transport: MemoryTransport, *, timeout_s: float = 5, idle_s: float | None = None) -> list[bytes]:
    resp = await transport.post(URL, b"{}", HEADERS, timeout_s=timeout_s)
    if idle_s is not None:
        resp.idle_timeout(idle_s)
    return [c async for c in resp.chunks()]


def test_a_json_reply_and_the_request_as_it_was_received():
    seen: list[SentRequest] = []

    def handler(req: SentRequest) -> Reply:
        seen.append(req)
        return Reply.json({"model": req.json["model"]}, headers={"X-Request-Id": "req_1"})

    async def main():
        t = MemoryTransport(handler)
        resp = await t.post(URL, b'{"model": "m"}', HEADERS, timeout_s=5)
        assert (resp.status, resp.reason) == (200, "OK")
        assert resp.headers == {"content-type": "application/json", "x-request-id": "req_1"}  # lower-case names
        assert await resp.read() == b'{"model":"m"}'
        assert resp.outcome == "reused" and not t.open_responses
        req = t.requests[0]
        assert seen == [req] and resp.request is req
        assert (req.url, req.body, req.timeout_s) == (URL, b'{"model": "m"}', 5)
        assert req.header("authorization") == "Bearer sk-test" and req.header("x-missing") is None

    run(main())


def test_sse_parts_are_encoded_as_the_vendors_send_them():
    parts = [
        {"type": "message_stop"},  # Anthropic: an event line named after the type
        {"object": "chat.completion.chunk"},  # OpenAI: data only
        "[DONE]",
        b'data: {"split',  # raw bytes as they are: an event cut across two reads
        b'": 1}\n\n',
    ]

    async def main():
        t = MemoryTransport(lambda req: Reply.sse(parts))
        got = await chunks_of(t)
        assert got == [
            b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
            b'data: {"object":"chat.completion.chunk"}\n\n',
            b"data: [DONE]\n\n",
            b'data: {"split',
            b'": 1}\n\n',
        ]
        assert t.responses[0].headers["content-type"] == "text/event-stream"
        assert t.responses[0].outcome == "reused"
        assert sse_event({"type": "ping"}, event="custom") == b'event: custom\ndata: {"type":"ping"}\n\n'

    run(main())


def test_scripted_failures_are_raised_as_the_real_client_raises_them():
    answers = [refused(), connect_failed(URL), connect_timeout(URL, 2), malformed(), dropped()]

    async def main():
        t = MemoryTransport(in_order(*answers))
        kinds = []
        for _ in answers:
            with pytest.raises(AttemptError) as e:
                await body_of(t)
            kinds.append((e.value.kind, e.value.message))
        assert kinds == [
            ("refused", "connection refused"),
            ("connect", "cannot connect to upstream.test:80: Name or service not known"),
            ("timeout", "connecting to upstream.test:80 took over 2 s"),
            ("protocol", "upstream sent malformed HTTP: Invalid constant string"),
            ("dropped", "connection dropped by upstream"),
        ]
        assert len(t.requests) == 5 and t.responses == []
        with pytest.raises(AssertionError, match="no answer scripted"):
            await body_of(t)

    run(main())


def test_a_handler_that_never_answers_times_out_at_timeout_s():
    async def never(req: SentRequest) -> Reply:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def main():
        for handler in (never, lambda req: HANG):
            t = MemoryTransport(handler)
            t0 = time.perf_counter()
            with pytest.raises(AttemptError) as e:
                await t.post(URL, b"{}", HEADERS, timeout_s=0.05)
            assert (e.value.kind, e.value.message) == ("timeout", "no answer within 0.05 s")
            assert e.value.retryable and time.perf_counter() - t0 < 1
            assert len(t.requests) == 1  # received, never answered

    run(main())


def test_the_whole_body_is_due_within_timeout_s_until_an_idle_timeout_is_set():
    async def slow(interval: float, n: int):
        for i in range(n):
            await asyncio.sleep(interval)
            yield f'{{"n": {i}}}'

    async def main():
        t = MemoryTransport(lambda req: Reply.sse(slow(0.03, 5)))  # 0.15 s in all, 0.03 s apart
        with pytest.raises(AttemptError) as e:
            await chunks_of(t, timeout_s=0.1)
        assert (e.value.kind, e.value.message) == ("timeout", "no answer within 0.1 s")
        assert t.responses[0].outcome == "closed"
        assert len(await chunks_of(t, timeout_s=0.1, idle_s=0.1)) == 5  # data keeps coming: no timeout
        # a stream stuck after its first event: the idle timeout ends it, and the response is closed
        t = MemoryTransport(lambda req: Reply.sse(["first", HANG]))
        resp = await t.post(URL, b"{}", HEADERS, timeout_s=5)
        resp.idle_timeout(0.05)
        got = []
        with pytest.raises(AttemptError) as e:
            async for chunk in resp.chunks():
                got.append(chunk)
        assert got == [b"data: first\n\n"]
        assert (e.value.kind, e.value.message) == ("timeout", "no data from upstream for 0.05 s")
        assert resp.outcome == "closed"

    run(main())


def test_a_slow_reader_is_not_a_quiet_upstream():
    async def main():
        t = MemoryTransport(lambda req: Reply.sse(["a", "b", "c"]))
        resp = await t.post(URL, b"{}", HEADERS, timeout_s=0.05)
        resp.idle_timeout(0.05)
        got = []
        async for chunk in resp.chunks():
            got.append(chunk)
            await asyncio.sleep(0.08)  # longer than both timeouts, between reads
        assert len(got) == 3 and resp.outcome == "reused"

    run(main())


def test_a_stream_cut_midway_gives_what_came_then_the_error():
    async def main():
        t = MemoryTransport(lambda req: Reply.sse(["one", dropped(), "never sent"]))
        got = []
        with pytest.raises(AttemptError) as e:
            async for chunk in (await t.post(URL, b"{}", HEADERS, timeout_s=5)).chunks():
                got.append(chunk)
        assert got == [b"data: one\n\n"] and e.value.kind == "dropped"
        assert t.responses[0].outcome == "closed"
        # the same through read(): no partial body, the error
        with pytest.raises(AttemptError):
            await body_of(t)

    run(main())


def test_read_with_a_limit_and_cancelled_reads_close_the_response():
    async def main():
        t = MemoryTransport(lambda req: Reply(500, [b"abc", b"def", b"ghi"]))
        resp = await t.post(URL, b"{}", HEADERS, timeout_s=5)
        assert (resp.status, resp.reason) == (500, "Internal Server Error")
        assert await resp.read(4) == b"abcd"
        assert resp.outcome == "closed"  # the rest was never read: a real connection could not be reused
        t = MemoryTransport(lambda req: Reply(200, [b"{", HANG]))
        resp = await t.post(URL, b"{}", HEADERS, timeout_s=5)
        task = asyncio.create_task(resp.read())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert resp.outcome == "closed" and not t.open_responses

    run(main())


def test_what_the_real_client_refuses_to_send_is_refused_the_same_and_never_received():
    async def main():
        t = MemoryTransport(lambda req: Reply.json({}))
        with pytest.raises(AttemptError) as e:
            await t.post(URL, b"{}", {"X-Bad": "a\r\nInjected: 1"}, timeout_s=5)
        assert e.value.kind == "protocol" and "X-Bad" in e.value.message
        with pytest.raises(AttemptError) as e:
            await t.post("ftp://upstream.test/v1", b"{}", HEADERS, timeout_s=5)
        assert e.value.kind == "protocol"
        assert t.requests == []

    run(main())


def test_open_responses_show_a_leak_and_close_ends_them():
    async def main():
        t = MemoryTransport(lambda req: Reply.sse(["a", "b"]))
        resp = await t.post(URL, b"{}", HEADERS, timeout_s=5)
        assert t.open_responses == [resp]
        await t.close()
        assert resp.outcome == "closed" and t.open_responses == []
        with pytest.raises(AttemptError) as e:  # reading a closed response fails rather than hanging
            await resp.read()
        assert e.value.kind == "dropped"

    run(main())
