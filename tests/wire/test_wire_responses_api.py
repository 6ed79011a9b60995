"""The Responses translation on the wire, checked against the openai SDK's own types (generated from OpenAI's spec).

Chat-side inputs are the documented chat examples already in fixtures/; every
Responses event and object the translators write is validated strictly by the
SDK's pydantic models (no extra keys, no missing required field), and the
event order is the documented one.
"""

from __future__ import annotations

import json
import typing

import orjson
import pydantic
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseStreamEvent
from wire_helpers import FIXTURES, split_events

from tiergate.adapters.responses_reply import chat_to_response
from tiergate.adapters.responses_request import ToolNames, responses_to_chat
from tiergate.adapters.responses_stream import ChatToResponsesStream

# event type -> the SDK's model of it (the union's discriminator is the SDK's own, not pydantic's)
EVENT_MODELS = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}


class _Events:
    @staticmethod
    def model_validate(obj: dict) -> pydantic.BaseModel:
        return EVENT_MODELS[obj["type"]].model_validate(obj)


EVENT = _Events

# the function-calling guide's get_weather tool, in the Responses shape
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get current temperature for a given location.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "City and country e.g. Bogotá, Colombia"}},
        "required": ["location"],
        "additionalProperties": False,
    },
    "strict": True,
}


def _strict(model: typing.Any, obj: dict) -> None:
    """Validate, then check no key was unknown to the model anywhere (the SDK allows extras)."""
    parsed = model.model_validate(obj)
    assert not _extras(parsed), _extras(parsed)


def _extras(m: object, path: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(m, pydantic.BaseModel):
        out += [f"{path}.{k}" for k in (m.model_extra or {})]
        for name in type(m).model_fields:
            out += _extras(getattr(m, name), f"{path}.{name}")
    elif isinstance(m, list):
        for i, v in enumerate(m):
            out += _extras(v, f"{path}[{i}]")
    return out


def _events(data: bytes) -> list[dict]:
    out = []
    for ev in split_events(data):
        lines = ev.decode().strip().split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: ")
        obj = json.loads(lines[1][6:])
        assert obj["type"] == lines[0][7:]
        out.append(obj)
    return out


def _translate_stream(name: str, request: dict, names: ToolNames | None = None) -> list[dict]:
    conv = ChatToResponsesStream(request=request, names=names or ToolNames(), model="gpt-4o", response_id="resp_1")
    raw = b"".join(conv.feed(ev) for ev in split_events((FIXTURES / name).read_bytes())) + conv.finish()
    return _events(raw)


def test_documented_text_stream_becomes_the_documented_event_sequence():
    events = _translate_stream("openai_stream_text.sse", {"model": "gpt-4o", "input": "Hi"})
    for e in events:
        _strict(EVENT, e)
    kinds = [e["type"] for e in events]
    deltas = kinds.count("response.output_text.delta")
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert deltas >= 2
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == text
    assert done["output"][0] == events[-2]["item"]  # the final output repeats the item as done carried it
    item_ids = {e.get("item_id") for e in events if "item_id" in e}
    assert item_ids == {done["output"][0]["id"]}
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []


def test_documented_parallel_tool_calls_become_two_function_call_items():
    events = _translate_stream(
        "openai_stream_parallel_tools.sse", {"model": "gpt-4o", "input": "Weather?", "tools": [WEATHER]}
    )
    for e in events:
        _strict(EVENT, e)
    final = events[-1]["response"]
    calls = [o for o in final["output"] if o["type"] == "function_call"]
    assert [c["call_id"] for c in calls] == ["call_12345xyz", "call_67890abc"]
    assert [json.loads(c["arguments"])["location"] for c in calls] == ["Paris, France", "Bogotá, Colombia"]
    for c in calls:
        deltas = [e["delta"] for e in events if e.get("item_id") == c["id"] and e["type"].endswith("arguments.delta")]
        dones = [e for e in events if e.get("item_id") == c["id"] and e["type"].endswith("arguments.done")]
        assert "".join(deltas) == c["arguments"] == dones[0]["arguments"]
    assert final["usage"]["input_tokens"] > 0 and final["usage"]["total_tokens"] == (
        final["usage"]["input_tokens"] + final["usage"]["output_tokens"]
    )
    assert final["tools"] == [WEATHER]


def test_reasoning_and_custom_tool_and_incomplete():
    names = ToolNames()
    names.add("custom", "apply_patch")
    chunks = [
        {"choices": [{"index": 0, "delta": {"reasoning_content": "Let me "}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": "think."}}]},
        {"choices": [{"index": 0, "delta": {"content": "Patching."}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "call_9", "function": {"name": "apply_patch", "arguments": '{"inp'}}
                        ]
                    },
                }
            ]
        },
        {
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'ut":"*** Begin"}'}}]}}
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 7,
                "completion_tokens_details": {"reasoning_tokens": 3},
            },
        },
    ]
    conv = ChatToResponsesStream(request={"model": "m", "input": "x"}, names=names, model="m", response_id="resp_2")
    raw = b"".join(conv.feed(b"data: " + orjson.dumps(c) + b"\n\n") for c in chunks) + conv.feed(b"data: [DONE]\n\n")
    events = _events(raw)
    for e in events:
        _strict(EVENT, e)
    kinds = [e["type"] for e in events]
    assert "response.reasoning_text.delta" in kinds and kinds[-1] == "response.incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [o["type"] for o in final["output"]] == ["reasoning", "message", "custom_tool_call"]
    assert final["output"][0]["content"] == [{"type": "reasoning_text", "text": "Let me think."}]
    assert final["output"][2]["input"] == "*** Begin" and final["output"][2]["call_id"] == "call_9"
    assert final["usage"]["output_tokens_details"] == {"reasoning_tokens": 3}
    assert [e["input"] for e in events if e["type"] == "response.custom_tool_call_input.done"] == ["*** Begin"]


def test_upstream_error_mid_stream_is_response_failed():
    conv = ChatToResponsesStream(request={"model": "m", "input": "x"}, names=ToolNames(), model="m", response_id="r")
    out = conv.feed(b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n')
    out += conv.feed(b'data: {"error":{"message":"overloaded"}}\n\n')
    events = _events(out)
    for e in events:
        _strict(EVENT, e)
    assert events[-1]["type"] == "response.failed" and events[-1]["response"]["error"]["message"] == "overloaded"
    assert conv.finish() == b"" and conv.feed(b'data: {"choices":[]}\n\n') == b""


def test_documented_chat_reply_becomes_a_response_object():
    # OpenAI API reference, chat completion object example, with the guide's tool call
    reply = {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1677652288,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello there, how may I assist you today?",
                    "tool_calls": [
                        {
                            "id": "call_12345xyz",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"location":"Paris, France"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 12,
            "total_tokens": 21,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    request = {"model": "gpt-4o", "input": "Hi", "tools": [WEATHER], "metadata": {"a": "b"}, "instructions": "Be nice"}
    obj = chat_to_response(reply, request=request, names=ToolNames(), model="gpt-4o-mini", response_id="resp_x")
    _strict(Response, obj)
    assert obj["status"] == "completed" and obj["instructions"] == "Be nice" and obj["metadata"] == {"a": "b"}
    assert [o["type"] for o in obj["output"]] == ["message", "function_call"]
    assert obj["output"][0]["content"][0]["text"] == "Hello there, how may I assist you today?"
    assert obj["output"][1]["call_id"] == "call_12345xyz" and obj["output"][1]["name"] == "get_weather"
    assert obj["usage"] == {
        "input_tokens": 9,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 21,
    }
    assert Response.model_validate(obj).output_text == "Hello there, how may I assist you today?"


# --------------------------------------------------------------------------- requests


def test_documented_function_calling_request():
    # the function-calling guide's second turn: the call and its output replayed as items
    body = {
        "model": "gpt-4.1",
        "instructions": "You are a weather bot.",
        "input": [
            {"role": "developer", "content": "Answer in Celsius."},
            {"role": "user", "content": "What is the weather like in Paris today?"},
            {
                "type": "function_call",
                "id": "fc_12345xyz",
                "call_id": "call_12345xyz",
                "name": "get_weather",
                "arguments": '{"location":"Paris, France"}',
            },
            {"type": "function_call_output", "call_id": "call_12345xyz", "output": "14"},
        ],
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
        "max_output_tokens": 5000,
        "stream": True,
    }
    chat, dropped, _ = responses_to_chat(body, model="m", max_tokens_limit=1000)
    assert dropped == []
    assert chat == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are a weather bot.\n\nAnswer in Celsius."},
            {"role": "user", "content": "What is the weather like in Paris today?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_12345xyz",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Paris, France"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_12345xyz", "content": "14"},
        ],
        "max_tokens": 1000,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": WEATHER["description"],
                    "parameters": WEATHER["parameters"],
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
    }


def test_namespace_tools_round_trip_their_names():
    body = {
        "model": "m",
        "input": "x",
        "tools": [
            {
                "type": "namespace",
                "name": "mcp_fs",
                "description": "files",
                "tools": [{"type": "function", "name": "read", "parameters": {"type": "object", "properties": {}}}],
            }
        ],
    }
    chat, _, names = responses_to_chat(body, model="m")
    assert chat["tools"][0]["function"]["name"] == "mcp_fs__read"
    reply = {
        "choices": [
            {
                "message": {"tool_calls": [{"id": "c1", "function": {"name": "mcp_fs__read", "arguments": "{}"}}]},
                "finish_reason": "tool_calls",
            }
        ]
    }
    obj = chat_to_response(reply, request=body, names=names, model="m", response_id="r")
    _strict(Response, obj)
    assert obj["output"][0]["name"] == "read" and obj["output"][0]["namespace"] == "mcp_fs"
    # replayed with its namespace, the call is sent under the same chat name
    again, _, _ = responses_to_chat(
        {
            **body,
            "input": [
                {"type": "function_call", "call_id": "c1", "name": "read", "namespace": "mcp_fs", "arguments": "{}"}
            ],
        },
        model="m",
    )
    assert again["messages"][0]["tool_calls"][0]["function"]["name"] == "mcp_fs__read"


@pytest.mark.parametrize(
    ("extra", "note"),
    [
        ({"include": ["reasoning.encrypted_content"]}, "include.reasoning.encrypted_content"),
        ({"prompt_cache_key": "k"}, "prompt_cache_key"),
        ({"client_metadata": {"x": "y"}}, "client_metadata"),
        ({"truncation": "auto"}, "truncation"),
        ({"tools": [{"type": "web_search"}]}, "tools.web_search"),
        (
            {
                "input": [
                    {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "zz"},
                    {"role": "user", "content": "x"},
                ]
            },
            "input.reasoning",
        ),
        ({"reasoning": {"effort": "high"}}, "reasoning.effort"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
    ],
)
def test_what_cannot_be_sent_is_named(extra, note):
    _, dropped, _ = responses_to_chat({"model": "m", "input": "x", **extra}, model="m", reasoning=False)
    assert note in dropped


def test_neutral_defaults_are_not_named():
    body = {"model": "m", "input": "x", "truncation": "disabled", "store": True, "include": [], "service_tier": "auto"}
    assert responses_to_chat(body, model="m")[1] == []


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "role",
                    "content",
                    "name",
                    "call_id",
                    "arguments",
                    "output",
                    "input",
                    "text",
                    "tools",
                    "format",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["input", "tools", "tool_choice", "text", "reasoning", "instructions", "include"]), JSONISH
    )
)
# found by this test: a list or an object as a role or a part's type met a set lookup (TypeError, a 500)
@example({"input": [{"role": []}]})
@example({"input": [{"role": "user", "content": [{"type": {}}]}]})
@example({"input": [{"role": "assistant", "content": [{"type": []}]}]})
def test_hostile_requests_only_ever_raise_value_error(body):
    try:
        responses_to_chat({"model": "m", **body}, model="m")
    except ValueError:
        pass


@settings(max_examples=300, deadline=None)
@given(JSONISH)
def test_hostile_replies_only_ever_raise_value_error(reply):
    try:
        chat_to_response({"choices": [{"message": reply}]}, request={}, names=ToolNames(), model="m", response_id="r")
        if isinstance(reply, dict):
            chat_to_response(reply, request={}, names=ToolNames(), model="m", response_id="r")
    except ValueError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(JSONISH, max_size=6))
def test_hostile_streams_only_ever_raise_value_error(chunks):
    conv = ChatToResponsesStream(request={"input": "x"}, names=ToolNames(), model="m", response_id="r")
    try:
        for c in chunks:
            conv.feed(b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": c}]}) + b"\n\n")
            conv.feed(b"data: " + orjson.dumps(c) + b"\n\n")
        conv.finish()
    except ValueError:
        pass
