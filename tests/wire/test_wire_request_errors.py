"""Request translation: malformed requests are a ValueError naming the field (the caller answers 400)."""

from __future__ import annotations

import pytest

from tiergate.adapters.translate_requests import (
    anthropic_to_openai_request,
    openai_to_anthropic_request,
)

USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("nope", "body: must be a JSON object"),
        ({}, "messages: must be a non-empty array"),
        ({"messages": ["hi"]}, "messages[0]: must be an object"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role: unknown role 'tool'"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content: must be a string or an array"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content[0]: must be an object"),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]},
            "messages[0].content[0].id: is required",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "[]"}]}
                ]
            },
            "messages[0].content[0].input: must be an object",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
            "messages[0].content[0].tool_use_id: is required",
        ),
        ({"messages": USER, "max_tokens": -1}, "max_tokens: must be a non-negative integer"),
        ({"messages": USER, "tool_choice": {"type": "sometimes"}}, "tool_choice.type: unknown tool_choice"),
        ({"messages": USER, "system": [{"type": "image"}]}, "system[0]: must be a text block"),
        ({"messages": USER, "tools": [{"input_schema": {}}]}, "tools[0].name: is required"),
    ],
)
def test_anthropic_value_errors(body, message):
    with pytest.raises(ValueError) as err:
        anthropic_to_openai_request(body, model="m")
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "messages: must be a non-empty array"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role: unknown role 'function'"),
        ({"messages": [{"role": "system", "content": "only"}]}, "messages: needs at least one"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id: is required"),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]},
            "messages[0].tool_calls[0].id: is required",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments: must be a JSON object",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}]},
            "messages[0].content[0].image_url.url: data URL must be",
        ),
        ({"messages": USER, "stop": 5}, "stop: must be a string or an array of strings"),
        ({"messages": USER, "tools": [{"type": "function", "function": {}}]}, "tools[0].function.name: is required"),
        (
            {"messages": USER, "tool_choice": 7, "tools": [{"type": "function", "function": {"name": "f"}}]},
            "tool_choice: unknown tool_choice",
        ),
        ({"messages": USER, "max_completion_tokens": "many"}, "max_completion_tokens: must be a non-negative"),
    ],
)
def test_openai_value_errors(body, message):
    with pytest.raises(ValueError) as err:
        openai_to_anthropic_request(body, model="m")
    assert str(err.value).startswith(message)
