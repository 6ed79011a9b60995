"""Request translation: golden pairs from the vendors' docs, dropped lists, round trips."""

from __future__ import annotations

import pytest
from wire_helpers import fixture_names, load, parsed_arguments

from tiergate.adapters.translate_requests import (
    anthropic_to_openai_request,
    openai_to_anthropic_request,
)

OPENAI_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "stop",
    "temperature",
    "top_p",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
}
# The installed anthropic SDK speaks API version 2026-10-21, which removed temperature/top_p;
# under 2023-06-01 (the translator's default) they are still request fields.
ANTHROPIC_FIELDS = {
    "model",
    "messages",
    "system",
    "max_tokens",
    "stop_sequences",
    "temperature",
    "top_p",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
}


def _sdk_param_keys(typed_dict) -> set[str]:
    keys: set[str] = set()
    for klass in typed_dict.__mro__:
        keys |= set(getattr(klass, "__annotations__", {}))
    return keys


def test_emitted_field_sets_are_known_to_the_sdks():
    from anthropic.types import message_create_params as a
    from openai.types.chat import completion_create_params as o

    assert OPENAI_FIELDS <= _sdk_param_keys(o.CompletionCreateParamsStreaming)
    assert ANTHROPIC_FIELDS - {"temperature", "top_p"} <= _sdk_param_keys(a.MessageCreateParamsStreaming)


@pytest.mark.parametrize("name", fixture_names("req_anthropic_"))
def test_anthropic_to_openai_golden(name):
    fx = load(name)
    out, dropped = anthropic_to_openai_request(fx["anthropic"], model=fx["model"])
    assert parsed_arguments(out) == parsed_arguments(fx["openai"])
    assert sorted(dropped) == sorted(fx["dropped"])
    assert len(dropped) == len(set(dropped))
    assert set(out) <= OPENAI_FIELDS


@pytest.mark.parametrize("name", fixture_names("req_openai_"))
def test_openai_to_anthropic_golden(name):
    fx = load(name)
    out, dropped = openai_to_anthropic_request(
        fx["openai"], model=fx["model"], max_tokens_limit=fx.get("max_tokens_limit")
    )
    assert out == fx["anthropic"]
    assert sorted(dropped) == sorted(fx["dropped"])
    assert len(dropped) == len(set(dropped))
    assert set(out) <= ANTHROPIC_FIELDS


def test_anthropic_request_is_accepted_by_the_sdk_param_types():
    """The produced bodies validate against the SDKs' request TypedDicts."""
    from anthropic.types import MessageParam, ToolParam
    from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
    from pydantic import TypeAdapter

    for name in fixture_names("req_openai_"):
        fx = load(name)
        out, _ = openai_to_anthropic_request(fx["openai"], model="m")
        TypeAdapter(list[MessageParam]).validate_python(out["messages"])
        TypeAdapter(list[ToolParam]).validate_python(out.get("tools", []))
    for name in fixture_names("req_anthropic_"):
        fx = load(name)
        out, _ = anthropic_to_openai_request(fx["anthropic"], model="m")
        TypeAdapter(list[ChatCompletionMessageParam]).validate_python(out["messages"])
        TypeAdapter(list[ChatCompletionToolParam]).validate_python(out.get("tools", []))


USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("anthropic_choice", "openai_choice", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}, None),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ],
)
def test_tool_choice_both_ways(anthropic_choice, openai_choice, parallel):
    tool = {"name": "f", "input_schema": {"type": "object", "properties": {}}}
    out, _ = anthropic_to_openai_request(
        {"messages": USER, "max_tokens": 5, "tools": [tool], "tool_choice": anthropic_choice}, model="m"
    )
    assert out["tool_choice"] == openai_choice
    assert out.get("parallel_tool_calls") == parallel
    back, _ = openai_to_anthropic_request(out, model="m")
    assert back["tool_choice"] == anthropic_choice


@pytest.mark.parametrize(
    ("body", "limit", "expected"),
    [
        ({}, None, 4096),  # Anthropic needs max_tokens
        ({}, 1000, 1000),  # the default is clamped too
        ({"max_tokens": 300}, None, 300),
        ({"max_tokens": 300, "max_completion_tokens": 200}, None, 200),
        ({"max_completion_tokens": 9000}, 8192, 8192),
    ],
)
def test_openai_max_tokens(body, limit, expected):
    out, _ = openai_to_anthropic_request({"messages": USER, **body}, model="m", max_tokens_limit=limit)
    assert out["max_tokens"] == expected


def test_anthropic_max_tokens_clamped():
    out, _ = anthropic_to_openai_request({"messages": USER, "max_tokens": 64000}, model="m", max_tokens_limit=16384)
    assert out["max_tokens"] == 16384


@pytest.mark.parametrize(
    ("body", "dropped"),
    [
        ({"n": 1, "logprobs": False, "presence_penalty": 0, "stream": False}, []),  # defaults are honoured
        ({"n": 3}, ["n"]),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, ["response_format"]),
        ({"response_format": {"type": "text"}}, []),
        ({"functions": [{"name": "f"}], "function_call": "auto"}, ["functions", "function_call"]),
        ({"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}, ["tools.custom"]),
        ({"stop": ["END", " "]}, ["stop"]),
        ({"messages": [{"role": "user", "name": "bob", "content": "hi"}]}, ["messages.name"]),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
                    {"role": "user", "content": "hi"},
                ]
            },
            ["content.input_audio"],
        ),
    ],
)
def test_openai_dropped_fields(body, dropped):
    _, got = openai_to_anthropic_request({"messages": USER, **body}, model="m")
    assert got == dropped


@pytest.mark.parametrize(
    ("body", "dropped"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, ["thinking"]),
        (
            {"context_management": {"edits": []}, "output_config": {"effort": "low"}},
            ["context_management", "output_config"],
        ),
        ({"metadata": {"user_id": "u1"}}, []),
        ({"top_k": 5, "service_tier": "auto"}, ["top_k", "service_tier"]),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, ["stop_sequences"]),
        (
            {
                "system": [
                    {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}},
                ]
            },
            ["cache_control"],
        ),
        (
            {"tools": [{"type": "bash_20250124", "name": "bash"}, {"name": "memory", "type": "memory_20250818"}]},
            ["tools.bash_20250124", "tools.memory_20250818"],
        ),
        (
            {
                "tools": [
                    {
                        "name": "f",
                        "input_schema": {"type": "object"},
                        "cache_control": {"type": "ephemeral"},
                        "input_examples": [{}],
                    }
                ]
            },
            ["cache_control", "tools.input_examples"],
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
                            {"type": "text", "text": "ok"},
                        ],
                    },
                    {"role": "user", "content": "go on"},
                ]
            },
            ["content.redacted_thinking"],
        ),
    ],
)
def test_anthropic_dropped_fields(body, dropped):
    _, got = anthropic_to_openai_request({"messages": USER, "max_tokens": 10, **body}, model="m")
    assert got == dropped


def test_stop_sequences_are_cut_to_openais_four():
    out, _ = anthropic_to_openai_request(
        {"messages": USER, "max_tokens": 1, "stop_sequences": list("abcde")}, model="m"
    )
    assert out["stop"] == list("abcd")


def test_sampling_parameters_follow_the_anthropic_version():
    body = {"messages": USER, "temperature": 0.2, "top_p": 0.5}
    out, dropped = openai_to_anthropic_request(body, model="m")
    assert out["temperature"] == 0.2 and "top_p" not in out and dropped == ["top_p"]
    out, dropped = openai_to_anthropic_request({"messages": USER, "top_p": 0.5}, model="m")
    assert out["top_p"] == 0.5 and dropped == []
    out, dropped = openai_to_anthropic_request(body, model="m", anthropic_version="2026-10-21")
    assert "temperature" not in out and "top_p" not in out and dropped == ["temperature", "top_p"]


def test_mid_conversation_system_messages_are_hoisted():
    out, _ = openai_to_anthropic_request(
        {
            "messages": [
                {"role": "system", "content": "A"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "developer", "content": "B"},
                {"role": "user", "content": "bye"},
            ]
        },
        model="m",
    )
    assert out["system"] == "A\n\nB"
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]


def test_tool_result_with_image_and_error():
    out, dropped = anthropic_to_openai_request(
        {
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": "shoot"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "screenshot", "input": {}}]},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "partial"},
                                {
                                    "type": "image",
                                    "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                                },
                            ],
                        }
                    ],
                },
            ],
        },
        model="m",
    )
    assert dropped == []
    assert out["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": "Error: partial"}
    assert out["messages"][3] == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
    }


def test_documents_both_ways():
    pdf = {
        "type": "document",
        "title": "report.pdf",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
    }
    txt = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}}
    out, dropped = anthropic_to_openai_request(
        {
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [pdf, txt, {"type": "text", "text": "Summarise."}]}],
        },
        model="m",
    )
    assert dropped == []
    assert out["messages"][0]["content"][:2] == [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "report.pdf"}},
        {"type": "text", "text": "plain words"},
    ]
    back, _ = openai_to_anthropic_request(out, model="m")
    assert back["messages"][0]["content"][0] == pdf


def _ids(messages: list[dict]) -> list[tuple[str, str]]:
    found = []
    for msg in messages:
        for block in msg["content"] if isinstance(msg["content"], list) else ():
            if block["type"] in ("tool_use", "tool_result"):
                found.append((block["type"], block.get("id") or block.get("tool_use_id")))
    return found


def test_round_trip_anthropic_openai_anthropic():
    original = load("req_anthropic_tool_use.json")["anthropic"]
    openai_body, _ = anthropic_to_openai_request(original, model="gpt")
    back, _ = openai_to_anthropic_request(openai_body, model="claude")
    system = "".join(b["text"] + "\n\n" for b in original["system"]).removesuffix("\n\n")
    assert back["system"] == system
    assert back["tools"] == [t for t in original["tools"] if "input_schema" in t]
    assert back["tool_choice"] == original["tool_choice"]
    assert back["stop_sequences"] == original["stop_sequences"]
    assert back["metadata"] == original["metadata"]
    assert (back["temperature"], back["max_tokens"], back["stream"]) == (0.5, 1024, True)
    assert (
        _ids(back["messages"])
        == _ids(original["messages"])
        == [("tool_use", "toolu_01A09q90qw90lq917835lq9"), ("tool_result", "toolu_01A09q90qw90lq917835lq9")]
    )
    assert back["messages"][1]["content"] == [b for b in original["messages"][1]["content"] if b["type"] != "thinking"]
    assert back["messages"][2]["content"] == original["messages"][2]["content"]


def test_round_trip_openai_anthropic_openai():
    original = load("req_openai_functions.json")["openai"]
    original = {
        **original,
        "messages": [
            {"role": "system", "content": "Be brief."},
            *original["messages"],
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_current_weather", "arguments": '{"location": "Boston, MA"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_current_weather", "arguments": '{"location": "Austin, TX"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "7C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "31C"},
        ],
    }
    anthropic_body, dropped = openai_to_anthropic_request(original, model="claude")
    assert dropped == []
    back, dropped = anthropic_to_openai_request(anthropic_body, model="gpt-4o")
    assert dropped == []
    assert parsed_arguments(back)["messages"] == parsed_arguments(original)["messages"]
    assert back["tools"] == original["tools"] and back["tool_choice"] == "auto"


def test_user_identity_both_ways():
    out, dropped = openai_to_anthropic_request({"messages": USER, "safety_identifier": "hash-1"}, model="m")
    assert out["metadata"] == {"user_id": "hash-1"} and dropped == []
    back, dropped = anthropic_to_openai_request({**out, "metadata": {"user_id": "hash-1", "tag": "x"}}, model="m")
    assert back["user"] == "hash-1" and dropped == ["metadata.tag"]


def test_tool_choice_naming_a_dropped_server_tool():
    out, dropped = anthropic_to_openai_request(
        {
            "messages": USER,
            "max_tokens": 5,
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            "tool_choice": {"type": "tool", "name": "web_search"},
        },
        model="m",
    )
    assert "tools" not in out and "tool_choice" not in out
    assert dropped == ["tools.web_search_20250305", "tool_choice"]


def test_text_before_tool_result_follows_the_tool_messages():
    """OpenAI needs the tool messages right behind the assistant's tool_calls."""
    out, _ = anthropic_to_openai_request(
        {
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "a", "name": "w", "input": {"c": 1}},
                        {"type": "tool_use", "id": "b", "name": "w", "input": {"c": 2}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "here you go"},
                        {"type": "tool_result", "tool_use_id": "a", "content": "sun"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "b",
                            "content": [{"type": "text", "text": "rain"}, {"type": "text", "text": "wind"}],
                        },
                    ],
                },
            ],
        },
        model="m",
    )
    assert [(m["role"], m.get("tool_call_id")) for m in out["messages"]] == [
        ("user", None),
        ("assistant", None),
        ("tool", "a"),
        ("tool", "b"),
        ("user", None),
    ]
    assert out["messages"][1]["content"] is None
    assert out["messages"][3]["content"] == "rain\n\nwind"
    assert out["messages"][4]["content"] == "here you go"


def test_system_turns_inside_messages_join_the_leading_system():
    """Claude Code sends role 'system' turns inside messages; chat templates want one system message first."""
    from tiergate.adapters.translate_requests import anthropic_to_openai_request

    body = {
        "model": "x",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "base"}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "reminder"}]},
            {"role": "assistant", "content": "ok"},
        ],
    }
    out, _ = anthropic_to_openai_request(body, model="m")
    assert out["messages"] == [
        {"role": "system", "content": "base\n\nreminder"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "ok"},
    ]
