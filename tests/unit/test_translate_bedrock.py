"""OpenAI chat <-> Bedrock Converse, pure: request tables from OpenAI's documented shapes, replies and stream
events from Bedrock's documented examples, frames split and bounded, and hostile bodies only ever a ValueError."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiergate.adapters.bedrock_converse import split_frames
from tiergate.adapters.translate_bedrock import StreamTranslator, chat_completion, converse_request
from tiergate.core.errors import AttemptError
from tiergate.standins.bedrock_server import frame

# what a parsed body can hold: orjson.loads reads an integer past 64 bits as a float
PARSED_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)

TOOL = {"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("body", "want", "dropped"),
    [
        (
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}], "max_tokens": 9},
            {
                "messages": [{"role": "user", "content": [{"text": "hi"}]}],
                "system": [{"text": "s"}],
                "inferenceConfig": {"maxTokens": 9},
            },
            [],
        ),
        (  # consecutive user turns merge: Converse wants them to alternate
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": [{"type": "text", "text": "b"}]},
                ],
                "temperature": 0.2,
                "top_p": 0.9,
                "stop": "END",
            },
            {
                "messages": [{"role": "user", "content": [{"text": "a"}, {"text": "b"}]}],
                "inferenceConfig": {"temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
            },
            [],
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "use tool"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                ],
                "tools": [TOOL],
                "tool_choice": "required",
                "seed": 7,
                "response_format": {"type": "json_object"},
            },
            {
                "messages": [
                    {"role": "user", "content": [{"text": "use tool"}]},
                    {
                        "role": "assistant",
                        "content": [{"toolUse": {"toolUseId": "c1", "name": "weather", "input": {"city": "Paris"}}}],
                    },
                    {"role": "user", "content": [{"toolResult": {"toolUseId": "c1", "content": [{"text": "sunny"}]}}]},
                ],
                "toolConfig": {
                    "tools": [
                        {
                            "toolSpec": {
                                "name": "weather",
                                "inputSchema": {"json": {"type": "object"}},
                                "description": "d",
                            }
                        }
                    ],
                    "toolChoice": {"any": {}},
                },
            },
            ["response_format", "seed"],
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}],
                    }
                ]
            },
            {
                "messages": [
                    {"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}]}
                ]
            },
            [],
        ),
    ],
)
def test_requests(body, want, dropped):
    got, lost = converse_request(body)
    assert got == want and sorted(lost) == dropped


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "messages: needs at least one user message"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role: must be one of"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens: must be a positive integer"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
                ]
            },
            "messages[0].content[0].image_url.url: Bedrock takes images as base64 data: URLs",
        ),
    ],
)
def test_untranslatable_requests_name_the_field(body, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        converse_request(body)


def test_the_budget_cap_and_the_deployment_limit():
    got, _ = converse_request({"messages": [{"role": "user", "content": "x"}]}, output_cap=300, max_tokens_limit=100)
    assert got["inferenceConfig"] == {"maxTokens": 100}


def test_a_reply_from_bedrocks_documented_example():
    reply = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"text": "Hello"}, {"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}}],
            }
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 30, "outputTokens": 628, "totalTokens": 658, "cacheReadInputTokens": 10},
        "metrics": {"latencyMs": 1275},
    }
    out = chat_completion(reply, model="m", ident="chatcmpl-1", created=1)
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Hello" and msg["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["usage"] == {
        "prompt_tokens": 40,
        "completion_tokens": 628,
        "total_tokens": 668,
        "prompt_tokens_details": {"cached_tokens": 10, "cache_creation_tokens": 0},
    }
    with pytest.raises(ValueError):
        chat_completion({"message": "Too many requests"}, model="m", ident="x", created=1)


def test_stream_events_become_openai_chunks():
    t = StreamTranslator(model="m", ident="id", created=1)
    out = [
        *t.event("messageStart", {"role": "assistant"}),
        *t.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        *t.event("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}}),
        *t.event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"a":'}}}),
        *t.event("contentBlockStop", {"contentBlockIndex": 1}),
        *t.event("messageStop", {"stopReason": "tool_use"}),
        *t.event("metadata", {"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}}),
    ]
    assert out[-1] == b"data: [DONE]\n\n"
    chunks = [orjson.loads(ev[6:]) for ev in out[:-1]]
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][0] == {
        "index": 0,
        "id": "t",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    assert chunks[3]["choices"][0]["delta"]["tool_calls"][0] == {"index": 0, "function": {"arguments": '{"a":'}}
    assert chunks[4]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[5]["choices"] == [] and chunks[5]["usage"]["total_tokens"] == 7


def test_frames_are_split_where_they_end_and_bounded():
    a, b = frame("messageStart", {"role": "assistant"}), frame("messageStop", {"stopReason": "end_turn"})
    data = a + b
    for cut in range(len(data) + 1):  # any split of the bytes gives the same frames
        first, rest = split_frames(data[:cut], 1 << 20)
        second, left = split_frames(rest + data[cut:], 1 << 20)
        assert first + second == [a, b] and left == b""
    with pytest.raises(AttemptError, match="max_event_kb"):
        split_frames((10_000_000).to_bytes(4, "big") + b"\0" * 20, 1 << 20)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | PARSED_INTS | st.text(max_size=5),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "messages",
                        "role",
                        "content",
                        "tools",
                        "tool_calls",
                        "function",
                        "arguments",
                        "type",
                        "text",
                        "image_url",
                        "url",
                        "max_tokens",
                        "stop",
                        "tool_choice",
                        "name",
                    ]
                ),
                c,
                max_size=4,
            )
        ),
        max_leaves=25,
    )
)
def test_hostile_bodies_are_a_value_error_or_a_request(body):
    try:
        out, dropped = converse_request(body if isinstance(body, dict) else {"messages": body})
    except ValueError:
        return
    assert out["messages"] and all(m["role"] in ("user", "assistant") for m in out["messages"])
    orjson.dumps(out)
