"""Bounded reading of upstream answers (issue 13), every adapter driven through MemoryTransport.

A faulty or hostile upstream must cost one attempt, never the gateway's
memory or a client's wait: a reply past max_response_bytes, an event past
max_event_bytes (or bytes that never end one), bytes that are not SSE, a
200 that is not an event stream, a stream that never ends. Before the
first event each is a failed attempt (the executor fails over); after it
the stream ends with the error recorded and nothing of the bad bytes is
relayed. Bodies are generated as they are pulled, so a test also shows
how much of a hostile body was read.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest

from tiergate.adapters.anthropic_messages import AnthropicMessagesAdapter
from tiergate.adapters.base import UpstreamStream, is_sse_event
from tiergate.adapters.memory_transport import HANG, MemoryTransport, Reply, sse_event
from tiergate.adapters.openai_chat import OpenAIChatAdapter
from tiergate.adapters.translated import AnthropicViaOpenAI, OpenAIViaAnthropic
from tiergate.adapters.transport import UpstreamTransport
from tiergate.core.catalog import Deployment, ReadLimits
from tiergate.core.errors import AttemptError

BASE = "http://upstream.test/v1"
KB = 1024


DEFAULT_LIMITS = ReadLimits()


def deployment(api: str, limits: ReadLimits = DEFAULT_LIMITS) -> Deployment:
    return Deployment(
        name="d1",
        provider="p",
        api=api,
        base_url=BASE,
        model="m",
        tier=1,
        local=False,
        context_window=8000,
        max_output_tokens=None,
        input_per_mtok=1.0,
        output_per_mtok=2.0,
        limits=limits,
    )


def openai_chunk(text: str | None = None, *, role: bool = False) -> dict[str, Any]:
    delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {"content": text}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
    }


MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1},
    },
}
BLOCK_START = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}


def anthropic_delta(text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[UpstreamTransport], Any]
    upstream: str  # "openai" or "anthropic"
    end_marker: bytes  # the client protocol's end of a whole answer

    @property
    def api(self) -> str:
        return "openai-chat" if self.upstream == "openai" else "anthropic-messages"

    def start(self) -> list[Any]:
        """The upstream's events before its first content."""
        return [openai_chunk(role=True)] if self.upstream == "openai" else [MESSAGE_START, BLOCK_START]

    def content(self, text: str) -> dict[str, Any]:
        return openai_chunk(text) if self.upstream == "openai" else anthropic_delta(text)

    def end(self) -> list[Any]:
        if self.upstream == "openai":
            return ["[DONE]"]
        return [
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
            {"type": "message_stop"},
        ]


CASES = [
    Case("openai-chat", OpenAIChatAdapter, "openai", b"data: [DONE]"),
    Case("anthropic-messages", AnthropicMessagesAdapter, "anthropic", b"event: message_stop"),
    Case("anthropic-via-openai", lambda t: AnthropicViaOpenAI(OpenAIChatAdapter(t)), "openai", b"event: message_stop"),
    Case(
        "openai-via-anthropic", lambda t: OpenAIViaAnthropic(AnthropicMessagesAdapter(t)), "anthropic", b"data: [DONE]"
    ),
]
every_adapter = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
REQUEST = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello"}]}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def drain(s: UpstreamStream) -> bytes:
    return s.first_event + b"".join([ev async for ev in s.rest])


class Lazy:
    """A body produced as it is pulled, counting what was pulled: a 2 GB body that is never held."""

    def __init__(self, head: list[Any], piece: bytes, pieces: int, tail: list[Any] = ()) -> None:  # type: ignore[assignment]
        self.head, self.piece, self.pieces, self.tail = head, piece, pieces, list(tail)
        self.pulled = 0  # bytes of ``piece`` handed out

    async def parts(self) -> AsyncIterator[Any]:
        for part in self.head:
            yield part
        for _ in range(self.pieces):
            self.pulled += len(self.piece)
            yield self.piece
        for part in self.tail:
            yield part


# -- non-streamed replies


@every_adapter
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_reply_past_max_response_fails_over_and_is_not_read_further(case, declared):
    cap = 64 * KB
    lazy = Lazy([], b"z" * (16 * KB), 128 * 1024)  # 2 GB if read to its end

    def answer(req):
        headers = {"content-type": "application/json"}
        if declared:
            headers["content-length"] = str(2 << 30)
        return Reply(200, lazy.parts(), headers)

    async def main():
        t = MemoryTransport(answer)
        d = deployment(case.api, ReadLimits(max_response_bytes=cap))
        with pytest.raises(AttemptError) as e:
            await case.make(t).complete(d, REQUEST, timeout_s=5)
        assert e.value.kind == "protocol" and not e.value.retryable  # the next candidate is tried, not this again
        assert "max_response_mb" in e.value.message
        assert t.responses[0].outcome == "closed"
        assert lazy.pulled == (0 if declared else cap + 16 * KB)  # a declared length over the cap: nothing read

    run(main())


@every_adapter
def test_a_reply_within_max_response_is_read_whole(case):
    body = {
        "openai": {
            "id": "c",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi " * 4000}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4000},
        },
        "anthropic": {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [{"type": "text", "text": "hi " * 4000}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 4000},
        },
    }[case.upstream]
    raw = orjson.dumps(body)

    async def main():
        t = MemoryTransport(lambda r: Reply.json(raw))
        reply = await case.make(t).complete(
            deployment(case.api, ReadLimits(max_response_bytes=len(raw))), REQUEST, timeout_s=5
        )
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 4000)

    run(main())


# -- streams: bytes that never make an event, events too big, bytes that are not SSE


@every_adapter
@pytest.mark.parametrize("midway", [False, True], ids=["before-first-event", "midway"])
def test_a_stream_that_never_ends_an_event_is_cut_at_max_event_bytes(case, midway):
    cap = 32 * KB
    head = [*case.start(), case.content("Hi")] if midway else []
    lazy = Lazy([*head, b"data: "], b"y" * KB, 1 << 21)  # 2 GB without a blank line

    async def main():
        t = MemoryTransport(lambda r: Reply.sse(lazy.parts()))
        d = deployment(case.api, ReadLimits(max_event_bytes=cap))
        if not midway:
            with pytest.raises(AttemptError) as e:
                await case.make(t).stream(d, {**REQUEST, "stream": True}, timeout_s=5)
            assert e.value.kind == "protocol" and "max_event_kb" in e.value.message
        else:
            s = await case.make(t).stream(d, {**REQUEST, "stream": True}, timeout_s=5)
            out = await drain(s)
            assert "max_event_kb" in (s.status.error or "") and not s.status.completed
            assert b"yyyy" not in out and case.end_marker not in out
        assert cap <= lazy.pulled <= cap + KB  # read up to the cap, not one piece more
        assert t.responses[0].outcome == "closed"

    run(main())


@every_adapter
def test_an_event_larger_than_max_event_bytes_in_one_piece_is_refused(case):
    huge = b"data: " + b"x" * (64 * KB) + b"\n\n"

    async def main():
        t = MemoryTransport(lambda r: Reply.sse([huge]))
        d = deployment(case.api, ReadLimits(max_event_bytes=32 * KB))
        with pytest.raises(AttemptError) as e:
            await case.make(t).stream(d, {**REQUEST, "stream": True}, timeout_s=5)
        assert e.value.kind == "protocol" and "max_event_kb" in e.value.message

    run(main())


GARBAGE = random.Random(13).randbytes(4096)


@every_adapter
@pytest.mark.parametrize(
    "body",
    [
        [GARBAGE],
        [GARBAGE[:100] + b"\n\n"],  # ends like an event, is not one
        [b"<html><body>502 Bad Gateway</body></html>\n\n"],
        [b"data: ok\n\xff\xfe\n\n"],  # not UTF-8
    ],
    ids=["random", "random-with-boundary", "html", "not-utf8"],
)
def test_a_first_event_that_is_not_sse_fails_over_and_nothing_is_relayed(case, body):
    async def main():
        t = MemoryTransport(lambda r: Reply.sse(body))
        with pytest.raises(AttemptError) as e:
            await case.make(t).stream(deployment(case.api), {**REQUEST, "stream": True}, timeout_s=5)
        assert e.value.kind == "protocol"
        assert not t.open_responses  # closed, or reused when the HTTP body itself ended well

    run(main())


@every_adapter
def test_bytes_that_are_not_sse_midway_end_the_stream_and_are_not_relayed(case):
    async def main():
        t = MemoryTransport(lambda r: Reply.sse([*case.start(), case.content("Hi"), GARBAGE + b"\n\n", *case.end()]))
        s = await case.make(t).stream(deployment(case.api), {**REQUEST, "stream": True}, timeout_s=5)
        out = await drain(s)
        assert "not an SSE event" in (s.status.error or "")
        assert GARBAGE[:16] not in out and case.end_marker not in out
        assert all(is_sse_event(ev + b"\n\n") for ev in out.split(b"\n\n") if ev)

    run(main())


@every_adapter
@pytest.mark.parametrize(
    ("ctype", "body", "said"),
    [
        ("application/json", b'{"error": {"message": "insufficient_quota"}}', "insufficient_quota"),
        ("text/html; charset=utf-8", b"<html>maintenance</html>", "text/html"),
        ("application/octet-stream", GARBAGE, "application/octet-stream"),
    ],
)
def test_a_200_that_is_not_an_event_stream_fails_over(case, ctype, body, said):
    async def main():
        t = MemoryTransport(lambda r: Reply(200, body, {"content-type": ctype}))
        with pytest.raises(AttemptError) as e:
            await case.make(t).stream(deployment(case.api), {**REQUEST, "stream": True}, timeout_s=5)
        assert e.value.kind == "protocol" and said in e.value.message
        assert not t.open_responses

    run(main())


COMMENT = b": OPENROUTER PROCESSING\n\n"


@every_adapter
def test_comments_before_the_first_event_do_not_take_its_place(case):
    async def main():
        t = MemoryTransport(lambda r: Reply.sse([COMMENT, COMMENT, *case.start(), case.content("Hi"), *case.end()]))
        s = await case.make(t).stream(deployment(case.api), {**REQUEST, "stream": True}, timeout_s=5)
        assert s.first_event and not s.first_event.startswith(b":")
        out = await drain(s)
        assert s.status.completed and case.end_marker in out

        # a stream that fails after its comments still fails over: nothing was sent to the client
        t = MemoryTransport(lambda r: Reply.sse([COMMENT, GARBAGE]))
        with pytest.raises(AttemptError):
            await case.make(t).stream(deployment(case.api), {**REQUEST, "stream": True}, timeout_s=5)

    run(main())


def test_an_anthropic_ping_first_does_not_pass_for_the_first_event_of_a_translation():
    ping = {"type": "ping"}

    async def main():
        adapter = OpenAIViaAnthropic(AnthropicMessagesAdapter(MemoryTransport(lambda r: Reply.sse([ping, HANG]))))
        with pytest.raises(AttemptError) as e:  # nothing a client could read came before the upstream went quiet
            await adapter.stream(deployment("anthropic-messages"), {**REQUEST, "stream": True}, timeout_s=0.2)
        assert e.value.retryable
        t = MemoryTransport(lambda r: Reply.sse([ping, MESSAGE_START, BLOCK_START, anthropic_delta("Hi"), HANG]))
        s = await OpenAIViaAnthropic(AnthropicMessagesAdapter(t)).stream(
            deployment("anthropic-messages"), {**REQUEST, "stream": True}, timeout_s=5
        )
        assert b'"role":"assistant"' in s.first_event
        s.close()

    run(main())


# -- streams: how long


@every_adapter
def test_a_steady_endless_stream_ends_at_its_total_deadline(case):
    async def endless():
        for part in case.start():
            yield part
        while True:
            await asyncio.sleep(0.002)
            yield case.content("word ")

    async def main():
        t = MemoryTransport(lambda r: Reply.sse(endless()))
        d = deployment(case.api, ReadLimits(stream_timeout_s=0.5))
        s = await case.make(t).stream(d, {**REQUEST, "stream": True}, timeout_s=5)  # idle timeout: 5 s
        out = await drain(s)
        assert s.status.error == "timeout: the stream went on past its 0.5 s deadline"
        assert case.end_marker not in out and s.usage.completion_tokens > 0
        assert t.responses[0].outcome == "closed"

    run(main())


@every_adapter
def test_the_provider_s_idle_timeout_bounds_the_wait_between_events(case):
    async def main():
        t = MemoryTransport(lambda r: Reply.sse([*case.start(), case.content("Hi"), HANG]))
        d = deployment(case.api, ReadLimits(stream_idle_timeout_s=0.1))
        s = await case.make(t).stream(d, {**REQUEST, "stream": True}, timeout_s=30)
        await drain(s)
        assert s.status.error == "timeout: no data from upstream for 0.1 s"

    run(main())


@every_adapter
def test_closing_a_stream_wakes_a_relay_waiting_for_its_next_event(case):
    """The relay's client watch closes the stream from a timer while the relay waits on the upstream."""

    async def main():
        quiet = asyncio.Event()

        async def body():
            for part in [*case.start(), case.content("Hi")]:
                yield part
            quiet.set()
            await asyncio.get_running_loop().create_future()  # the upstream says nothing more

        t = MemoryTransport(lambda r: Reply.sse(body()))
        s = await case.make(t).stream(deployment(case.api), {**REQUEST, "stream": True}, timeout_s=30)
        relay = asyncio.create_task(drain(s))
        await quiet.wait()  # the relay now waits for an event that does not come
        s.close()
        done, _ = await asyncio.wait({relay}, timeout=10)  # without the wake-up: the whole 30 s idle timeout
        assert done, "closing the stream did not wake the relay"
        out = relay.result()
        assert case.end_marker not in out and not s.status.completed
        assert t.responses[0].outcome == "closed"

    run(main())


def test_read_limits_come_from_the_provider_config():
    from tiergate.config.catalog import build_catalog
    from tiergate.config.loading import config_from_dict

    raw = {
        "providers": {
            "a": {
                "api": "openai-chat",
                "base_url": "http://a.test/v1",
                "stream_timeout_s": 30,
                "stream_idle_timeout_s": 5,
                "max_event_kb": 64,
                "max_response_mb": 2.5,
            },
            "b": {"api": "openai-chat", "base_url": "http://b.test/v1"},
        },
        "deployments": [{"name": "da", "provider": "a", "model": "m"}, {"name": "db", "provider": "b", "model": "m"}],
        "routing": {"request_timeout_s": 120},
    }
    catalog = build_catalog(config_from_dict(raw, env={}))
    assert catalog.deployments["da"].limits == ReadLimits(30, 5, 64 * KB, int(2.5 * 1024 * KB))
    assert catalog.deployments["db"].limits == replace(ReadLimits(), stream_timeout_s=120)


def test_sse_event_check_accepts_every_field_and_comment_and_refuses_the_rest():
    good = [
        sse_event({"type": "ping"}),
        b"data: [DONE]\n\n",
        b": comment\ndata: x\n\n",
        b"event: a\nid: 7\nretry: 10\ndata: {}\n\n",
        b"data\n\n",
        'data: {"t": "caf\u00e9 \u6f22"}\n\n'.encode(),
    ]
    bad = [b"hello\n\n", b"data: x\nnot a field\n\n", b"\xff\xfe\n\n", b"DATA: x\n\n", b"data: \xc3\n\n"]
    assert all(is_sse_event(e) for e in good)
    assert not any(is_sse_event(e) for e in bad)
