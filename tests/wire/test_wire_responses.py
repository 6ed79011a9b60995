"""Non-streaming response translation: golden pairs, stop-reason maps, SDK validation."""

from __future__ import annotations

import orjson
import pytest
from wire_helpers import (
    anthropic_client,
    fixture_names,
    load,
    openai_client,
    parsed_arguments,
)

from tiergate.adapters.translate_responses import (
    ANTHROPIC_TO_OPENAI_STOP,
    OPENAI_TO_ANTHROPIC_STOP,
    anthropic_to_openai_response,
    openai_to_anthropic_response,
)


@pytest.mark.parametrize("name", fixture_names("resp_openai_"))
def test_openai_to_anthropic_golden(name):
    fx = load(name)
    out = openai_to_anthropic_response(fx["openai"], model=fx["model"])
    assert out == fx["anthropic"]


@pytest.mark.parametrize("name", fixture_names("resp_anthropic_"))
def test_anthropic_to_openai_golden(name):
    fx = load(name)
    out = anthropic_to_openai_response(fx["anthropic"], model=fx["model"])
    assert isinstance(out.pop("created"), int)
    assert parsed_arguments(out) == parsed_arguments(fx["openai"])


@pytest.mark.parametrize("name", fixture_names("resp_"))
def test_produced_responses_validate_with_the_sdks(name):
    from anthropic.types import Message
    from openai.types.chat import ChatCompletion

    fx = load(name)
    if "resp_openai_" in name:
        out = openai_to_anthropic_response(fx["openai"], model=fx["model"])
        message = Message.model_validate(out)
        # and through the SDK's own client, as a client of the gateway would see it
        sdk = anthropic_client(orjson.dumps(out), "application/json").messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        assert sdk.model_dump() == message.model_dump()
    else:
        out = anthropic_to_openai_response(fx["anthropic"], model=fx["model"])
        completion = ChatCompletion.model_validate(out)
        sdk = openai_client(orjson.dumps(out), "application/json").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert sdk.model_dump() == completion.model_dump()


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        ("function_call", "tool_use"),
        (None, "end_turn"),
        ("weird", "end_turn"),
    ],
)
def test_openai_finish_reason_to_stop_reason(finish, stop):
    obj = {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": finish}],
    }
    assert openai_to_anthropic_response(obj, model="m")["stop_reason"] == stop


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_anthropic_stop_reason_to_finish_reason(stop, finish):
    assert ANTHROPIC_TO_OPENAI_STOP[stop] == finish
    content = [{"type": "tool_use", "id": "t", "name": "f", "input": {}}] if stop == "tool_use" else []
    obj = {"id": "msg_1", "content": content, "stop_reason": stop, "usage": {"input_tokens": 1, "output_tokens": 1}}
    assert anthropic_to_openai_response(obj, model="m")["choices"][0]["finish_reason"] == finish


def test_stop_maps_cover_both_vocabularies():
    from typing import get_args

    from anthropic.types import StopReason
    from openai.types.chat.chat_completion import Choice

    assert set(ANTHROPIC_TO_OPENAI_STOP) == set(get_args(StopReason))
    finish_reasons = set(get_args(Choice.model_fields["finish_reason"].annotation))
    assert set(OPENAI_TO_ANTHROPIC_STOP) == finish_reasons
    assert set(OPENAI_TO_ANTHROPIC_STOP.values()) <= set(get_args(StopReason))
    assert set(ANTHROPIC_TO_OPENAI_STOP.values()) <= finish_reasons


def test_tool_calls_with_finish_stop_still_mean_tool_use():
    """Several OpenAI-compatible servers report finish_reason "stop" after tool calls."""
    obj = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "not json"}}
                    ],
                },
            }
        ],
    }
    out = openai_to_anthropic_response(obj, model="m")
    assert out["stop_reason"] == "tool_use"
    assert out["content"] == [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]


def test_refusal_becomes_text_with_refusal_stop():
    obj = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
            }
        ],
    }
    out = openai_to_anthropic_response(obj, model="m")
    assert out["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert out["stop_reason"] == "refusal"


def test_server_tool_only_turn_is_not_tool_calls():
    obj = {
        "id": "msg_1",
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 3, "output_tokens": 4},
        "content": [{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}],
    }
    out = anthropic_to_openai_response(obj, model="m")
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["choices"][0]["message"]["content"] == ""


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "body: must be a JSON object"),
        ({"choices": []}, "choices: must be a non-empty array"),
        ({"choices": [{"message": "hi"}]}, "choices[0].message: must be an object"),
        ({"choices": [{"message": {"tool_calls": [{"function": {}}]}}]}, "choices[0].message.tool_calls[0].function"),
    ],
)
def test_openai_response_errors(obj, message):
    with pytest.raises(ValueError) as err:
        openai_to_anthropic_response(obj, model="m")
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"content": "hi"}, "content: must be an array"),
        ({"content": [{"type": "tool_use", "input": {}}]}, "content[0]: tool_use needs an id and a name"),
    ],
)
def test_anthropic_response_errors(obj, message):
    with pytest.raises(ValueError) as err:
        anthropic_to_openai_response(obj, model="m")
    assert str(err.value).startswith(message)
