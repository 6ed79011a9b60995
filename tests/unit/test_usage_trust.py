"""Usage an upstream reports is believed only when plausible; abandoned streams are billed for their output.

Issue 14: ``prompt_tokens: 1e300`` overflowed the ledger writer and a
budget, ``-100000`` recorded a negative cost and handed budget back,
``"abc"`` turned an answered request into a 500 with no row, and a stream
the client left after 50, 200 or 500 content events was billed at zero
output. Every adapter (and both translations) is driven through
MemoryTransport; the last tests run the whole pipeline to the ledger row.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_upstream_bounds import (
    BLOCK_START,
    CASES,
    MESSAGE_START,
    REQUEST,
    anthropic_delta,
    deployment,
    drain,
    every_adapter,
    openai_chunk,
    run,
)

from pipeline_harness import build, raw_config
from tiergate.adapters.memory_transport import HANG, MemoryTransport, Reply
from tiergate.adapters.usage import (
    StreamMeter,
    anthropic_event_bytes,
    anthropic_reported,
    openai_chunk_bytes,
    openai_reported,
    plain_content_bytes,
    text_bytes,
)
from tiergate.core.errors import AttemptError
from tiergate.core.money import believable_tokens, estimate_output_tokens, usage_bound
from tiergate.core.types import Identity, RequestFeatures, Usage
from tiergate.pipeline.service import PipelineRequest

BOUND = usage_bound(8000, None)  # the test deployment's: 4 x 8000 + 8000
ABSURD = [1e300, -100000, "abc", None, True, {"n": 1}, [3], 10**12, 10**30, 12.0, float("nan")]
ABSURD_IDS = ["1e300", "negative", "string", "null", "true", "object", "array", "10**12", "10**30", "float", "nan"]


def test_believable_tokens_table():
    assert [believable_tokens(v, 100) for v in (0, 7, 100)] == [0, 7, 100]
    assert [believable_tokens(v, 100) for v in (101, -1, True, False, 7.0, "7", None, [7], {"v": 7})] == [None] * 9


def test_estimates_count_bytes_and_at_least_a_token_per_content_event():
    assert estimate_output_tokens(0) == 0 and estimate_output_tokens(1) == 1 and estimate_output_tokens(8) == 2
    assert estimate_output_tokens(10, content_events=9) == 9  # single-character deltas are still tokens
    reply = {
        "choices": [
            {
                "message": {"content": "abcd" * 3, "tool_calls": [{"function": {"name": "f", "arguments": '{"a":1}'}}]},
                "logprobs": {"content": [{"token": "zzzz", "bytes": [1]}]},
            }
        ]
    }
    assert text_bytes(reply) == 12 + 1 + 7  # logprob tokens are not output twice
    blocks = [{"type": "text", "text": "é"}, {"type": "tool_use", "name": "go", "input": {"x": 1}}]
    assert text_bytes(blocks) == 2 + 2 + len(b'{"x":1}')
    chunk = {
        "choices": [
            {
                "delta": {
                    "content": "caf\u00e9",
                    "reasoning_content": "ab",
                    "tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}],
                }
            }
        ]
    }
    assert openai_chunk_bytes(chunk) == 5 + 2 + 1 + 2 and openai_chunk_bytes({"choices": "x"}) == 0
    assert anthropic_event_bytes(anthropic_delta("abc")) == 3 and anthropic_event_bytes({"delta": "x"}) == 0
    tool = {"type": "content_block_start", "content_block": {"type": "tool_use", "name": "go", "input": {}}}
    assert anthropic_event_bytes(tool) == 2 + 2
    deep: Any = {"text": "x"}
    for _ in range(5000):  # nesting a recursive walk could not survive
        deep = {"content": [deep]}
    assert text_bytes(deep) == 1


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(),
    extra=st.sampled_from([{}, {"role": "assistant"}, {"reasoning_content": "hm"}, {"tool_calls": []}]),
    choices=st.integers(1, 2),
    spaced=st.booleans(),
)
def test_the_unparsed_content_count_agrees_with_the_parsed_one_or_steps_aside(text, extra, choices, spaced):
    chunk = {
        **openai_chunk(text),
        "choices": [{"index": i, "delta": {"content": text, **extra}} for i in range(choices)],
    }
    ev = b"data: " + (json.dumps(chunk).encode() if spaced else orjson.dumps(chunk)) + b"\n\n"
    fast = plain_content_bytes(ev)
    assert fast is None or fast == openai_chunk_bytes(chunk)
    if not extra and choices == 1 and not spaced and text.isalnum():
        assert fast == len(text.encode())  # the common case is taken without parsing


@pytest.mark.parametrize("value", ABSURD, ids=ABSURD_IDS)
def test_reported_usage_refuses_what_cannot_be_believed(value):
    assert openai_reported({"prompt_tokens": value, "completion_tokens": 5}, BOUND)[:2] == (None, 5)
    assert openai_reported({"prompt_tokens": 5, "completion_tokens": value}, BOUND)[:2] == (5, None)
    details = {"prompt_tokens": 5, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": value}}
    assert openai_reported(details, BOUND)[:2] == ((5, 5) if value is None else (None, 5))
    assert anthropic_reported({"input_tokens": value, "output_tokens": 5}, BOUND)[:2] == (None, 5)
    caches = {"input_tokens": 5, "output_tokens": 5, "cache_read_input_tokens": value}
    assert anthropic_reported(caches, BOUND)[:2] == ((5, 5) if value is None else (None, 5))


def test_cached_tokens_beyond_the_prompt_and_caches_summing_past_the_bound_are_refused():
    assert (
        openai_reported(
            {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 6}}, BOUND
        ).prompt
        is None
    )
    big = {"input_tokens": BOUND, "cache_read_input_tokens": BOUND, "output_tokens": 1}
    assert anthropic_reported(big, BOUND).prompt is None


def reply_with_usage(case, field: str, value: Any) -> bytes:
    """A documented-shape reply whose usage ``field`` ("prompt"/"completion") holds ``value``."""
    if case.upstream == "openai":
        usage = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
        usage["prompt_tokens" if field == "prompt" else "completion_tokens"] = value
        text = {"role": "assistant", "content": "Hello there, how may I assist you today?"}
        obj: dict[str, Any] = {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": text, "finish_reason": "stop"}],
            "usage": usage,
        }
    else:
        usage = {"input_tokens": 9, "output_tokens": 12}
        usage["input_tokens" if field == "prompt" else "output_tokens"] = value
        obj = {
            "id": "msg",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "stop_reason": "end_turn",
            "content": [{"type": "text", "text": "Hello there, how may I assist you today?"}],
            "usage": usage,
        }
    return json.dumps(obj).encode()  # the stdlib writes 10**30 and NaN, as a careless upstream would


def sane(usage: Usage, d) -> None:
    assert 0 <= usage.prompt_tokens <= BOUND and 0 <= usage.completion_tokens <= BOUND
    assert isinstance(usage.prompt_tokens, int) and isinstance(usage.completion_tokens, int)
    cost = d.cost(usage.prompt_tokens, usage.completion_tokens)
    assert math.isfinite(cost) and cost >= 0


@every_adapter
@pytest.mark.parametrize("field", ["prompt", "completion"])
@pytest.mark.parametrize("value", ABSURD, ids=ABSURD_IDS)
def test_absurd_usage_in_a_plain_reply_is_counted_locally_and_the_answer_still_given(case, field, value):
    raw = reply_with_usage(case, field, value)

    async def main():
        t = MemoryTransport(lambda r: Reply.json(raw))
        d = deployment(case.api)
        if b"NaN" in raw:  # not JSON at all: a protocol failure (fail over), never a crash
            with pytest.raises(AttemptError) as e:
                await case.make(t).complete(d, REQUEST, timeout_s=5)
            assert e.value.kind == "protocol"
            return
        reply = await case.make(t).complete(d, REQUEST, timeout_s=5)
        assert reply.body and reply.usage.estimated
        sane(reply.usage, d)
        if field == "prompt":
            assert reply.usage.completion_tokens == 12  # the figure that could be believed is kept
            assert reply.usage.prompt_tokens == len(t.requests[0].body) // 4  # counted from the request sent
        else:
            assert reply.usage.prompt_tokens == 9
            assert reply.usage.completion_tokens == estimate_output_tokens(
                len(b"Hello there, how may I assist you today?")
            )
        assert "usage not believed" in " ".join(reply.notes)

    run(main())


def stream_with_usage(case, field: str, value: Any) -> list[Any]:
    """A whole stream whose usage figure ``field`` holds ``value`` (the usage chunk; message_start/_delta)."""
    words = [case.content(w) for w in ("Hello", " there", ", friend")]
    if case.upstream == "openai":
        usage = {"prompt_tokens": 9, "completion_tokens": 3}
        usage["prompt_tokens" if field == "prompt" else "completion_tokens"] = value
        return [openai_chunk(role=True), *words, {**openai_chunk("x"), "choices": [], "usage": usage}, "[DONE]"]
    start = orjson.loads(orjson.dumps(MESSAGE_START))
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}
    if field == "prompt":
        start["message"]["usage"]["input_tokens"] = value
    else:
        delta["usage"]["output_tokens"] = value
    return [start, BLOCK_START, *words, delta, {"type": "message_stop"}]


@every_adapter
@pytest.mark.parametrize("field", ["prompt", "completion"])
@pytest.mark.parametrize("value", [*ABSURD[:6], 10**12], ids=[*ABSURD_IDS[:6], "10**12"])
def test_absurd_usage_in_a_stream_is_counted_locally(case, field, value):
    async def main():
        t = MemoryTransport(lambda r: Reply.sse(stream_with_usage(case, field, value)))
        d = deployment(case.api)
        s = await case.make(t).stream(d, {**REQUEST, "stream": True}, timeout_s=5)
        out = await drain(s)
        assert s.status.completed and case.end_marker in out  # the client got its whole answer
        assert s.usage.estimated
        sane(s.usage, d)
        produced = estimate_output_tokens(len(b"Hello there, friend"), 3)
        if field == "prompt":
            assert s.usage.completion_tokens == 3
        else:
            assert s.usage.completion_tokens == produced
            assert s.usage.prompt_tokens == (9 if case.upstream == "openai" else 25)

    run(main())


@every_adapter
def test_believable_stream_usage_is_taken_as_reported(case):
    async def main():
        t = MemoryTransport(lambda r: Reply.sse(stream_with_usage(case, "completion", 3)))
        s = await case.make(t).stream(deployment(case.api), {**REQUEST, "stream": True}, timeout_s=5)
        await drain(s)
        want_prompt = 9 if case.upstream == "openai" else 25
        assert (s.usage.prompt_tokens, s.usage.completion_tokens, s.usage.estimated) == (want_prompt, 3, False)

    run(main())


MALFORMED_FIRST = [
    {"type": "message_start", "message": ["not", "an", "object"]},
    {"type": "message_start", "message": "msg"},
    {"type": "error", "error": "Overloaded"},
    {"type": "error", "error": ["Overloaded"]},
    {"type": "error"},
    [1, 2],
    {"no": "type"},
]


@pytest.mark.parametrize("case", [c for c in CASES if c.upstream == "anthropic"], ids=lambda c: c.name)
@pytest.mark.parametrize("first", MALFORMED_FIRST, ids=[f"shape{i}" for i in range(len(MALFORMED_FIRST))])
def test_a_malformed_first_anthropic_event_is_a_failed_attempt_not_a_crash(case, first):
    async def main():
        t = MemoryTransport(lambda r: Reply.sse([first, BLOCK_START, HANG]))
        with pytest.raises(AttemptError) as e:  # an AttributeError here escaped the executor: no failover
            await case.make(t).stream(deployment(case.api), {**REQUEST, "stream": True}, timeout_s=5)
        if isinstance(first, dict) and first.get("type") == "error":
            assert e.value.status == 529 and e.value.retryable
        assert t.responses[0].outcome == "closed"

    run(main())


@pytest.mark.parametrize("case", [c for c in CASES if c.upstream == "anthropic"], ids=lambda c: c.name)
def test_malformed_anthropic_events_midway_end_the_stream_without_raising(case):
    odd = [
        {"type": "message_delta", "usage": "abc", "delta": []},
        {"type": "message_delta", "usage": {"output_tokens": {"n": 1}}},
        {"type": "content_block_delta", "index": 0, "delta": "text"},
        {"type": "error", "error": "Overloaded"},
    ]

    async def main():
        t = MemoryTransport(lambda r: Reply.sse([MESSAGE_START, BLOCK_START, anthropic_delta("Hi"), *odd]))
        s = await case.make(t).stream(deployment(case.api), {**REQUEST, "stream": True}, timeout_s=5)
        await drain(s)
        assert not s.status.completed and s.status.error is not None
        assert s.usage.completion_tokens >= 1 and s.usage.estimated

    run(main())


# -- streams the client abandons


@every_adapter
@pytest.mark.parametrize("n", [50, 200, 500])
def test_an_abandoned_stream_is_billed_for_the_output_received(case, n):
    """The client hangs up after n content events; the upstream's usage never comes."""

    async def main():
        t = MemoryTransport(lambda r: Reply.sse([*case.start(), *(case.content("word ") for _ in range(n)), HANG]))
        d = deployment(case.api)
        s = await case.make(t).stream(d, {**REQUEST, "stream": True}, timeout_s=30)
        relayed = 0
        wanted = n + (1 if case.name == "anthropic-messages" else 0)  # the native pass-through relays block_start
        async for _ in s.rest:
            relayed += 1
            if relayed == wanted:
                break
        s.close()  # the relay, when its client hangs up
        assert s.usage.completion_tokens == estimate_output_tokens(5 * n, n)
        assert s.usage.estimated and s.usage.prompt_tokens > 0
        assert d.cost(s.usage.prompt_tokens, s.usage.completion_tokens) > d.cost(s.usage.prompt_tokens, 0)
        assert t.responses[0].outcome == "closed"

    run(main())


def test_the_meter_keeps_an_upstream_count_once_it_arrives_and_estimates_until_then():
    usage = Usage(10, 0, estimated=True)
    meter = StreamMeter(usage, BOUND)
    for _ in range(3):
        meter.content(openai_chunk_bytes({"choices": [{"delta": {"content": "abcdefgh"}}]}))
    assert (usage.completion_tokens, usage.estimated) == (6, True)
    meter.reported(openai_reported({"prompt_tokens": 4, "completion_tokens": 5}, BOUND))
    assert (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (4, 5, False)
    meter.content(4)
    assert usage.completion_tokens == 5  # a believed count is not overwritten by the estimate


# -- through the whole pipeline, to the ledger row


async def open_stream(h, model: str):
    req = PipelineRequest(
        request_id="req-abandoned",
        identity=Identity(key_name="k"),
        features=RequestFeatures(model=model, prompt_tokens_est=40, stream=True),
        body={"model": model, "stream": True, "messages": [{"role": "user", "content": "Say hello"}]},
        protocol="openai-chat",
        started=time.perf_counter(),
    )
    return await h.pipeline.open(req)


@pytest.mark.parametrize("n", [50, 200, 500])
def test_an_abandoned_stream_s_row_has_status_499_its_output_tokens_and_their_cost(n):
    h = build(raw_config(budgets=[{"scope": "global", "window": "day", "limit_usd": 5.0}]))
    h.script("cheap", Reply.sse([openai_chunk(role=True), *(openai_chunk("word ") for _ in range(n)), HANG]))

    async def main():
        answer = await open_stream(h, "cheap")
        s = answer.stream
        seen = 0
        async for _ in s.rest:
            seen += 1
            if seen == n:
                break
        s.close()
        await answer.finish(status=499, ttft_ms=1.0, error="client closed the connection")
        return await h.spent_total()

    spent = run(main())
    row = h.ledger.usage("request")[-1]
    d = h.catalog.deployments["cheap"]
    assert (row.status, row.completion_tokens, row.usage_estimated) == (499, estimate_output_tokens(5 * n, n), True)
    assert row.cost_usd == pytest.approx(d.cost(row.prompt_tokens, row.completion_tokens))
    assert row.cost_usd > d.cost(row.prompt_tokens, 0) and spent == pytest.approx(row.cost_usd)


@pytest.mark.parametrize("value", [1e300, -100000, "abc", None, True, {"n": 1}], ids=ABSURD_IDS[:6])
def test_absurd_usage_never_reaches_the_budget_or_the_ledger(value):
    h = build(raw_config(budgets=[{"scope": "global", "window": "day", "limit_usd": 5.0}]))
    bad = {
        "id": "c",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": value, "completion_tokens": value},
    }
    h.script("cheap", Reply.json(bad))

    async def main():
        await h.ask(model="cheap")
        after_bad = await h.spent_total()
        answer, status = await h.ask(model="cheap")  # the next request is served: no budget blown or made negative
        return after_bad, status

    after_bad, status = run(main())
    row = h.ledger.usage("request")[0]
    assert status == 200 and row.status == 200 and row.usage_estimated
    assert 0 <= row.cost_usd < 0.001 and math.isfinite(row.cost_usd) and 0 <= after_bad < 0.001
    assert 0 <= row.prompt_tokens < 1000 and 0 <= row.completion_tokens < 1000


@pytest.mark.parametrize(("prompt", "believed"), [(8, True), (1e300, False), (-5, False), ("8", False)])
def test_embeddings_usage_is_checked_too_and_never_has_output(prompt, believed):
    from tiergate.adapters.openai_chat import OpenAIEmbeddingsAdapter

    served = {
        "object": "list",
        "data": [{"object": "embedding", "embedding": [0.1, -0.2], "index": 0}],
        "model": "m",
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }

    async def main():
        t = MemoryTransport(lambda r: Reply.json(json.dumps(served).encode()))
        reply = await OpenAIEmbeddingsAdapter(t).complete(deployment("openai-chat"), {"input": "hi"}, timeout_s=5)
        assert reply.usage.completion_tokens == 0  # a vector is not output to bill
        assert reply.usage.estimated is not believed
        assert reply.usage.prompt_tokens == (8 if believed else len(t.requests[0].body) // 4)

    run(main())
