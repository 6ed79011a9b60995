"""Malformed JSON values where a translator expects a string or an integer.

A list or an object where a stop reason, a block index or a tool_choice type
should be used to reach a dict lookup and raise TypeError (unhashable), which
escaped the ValueError handling: a 500 instead of a 400, or a crash instead of
a protocol error. Non-string stop reasons now read as absent, which is what any
other unknown value already did; a non-integer tool block index is a malformed
event (ValueError).
"""

from __future__ import annotations

import orjson
import pytest
from wire_helpers import anthropic_events, openai_events

from tiergate.adapters.translate_requests import anthropic_to_openai_request
from tiergate.adapters.translate_responses import anthropic_to_openai_response, openai_to_anthropic_response
from tiergate.adapters.translate_streams import AnthropicToOpenAIStream, OpenAIToAnthropicStream

UNHASHABLE = [["stop"], {"x": 1}]


def _data(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


@pytest.mark.parametrize("finish", UNHASHABLE)
def test_response_finish_reason_not_a_string(finish):
    obj = {"id": "x", "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": finish}]}
    assert openai_to_anthropic_response(obj, model="m")["stop_reason"] == "end_turn"


@pytest.mark.parametrize("stop", UNHASHABLE)
def test_response_stop_reason_not_a_string(stop):
    obj = {"id": "msg_1", "content": [{"type": "text", "text": "hi"}], "stop_reason": stop}
    assert anthropic_to_openai_response(obj, model="m")["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("finish", UNHASHABLE)
def test_stream_finish_reason_not_a_string(finish):
    stream = OpenAIToAnthropicStream(model="m", message_id="msg_1")
    out = stream.feed(_data({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": finish}]}))
    events = anthropic_events(out + stream.finish())
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"


@pytest.mark.parametrize("stop", UNHASHABLE)
def test_stream_stop_reason_not_a_string(stop):
    stream = AnthropicToOpenAIStream(model="m", completion_id="c", include_usage=False)
    out = stream.feed(_data({"type": "message_delta", "delta": {"stop_reason": stop}}))
    assert openai_events(out)[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("index", [[0], {"i": 0}, "0"])
def test_stream_tool_block_index_not_an_integer(index):
    stream = AnthropicToOpenAIStream(model="m", completion_id="c", include_usage=False)
    start = {
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
    }
    with pytest.raises(ValueError, match="index"):
        stream.feed(_data(start))


@pytest.mark.parametrize("index", [[0], {"i": 0}, "0"])
def test_stream_tool_delta_index_not_an_integer(index):
    stream = AnthropicToOpenAIStream(model="m", completion_id="c", include_usage=False)
    stream.feed(
        _data(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
            }
        )
    )
    delta = {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": "{}"}}
    with pytest.raises(ValueError, match="index"):
        stream.feed(_data(delta))


@pytest.mark.parametrize("index", [{}, {"index": None}])
def test_stream_tool_block_without_index_still_starts_a_call(index):
    stream = AnthropicToOpenAIStream(model="m", completion_id="c", include_usage=False)
    block = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    out = stream.feed(_data({"type": "content_block_start", **index, "content_block": block}))
    assert openai_events(out)[-1]["choices"][0]["delta"]["tool_calls"][0] == {
        "index": 0,
        "id": "t1",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }


@pytest.mark.parametrize("kind", UNHASHABLE)
def test_request_tool_choice_type_not_a_string(kind):
    body = {
        "model": "x",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": kind},
    }
    with pytest.raises(ValueError, match=r"^tool_choice\.type: unknown tool_choice"):
        anthropic_to_openai_request(body, model="m")


def test_response_prompt_tokens_details_not_an_object():
    obj = {
        "id": "x",
        "choices": [{"index": 0, "message": {"content": "hi"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "prompt_tokens_details": [1]},
    }
    usage = openai_to_anthropic_response(obj, model="m")["usage"]
    assert usage["input_tokens"] == 3 and usage["cache_read_input_tokens"] == 0


def test_response_text_block_not_a_string():
    obj = {"id": "msg_1", "content": [{"type": "text", "text": 5}]}
    with pytest.raises(ValueError, match=r"^content\[0\]\.text: must be a string"):
        anthropic_to_openai_response(obj, model="m")
