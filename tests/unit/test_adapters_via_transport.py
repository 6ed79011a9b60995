"""The protocol adapters driven through MemoryTransport: what goes upstream, what comes back, how failures read.

Upstream answers are vendor-documented payloads: the golden fixtures in
tests/wire/fixtures (OpenAI's chat completion and chunk objects, Anthropic's
message and streaming events) and the error envelopes of each vendor's
error documentation. Each behaviour is checked on the native adapters and
on the translated ones (AnthropicViaOpenAI, OpenAIViaAnthropic).
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import orjson
import pytest

from tiergate.adapters.anthropic_messages import AnthropicMessagesAdapter
from tiergate.adapters.base import UpstreamStream
from tiergate.adapters.memory_transport import (
    HANG,
    MemoryTransport,
    Reply,
    dropped,
    refused,
)
from tiergate.adapters.openai_chat import OpenAIChatAdapter, OpenAIEmbeddingsAdapter
from tiergate.adapters.translated import AnthropicViaOpenAI, OpenAIViaAnthropic
from tiergate.adapters.transport import UpstreamTransport
from tiergate.core.catalog import Deployment
from tiergate.core.errors import AttemptError
from tiergate.core.types import ClientHints

FIXTURES = Path(__file__).parents[1] / "wire" / "fixtures"
BASE = "http://upstream.test/v1"


def load(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def events_of(name: str) -> list[bytes]:
    """A golden SSE transcript's events, without its leading comment (the fixture's source note)."""
    raw = (FIXTURES / name).read_bytes()
    return [e + b"\n\n" for e in raw.split(b"\n\n") if e.strip() and not e.startswith(b":")]


def split(out: bytes) -> list[bytes]:
    return [e + b"\n\n" for e in out.split(b"\n\n") if e.strip()]


def anthropic_events(out: bytes) -> list[list[Any]]:
    return [[e.split(b"\n")[0][7:].decode(), orjson.loads(e.split(b"\n")[1][6:])] for e in split(out)]


def openai_chunks(out: bytes) -> list[Any]:
    return ["[DONE]" if e.strip() == b"data: [DONE]" else orjson.loads(e[6:]) for e in split(out)]


def parsed_arguments(body: dict[str, Any]) -> dict[str, Any]:
    """Tool call arguments parsed, so JSON is compared, not its spelling."""
    body = copy.deepcopy(body)
    for msg in body.get("messages") or [c["message"] for c in body.get("choices", [])]:
        for call in msg.get("tool_calls") or ():
            call["function"]["arguments"] = orjson.loads(call["function"]["arguments"])
    return body


def deployment(api: str, model: str, *, max_output_tokens: int | None = None) -> Deployment:
    return Deployment(
        name="d1",
        provider="p",
        api=api,
        base_url=BASE,
        model=model,
        tier=1,
        local=False,
        context_window=200_000,
        max_output_tokens=max_output_tokens,
        input_per_mtok=1.0,
        output_per_mtok=2.0,
        api_key="sk-test",
    )


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


async def drain(s: UpstreamStream) -> bytes:
    return s.first_event + b"".join([ev async for ev in s.rest])


# Client requests: the vendors' own first examples (OpenAI "Create chat completion", Anthropic "Messages").
OPENAI_REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}],
}
ANTHROPIC_REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, Claude"}],
}

# Error envelopes as each vendor documents them (OpenAI: error codes guide; Anthropic: Errors page).
ERRORS = {
    "openai": {
        429: {
            "error": {
                "message": "Rate limit reached for gpt-4o-mini in organization org-123 on requests per min "
                "(RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        },
        400: {
            "error": {
                "message": "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                "but what was sent was not valid JSON. If you have trouble figuring out how to "
                "fix this, please contact us through our help center at help.openai.com.)",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
        500: {
            "error": {
                "message": "The server had an error while processing your request. Sorry about that!",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        },
    },
    "anthropic": {
        429: {
            "type": "error",
            "error": {"type": "rate_limit_error", "message": "Your account has hit a rate limit."},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
        },
        400: {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "messages: at least one message is required"},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
        },
        500: {
            "type": "error",
            "error": {"type": "api_error", "message": "Internal server error"},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
        },
    },
}

# The start of a stream, and its end marker, per upstream protocol (from the golden transcripts).
STREAM_START = {
    "openai": events_of("openai_stream_text.sse")[:2],
    "anthropic": events_of("anthropic_stream_thinking_tool.sse")[:3],
}
STREAM_END = {"openai": [b"data: [DONE]\n\n"], "anthropic": events_of("anthropic_stream_thinking_tool.sse")[-1:]}
END_MARKER = {"openai-chat": b"data: [DONE]", "anthropic-messages": b"event: message_stop"}


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[UpstreamTransport], Any]
    upstream: str  # the upstream's protocol: "openai" or "anthropic"
    client: str  # the client's protocol, what the adapter returns
    request: dict[str, Any]

    def deployment(self) -> Deployment:
        if self.upstream == "openai":
            return deployment("openai-chat", "gpt-4o-mini")
        return deployment("anthropic-messages", "claude-sonnet-4-5")


CASES = [
    Case("openai-chat", OpenAIChatAdapter, "openai", "openai-chat", OPENAI_REQUEST),
    Case("anthropic-messages", AnthropicMessagesAdapter, "anthropic", "anthropic-messages", ANTHROPIC_REQUEST),
    Case(
        "anthropic-via-openai",
        lambda t: AnthropicViaOpenAI(OpenAIChatAdapter(t)),
        "openai",
        "anthropic-messages",
        ANTHROPIC_REQUEST,
    ),
    Case(
        "openai-via-anthropic",
        lambda t: OpenAIViaAnthropic(AnthropicMessagesAdapter(t)),
        "anthropic",
        "openai-chat",
        OPENAI_REQUEST,
    ),
]
every_adapter = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])


# -- OpenAI Chat Completions


def test_openai_reply_is_passed_through_and_its_usage_read():
    served = orjson.dumps(load("resp_openai_text.json")["openai"])

    async def main():
        t = MemoryTransport(lambda req: Reply.json(served))
        d = deployment("openai-chat", "gpt-4o-mini-2024-07-18", max_output_tokens=100)
        reply = await OpenAIChatAdapter(t).complete(d, {**OPENAI_REQUEST, "max_tokens": 500}, timeout_s=5)
        assert reply.body == served and reply.content_type == "application/json"  # the upstream's bytes, untouched
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.estimated) == (9, 12, False)
        req = t.requests[0]
        assert req.url == f"{BASE}/chat/completions"
        assert req.header("authorization") == "Bearer sk-test" and req.header("content-type") == "application/json"
        assert req.json == {**OPENAI_REQUEST, "model": "gpt-4o-mini-2024-07-18", "max_tokens": 100}
        assert t.responses[0].outcome == "reused"

    run(main())


def test_openai_reply_without_usage_is_estimated_and_one_that_is_not_json_is_a_protocol_error():
    no_usage = {k: v for k, v in load("resp_openai_text.json")["openai"].items() if k != "usage"}

    async def main():
        t = MemoryTransport(lambda req: Reply.json(no_usage))
        reply = await OpenAIChatAdapter(t).complete(deployment("openai-chat", "m"), OPENAI_REQUEST, timeout_s=5)
        assert reply.usage.estimated and reply.usage.completion_tokens > 0
        t = MemoryTransport(lambda req: Reply.json(b"<html>Bad Gateway</html>"))
        with pytest.raises(AttemptError) as e:
            await OpenAIChatAdapter(t).complete(deployment("openai-chat", "m"), OPENAI_REQUEST, timeout_s=5)
        assert e.value.kind == "protocol"

    run(main())


def test_openai_stream_is_relayed_event_by_event_with_its_usage():
    events = events_of("openai_stream_parallel_tools.sse")  # the client asked for usage: every event goes through

    async def main():
        t = MemoryTransport(lambda req: Reply.sse(events))
        body = {**OPENAI_REQUEST, "stream": True, "stream_options": {"include_usage": True}}
        s = await OpenAIChatAdapter(t).stream(deployment("openai-chat", "gpt-4o"), body, timeout_s=5)
        assert s.first_event == events[0] and s.content_type == "text/event-stream"
        assert await drain(s) == b"".join(events)
        assert (s.usage.prompt_tokens, s.usage.completion_tokens, s.usage.estimated) == (91, 48, False)
        assert s.status.completed and s.status.error is None
        assert t.requests[0].json["stream_options"] == {"include_usage": True}
        assert t.responses[0].outcome == "reused"  # a finished stream gives its connection back

    run(main())


def test_openai_usage_chunk_asked_for_by_tiergate_is_read_and_not_relayed():
    # the API reference's stream_options example: a last chunk with empty choices and the usage
    usage_chunk = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
    }
    content = events_of("openai_stream_text.sse")[:-1]  # up to the finish_reason chunk

    async def main():
        t = MemoryTransport(lambda req: Reply.sse([*content, usage_chunk, "[DONE]"]))
        s = await OpenAIChatAdapter(t).stream(
            deployment("openai-chat", "gpt-4o-mini"), {**OPENAI_REQUEST, "stream": True}, timeout_s=5
        )
        out = await drain(s)
        assert t.requests[0].json["stream_options"] == {"include_usage": True}
        assert out == b"".join(content) + b"data: [DONE]\n\n"
        assert (s.usage.prompt_tokens, s.usage.completion_tokens, s.usage.estimated) == (9, 6, False)

    run(main())


def test_embeddings_go_to_their_path_and_are_never_streamed():
    # the API reference's "Create embeddings" example response
    served = {
        "object": "list",
        "data": [{"object": "embedding", "embedding": [0.0023064255, -0.009327292, -0.0028842222], "index": 0}],
        "model": "text-embedding-ada-002",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }

    async def main():
        t = MemoryTransport(lambda req: Reply.json(served))
        adapter = OpenAIEmbeddingsAdapter(t)
        d = deployment("openai-chat", "text-embedding-3-small")
        body = {"model": "emb", "input": "The food was delicious and the waiter...", "encoding_format": "float"}
        reply = await adapter.complete(d, body, timeout_s=5)
        assert orjson.loads(reply.body) == served
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (8, 0)
        assert t.requests[0].url == f"{BASE}/embeddings"
        assert t.requests[0].json == {**body, "model": "text-embedding-3-small"}
        with pytest.raises(AttemptError) as e:
            await adapter.stream(d, {**body, "stream": True}, timeout_s=5)
        assert e.value.kind == "protocol" and len(t.requests) == 1

    run(main())


# -- Anthropic Messages


def test_anthropic_request_travels_whole_with_the_client_hints():
    fx = load("req_anthropic_tool_use.json")["anthropic"]  # thinking blocks, cache_control, tools: all forwarded
    served = load("resp_anthropic_text.json")["anthropic"]

    async def main():
        t = MemoryTransport(lambda req: Reply.json(served, headers={"request-id": "req_018EeWyXxfu5pfWkrYcMdjWG"}))
        hints = ClientHints(
            headers={"anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024-07-31"},
            query="beta=true",
        )
        d = deployment("anthropic-messages", "claude-sonnet-4-5-20250929")
        reply = await AnthropicMessagesAdapter(t).complete(d, {**fx, "stream": False}, timeout_s=5, hints=hints)
        assert orjson.loads(reply.body) == served
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.estimated) == (2095, 503, False)
        req = t.requests[0]
        assert req.url == f"{BASE}/messages?beta=true"
        assert req.json == {**fx, "stream": False, "model": "claude-sonnet-4-5-20250929"}
        assert (req.header("x-api-key"), req.header("anthropic-beta")) == ("sk-test", "prompt-caching-2024-07-31")
        assert req.header("authorization") is None

    run(main())


def test_anthropic_prompt_tokens_count_cache_reads_and_writes():
    served = load("resp_anthropic_tool_use.json")["anthropic"]
    u = served["usage"]

    async def main():
        t = MemoryTransport(lambda req: Reply.json(served))
        reply = await AnthropicMessagesAdapter(t).complete(
            deployment("anthropic-messages", "m"), ANTHROPIC_REQUEST, timeout_s=5
        )
        cached = u["input_tokens"] + u.get("cache_read_input_tokens", 0) + u.get("cache_creation_input_tokens", 0)
        assert u.get("cache_read_input_tokens") and reply.usage.prompt_tokens == cached
        assert reply.usage.completion_tokens == u["output_tokens"]

    run(main())


def test_anthropic_stream_is_relayed_unchanged_with_its_usage():
    events = events_of("anthropic_stream_thinking_tool.sse")

    async def main():
        t = MemoryTransport(lambda req: Reply.sse(events))
        s = await AnthropicMessagesAdapter(t).stream(
            deployment("anthropic-messages", "m"), {**ANTHROPIC_REQUEST, "stream": True}, timeout_s=5
        )
        assert s.first_event == events[0]
        assert await drain(s) == b"".join(events)
        assert (s.usage.prompt_tokens, s.usage.completion_tokens, s.usage.estimated) == (472, 89, False)
        assert s.status.completed and s.status.error is None
        assert t.responses[0].outcome == "reused"

    run(main())


# Anthropic's documented in-stream error (Streaming messages, "Error events").
OVERLOADED = (
    b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
)


def test_anthropic_error_event_first_is_a_failed_attempt_and_later_ends_the_stream():
    async def main():
        t = MemoryTransport(lambda req: Reply.sse([OVERLOADED]))
        adapter = AnthropicMessagesAdapter(t)
        with pytest.raises(AttemptError) as e:
            await adapter.stream(deployment("anthropic-messages", "m"), ANTHROPIC_REQUEST, timeout_s=5)
        assert (e.value.status, e.value.message) == (529, "overloaded_error: Overloaded") and e.value.retryable
        assert t.responses[0].outcome == "closed"
        t = MemoryTransport(lambda req: Reply.sse([*STREAM_START["anthropic"], OVERLOADED]))
        s = await AnthropicMessagesAdapter(t).stream(
            deployment("anthropic-messages", "m"), ANTHROPIC_REQUEST, timeout_s=5
        )
        await drain(s)
        assert not s.status.completed and s.status.error == "overloaded_error: Overloaded"

    run(main())


# -- the translated adapters


def test_anthropic_client_over_an_openai_upstream():
    req, resp = load("req_anthropic_vision.json"), load("resp_openai_text.json")

    async def main():
        t = MemoryTransport(lambda r: Reply.json(resp["openai"]))
        d = deployment("openai-chat", req["model"])
        reply = await AnthropicViaOpenAI(OpenAIChatAdapter(t)).complete(d, req["anthropic"], timeout_s=5)
        assert parsed_arguments(t.requests[0].json) == parsed_arguments(req["openai"])
        assert orjson.loads(reply.body) == {**resp["anthropic"], "model": d.model}
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (9, 12)
        assert bool(reply.notes) == bool(req["dropped"])

    run(main())


def test_anthropic_client_streaming_from_an_openai_upstream():
    req = load("req_anthropic_tool_use.json")
    expected = load("openai_stream_parallel_tools.expected.json")

    async def main():
        t = MemoryTransport(lambda r: Reply.sse(events_of("openai_stream_parallel_tools.sse")))
        d = deployment("openai-chat", expected["params"]["model"])
        s = await AnthropicViaOpenAI(OpenAIChatAdapter(t)).stream(d, req["anthropic"], timeout_s=5)
        got = anthropic_events(await drain(s))
        assert parsed_arguments(t.requests[0].json) == parsed_arguments({**req["openai"], "model": d.model})
        start = got[0][1]["message"]
        assert re.fullmatch(r"msg_[0-9a-f]{24}", start["id"]) and start["usage"]["input_tokens"] > 0  # an estimate
        start["id"], start["usage"]["input_tokens"] = expected["params"]["message_id"], 80
        assert got == expected["events"]  # the golden transcript, message_stop included
        assert s.status.completed and (s.usage.prompt_tokens, s.usage.completion_tokens) == (91, 48)

    run(main())


def test_openai_client_over_an_anthropic_upstream():
    req, resp = load("req_openai_functions.json"), load("resp_anthropic_text.json")

    async def main():
        t = MemoryTransport(lambda r: Reply.json(resp["anthropic"]))
        d = deployment("anthropic-messages", req["model"])
        reply = await OpenAIViaAnthropic(AnthropicMessagesAdapter(t)).complete(d, req["openai"], timeout_s=5)
        assert t.requests[0].json == req["anthropic"]
        out = orjson.loads(reply.body)
        assert isinstance(out.pop("created"), int)
        assert out == {**resp["openai"], "model": d.model}
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2095, 503)

    run(main())


def test_openai_client_streaming_from_an_anthropic_upstream():
    req = load("req_openai_streaming.json")
    expected = load("anthropic_stream_thinking_tool.expected.json")

    async def main():
        t = MemoryTransport(lambda r: Reply.sse(events_of("anthropic_stream_thinking_tool.sse")))
        d = deployment("anthropic-messages", expected["params"]["model"])
        s = await OpenAIViaAnthropic(AnthropicMessagesAdapter(t)).stream(d, req["openai"], timeout_s=5)
        chunks = openai_chunks(await drain(s))
        assert t.requests[0].json == {**req["anthropic"], "model": d.model}
        ids = {c.pop("id") for c in chunks if c != "[DONE]"} | {c.pop("created") for c in chunks if c != "[DONE]"}
        assert len(ids) == 2  # one completion id, one timestamp
        assert chunks == [c if c == "[DONE]" else {k: v for k, v in c.items() if k != "id"} for c in expected["chunks"]]
        assert s.status.completed and (s.usage.prompt_tokens, s.usage.completion_tokens) == (472, 89)

    run(main())


# -- failures, on every adapter


RETRY_AFTER = [  # headers, built when the test runs (an HTTP date is relative to now); the wait they ask for
    (lambda: {"Retry-After": "7"}, 7.0),
    (lambda: {"retry-after-ms": "1500"}, 1.5),
    (lambda: {"Retry-After": formatdate(time.time() + 30, usegmt=True)}, pytest.approx(30, abs=2)),
    (dict, None),
]


@every_adapter
@pytest.mark.parametrize(("make_headers", "wait"), RETRY_AFTER, ids=["seconds", "ms", "http-date", "none"])
def test_a_429_is_a_retryable_attempt_error_carrying_retry_after(case, make_headers, wait):
    body = ERRORS[case.upstream][429]
    headers = make_headers()

    async def main():
        t = MemoryTransport(lambda r: Reply.json(body, status=429, headers=headers))
        adapter = case.make(t)
        for call in (adapter.complete, adapter.stream):
            with pytest.raises(AttemptError) as e:
                await call(case.deployment(), case.request, timeout_s=5)
            err = e.value
            assert (err.kind, err.status, err.retry_after) == ("status", 429, wait)
            assert err.retryable and not err.client_fault
            assert err.message == body["error"]["message"] and err.body == orjson.dumps(body)
        assert not t.open_responses

    run(main())


@every_adapter
@pytest.mark.parametrize("status", [400, 500])
def test_a_400_is_the_client_s_fault_and_a_500_worth_another_try(case, status):
    body = ERRORS[case.upstream][status]

    async def main():
        t = MemoryTransport(lambda r: Reply.json(body, status=status))
        with pytest.raises(AttemptError) as e:
            await case.make(t).complete(case.deployment(), case.request, timeout_s=5)
        err = e.value
        assert (err.status, err.client_fault, err.retryable) == (status, status == 400, status == 500)
        assert err.message == body["error"]["message"][:300]
        assert err.summary().startswith(f"{status} ")

    run(main())


BEFORE_FIRST_EVENT = [
    ("refused", lambda: refused(), ("refused", "connection refused")),
    ("no answer", lambda: HANG, ("timeout", "no answer within 0.05 s")),
    ("dropped", lambda: Reply.sse([dropped()]), ("dropped", "connection dropped by upstream")),
    ("closed empty", lambda: Reply.sse([]), ("dropped", "upstream closed the stream before the first event")),
    ("silent", lambda: Reply.sse([HANG]), ("timeout", "no answer within 0.05 s")),
]


@every_adapter
@pytest.mark.parametrize(("name", "answer", "error"), BEFORE_FIRST_EVENT, ids=[b[0] for b in BEFORE_FIRST_EVENT])
def test_a_stream_that_fails_before_its_first_event_is_a_failed_attempt(case, name, answer, error):
    async def main():
        t = MemoryTransport(lambda r: answer())
        with pytest.raises(AttemptError) as e:
            await case.make(t).stream(case.deployment(), case.request, timeout_s=0.05)
        assert (e.value.kind, e.value.message) == error and e.value.retryable == (error[0] != "refused")
        assert not t.open_responses

    run(main())


CUT = [  # name, what follows the first events, the error recorded, how the response ends
    ("dropped", [dropped()], "dropped: connection dropped by upstream", "closed"),
    ("quiet", [HANG], "timeout: no data from upstream for 0.05 s", "closed"),
    # the HTTP body ends cleanly, without the protocol's end marker: the connection itself is fine
    ("ended early", [], None, "reused"),
]


@every_adapter
@pytest.mark.parametrize(("name", "tail", "error", "outcome"), CUT, ids=[c[0] for c in CUT])
def test_a_stream_cut_midway_is_recorded_and_not_made_to_look_complete(case, name, tail, error, outcome):
    async def main():
        t = MemoryTransport(lambda r: Reply.sse([*STREAM_START[case.upstream], *tail]))
        s = await case.make(t).stream(case.deployment(), case.request, timeout_s=0.05)
        out = await drain(s)
        assert not s.status.completed
        if error is None:
            assert s.status.error is not None and "ended the stream without" in s.status.error
        else:
            assert s.status.error == error
        assert END_MARKER[case.client] not in out  # the client must not take a cut answer for a whole one
        assert t.responses[0].outcome == outcome

    run(main())


@every_adapter
def test_a_stream_completes_on_its_end_marker(case):
    async def main():
        t = MemoryTransport(lambda r: Reply.sse([*STREAM_START[case.upstream], *STREAM_END[case.upstream]]))
        s = await case.make(t).stream(case.deployment(), case.request, timeout_s=5)
        out = await drain(s)
        assert s.status.completed and s.status.error is None
        assert END_MARKER[case.client] in out
        assert t.responses[0].outcome == "reused"

    run(main())


@every_adapter
def test_a_stream_abandoned_by_the_relay_closes_its_response(case):
    async def main():
        t = MemoryTransport(lambda r: Reply.sse([*STREAM_START[case.upstream], HANG]))
        s = await case.make(t).stream(case.deployment(), case.request, timeout_s=5)
        s.close()  # the client hung up after the first event
        assert t.responses[0].outcome == "closed"

    run(main())
