"""Stream translation: golden transcripts, and the official SDKs consuming what we produce."""

from __future__ import annotations

import orjson
import pytest
from wire_helpers import (
    FIXTURES,
    anthropic_client,
    anthropic_events,
    load,
    openai_client,
    openai_events,
    split_events,
)

from tiergate.adapters.translate_streams import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
)


def _to_anthropic(sse_name: str, **params) -> tuple[bytes, OpenAIToAnthropicStream]:
    stream = OpenAIToAnthropicStream(**params)
    out = b"".join(stream.feed(event) for event in split_events((FIXTURES / sse_name).read_bytes()))
    return out + stream.finish(), stream


def _to_openai(sse_name: str, **params) -> tuple[bytes, AnthropicToOpenAIStream]:
    stream = AnthropicToOpenAIStream(**params)
    out = b"".join(stream.feed(event) for event in split_events((FIXTURES / sse_name).read_bytes()))
    return out + stream.finish(), stream


@pytest.mark.parametrize("name", ["openai_stream_text", "openai_stream_parallel_tools"])
def test_openai_to_anthropic_golden(name):
    expected = load(f"{name}.expected.json")
    out, stream = _to_anthropic(f"{name}.sse", **expected["params"])
    assert anthropic_events(out) == expected["events"]
    if "usage" in expected:
        assert list(stream.usage) == expected["usage"]


def test_anthropic_to_openai_golden():
    expected = load("anthropic_stream_thinking_tool.expected.json")
    out, stream = _to_openai("anthropic_stream_thinking_tool.sse", **expected["params"])
    chunks = openai_events(out)
    created = {c.pop("created") for c in chunks if c != "[DONE]"}
    assert len(created) == 1  # every chunk of one completion shares its timestamp
    assert chunks == expected["chunks"]
    assert list(stream.usage) == expected["usage"]


@pytest.mark.parametrize("name", ["openai_stream_text", "openai_stream_parallel_tools"])
def test_anthropic_sdk_accumulates_our_stream(name):
    """The official anthropic SDK's MessageStream reads our bytes into a final Message."""
    expected = load(f"{name}.expected.json")
    out, _ = _to_anthropic(f"{name}.sse", **expected["params"])
    client = anthropic_client(out)
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
        kinds = [event.type for event in s]
        message = s.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert message.id == expected["params"]["message_id"]
    if "final_message" in expected:
        final = expected["final_message"]
        assert [b.model_dump(exclude_none=True) for b in message.content] == final["content"]
        assert message.stop_reason == final["stop_reason"]
        assert message.usage.model_dump(exclude_none=True) == final["usage"]
    else:
        assert message.content[0].text == "Hello! How can I assist you today?"
        assert message.stop_reason == "end_turn"


def test_openai_sdk_accumulates_our_stream():
    """Every chunk validates as ChatCompletionChunk, and the SDK's stream helper assembles them."""
    from openai.types.chat import ChatCompletionChunk

    expected = load("anthropic_stream_thinking_tool.expected.json")
    out, _ = _to_openai("anthropic_stream_thinking_tool.sse", **expected["params"])
    for chunk in openai_events(out)[:-1]:
        ChatCompletionChunk.model_validate(chunk)
    client = openai_client(out)
    with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "hi"}]) as s:
        for _ in s:
            pass
        completion = s.get_final_completion()
    choice = completion.choices[0]
    assert choice.message.content == "Okay, let's check the weather for San Francisco, CA:"
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name) == ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    assert orjson.loads(call.function.arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (472, 89)


def test_finish_is_idempotent_and_done_calls_it():
    stream = OpenAIToAnthropicStream(model="m", message_id="msg_1")
    first = stream.feed(b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n')
    done = stream.feed(b"data: [DONE]\n\n")
    assert [e[0] for e in anthropic_events(first + done)] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert stream.finish() == b"" and stream.feed(b'data: {"choices":[]}\n\n') == b""

    back = AnthropicToOpenAIStream(model="m", completion_id="chatcmpl-1", include_usage=False)
    once = back.finish()
    assert back.finish() == b""
    assert openai_events(once)[-1] == "[DONE]"


def test_upstream_ending_without_done():
    """No [DONE], no finish_reason, nothing at all: finish() still closes a valid stream."""
    stream = OpenAIToAnthropicStream(model="m", message_id="msg_empty", input_tokens_estimate=7)
    events = anthropic_events(stream.finish())
    assert [e[0] for e in events] == ["message_start", "message_delta", "message_stop"]
    assert events[0][1]["message"]["usage"] == {"input_tokens": 7, "output_tokens": 0}
    assert stream.usage == (7, 0)

    back = AnthropicToOpenAIStream(model="m", completion_id="chatcmpl-2", include_usage=True)
    text = back.feed(
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"cut"}}\n\n'
    )
    chunks = openai_events(text + back.finish())
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "cut"}
    assert chunks[2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[3]["choices"] == [] and chunks[3]["usage"]["total_tokens"] == 0
    assert chunks[4] == "[DONE]"


def test_text_after_tool_call_opens_a_new_block_and_usage_in_finish_chunk():
    stream = OpenAIToAnthropicStream(model="m", message_id="msg_2")
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me look."}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "c0", "type": "function", "function": {"name": "a", "arguments": "{}"}},
                            {
                                "index": 1,
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "b", "arguments": '{"x":1}'},
                            },
                        ]
                    },
                }
            ]
        },
        {
            "choices": [{"index": 0, "delta": {"content": "Done."}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        },
    ]
    out = b"".join(stream.feed(b"data: " + orjson.dumps(c) + b"\n\n") for c in chunks) + stream.finish()
    events = anthropic_events(out)
    starts = [(e[1]["index"], e[1]["content_block"]["type"]) for e in events if e[0] == "content_block_start"]
    assert starts == [(0, "text"), (1, "tool_use"), (2, "tool_use"), (3, "text")]
    opened = []
    for name, data in events:  # blocks never overlap
        if name == "content_block_start":
            assert not opened
            opened.append(data["index"])
        elif name == "content_block_stop":
            assert opened.pop() == data["index"]
        elif name == "content_block_delta":
            assert opened == [data["index"]]
    assert events[-2][1]["usage"] == {"output_tokens": 5, "input_tokens": 10, "cache_read_input_tokens": 0}
    assert stream.usage == (10, 5)


def test_tool_calls_without_index_are_told_apart_by_id():
    stream = OpenAIToAnthropicStream(model="m", message_id="msg_3")
    deltas = [
        {"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": '{"q":'}}]},
        {"tool_calls": [{"function": {"arguments": "1}"}}]},
        {"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]},
    ]
    out = (
        b"".join(
            stream.feed(b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": d}]}) + b"\n\n") for d in deltas
        )
        + stream.finish()
    )
    events = anthropic_events(out)
    starts = [e[1]["content_block"]["id"] for e in events if e[0] == "content_block_start"]
    fragments = [(e[1]["index"], e[1]["delta"]["partial_json"]) for e in events if e[0] == "content_block_delta"]
    assert starts == ["a", "b"]
    assert fragments == [(0, '{"q":'), (0, "1}"), (1, "{}")]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_errors_inside_streams():
    stream = OpenAIToAnthropicStream(model="m", message_id="msg_4")
    events = anthropic_events(stream.feed(b'data: {"error":{"message":"boom","type":"server_error"}}\n\n'))
    assert events[-1] == ["error", {"type": "error", "error": {"type": "api_error", "message": "boom"}}]
    assert stream.finish() == b""

    back = AnthropicToOpenAIStream(model="m", completion_id="chatcmpl-3", include_usage=False)
    out = back.feed(
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    assert openai_events(out) == [
        {"error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}}
    ]
    assert back.finish() == b""

    with pytest.raises(ValueError, match="stream: invalid JSON"):
        OpenAIToAnthropicStream(model="m", message_id="x").feed(b"data: {nope\n\n")
    with pytest.raises(ValueError, match="not a JSON object"):
        AnthropicToOpenAIStream(model="m", completion_id="x", include_usage=False).feed(b"data: [1]\n\n")


def test_crlf_comments_and_keepalives_are_tolerated():
    stream = OpenAIToAnthropicStream(model="m", message_id="msg_5")
    assert stream.feed(b": keep-alive\r\n\r\n") == b""
    out = stream.feed(b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\r\n\r\n')
    assert anthropic_events(out)[-1][1]["delta"] == {"type": "text_delta", "text": "x"}

    back = AnthropicToOpenAIStream(model="m", completion_id="c", include_usage=False)
    assert back.feed(b'event: ping\r\ndata: {"type": "ping"}\r\n\r\n') == b""


def test_anthropic_usage_counts_cache_tokens_as_prompt():
    back = AnthropicToOpenAIStream(model="m", completion_id="c", include_usage=True)
    back.feed(
        b'data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
        b'"content":[],"model":"x","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,'
        b'"cache_creation_input_tokens":100,"cache_read_input_tokens":900,"output_tokens":1}}}\n\n'
    )
    out = back.feed(
        b'data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},'
        b'"usage":{"output_tokens":42}}\n\n'
    ) + back.feed(b'data: {"type":"message_stop"}\n\n')
    chunks = openai_events(out)
    assert chunks[0]["choices"][0]["finish_reason"] == "length"
    assert chunks[1]["usage"] == {
        "prompt_tokens": 1003,
        "completion_tokens": 42,
        "total_tokens": 1045,
        "prompt_tokens_details": {"cached_tokens": 900},
    }
    assert back.usage == (1003, 42)
