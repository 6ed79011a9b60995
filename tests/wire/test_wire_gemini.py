"""Gemini's generateContent API <-> OpenAI chat, field by field.

Requests in the shapes of Gemini's API reference and of what Gemini CLI
sends (function declarations with ``parametersJsonSchema``,
``thinkingConfig.includeThoughts``, a session-context part before the prompt,
``thoughtSignature`` on replayed calls); google-genai's own response types
are the oracle for every answer; hostile bodies fail with a ValueError.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from google.genai import types
from hypothesis import given, settings
from hypothesis import strategies as st

from tiergate.adapters.openai_read import read_reply
from tiergate.adapters.translate_gemini import (
    OpenAIToGeminiStream,
    gemini_embed_reply,
    gemini_embed_to_openai,
    gemini_reply,
    gemini_to_openai,
    json_schema,
)

# what a parsed body can hold: orjson.loads reads an integer past 64 bits as a float
PARSED_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)


def test_openapi_schema_becomes_json_schema():
    schema = {
        "type": "OBJECT",
        "properties": {
            "recipe_name": {"type": "STRING", "description": "name"},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "nullable": True},
            "count": {"type": "INTEGER", "format": "int32"},
        },
        "required": ["recipe_name"],
        "propertyOrdering": ["recipe_name", "tags", "count"],
    }
    assert json_schema(schema, "s") == {
        "type": "object",
        "properties": {
            "recipe_name": {"type": "string", "description": "name"},
            "tags": {"type": ["array", "null"], "items": {"type": "string"}},
            "count": {"type": "integer", "format": "int32"},
        },
        "required": ["recipe_name"],
    }


def test_gemini_cli_request_shape():
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "This is the Gemini CLI. Session context..."}, {"text": "list files"}]},
            {
                "role": "model",
                "parts": [
                    {"text": "thinking it over", "thought": True},
                    {"functionCall": {"name": "list_directory", "args": {"path": "."}}, "thoughtSignature": "c2ln"},
                ],
            },
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "list_directory", "response": {"output": "a.txt"}}}],
            },
        ],
        "systemInstruction": {"role": "user", "parts": [{"text": "You are an interactive CLI agent."}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "list_directory",
                        "description": "Lists a directory",
                        "parametersJsonSchema": {"type": "object", "properties": {"path": {"type": "string"}}},
                    }
                ]
            }
        ],
        "generationConfig": {"temperature": 0, "topP": 1, "thinkingConfig": {"includeThoughts": True}},
    }
    out, dropped = gemini_to_openai(body, model="m", stream=True)
    assert out == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are an interactive CLI agent."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "This is the Gemini CLI. Session context..."},
                    {"type": "text", "text": "list files"},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1_1",
                        "type": "function",
                        "function": {"name": "list_directory", "arguments": '{"path":"."}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1_1", "content": '{"output":"a.txt"}'},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "list_directory",
                    "description": "Lists a directory",
                    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
                },
            }
        ],
        "temperature": 0,
        "top_p": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert set(dropped) == {"thought", "generationConfig.thinkingConfig"}


def test_reference_fields_snake_case_tool_config_and_media():
    body = {
        "contents": [
            {
                "parts": [
                    {"text": "What is in this image?"},
                    {"inline_data": {"mime_type": "image/jpeg", "data": "/9j/4AAQ"}},
                    {"fileData": {"mimeType": "video/mp4", "fileUri": "gs://x"}},
                ]
            }
        ],
        "tools": [{"googleSearch": {}}, {"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT"}}]}],
        "tool_config": {"function_calling_config": {"mode": "ANY", "allowed_function_names": ["f"]}},
        "generation_config": {
            "max_output_tokens": 5000,
            "stop_sequences": ["a"],
            "response_mime_type": "application/json",
            "top_k": 3,
        },
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    }
    out, dropped = gemini_to_openai(body, model="m", max_tokens_limit=2048)
    assert out["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"},
    }
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert out["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert out["max_tokens"] == 2048 and out["stop"] == ["a"] and out["response_format"] == {"type": "json_object"}
    assert set(dropped) == {"fileData", "tools.googleSearch", "generationConfig.topK", "safetySettings"}


def openai_reply(message: dict[str, Any], finish: str = "stop", **usage: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-9",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 30, **usage},
    }


def test_reply_shape_usage_and_thoughts():
    reply = openai_reply(
        {"content": "Blue.", "reasoning_content": "Rayleigh"},
        "length",
        completion_tokens_details={"reasoning_tokens": 20},
        prompt_tokens_details={"cached_tokens": 4},
    )
    out = gemini_reply(read_reply(reply), model="local-8b", include_thoughts=True)
    parsed = types.GenerateContentResponse.model_validate(out)
    assert parsed.text == "Blue." and parsed.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert out["candidates"][0]["content"]["parts"][0] == {"text": "Rayleigh", "thought": True}
    assert out["usageMetadata"] == {
        "promptTokenCount": 10,
        "candidatesTokenCount": 10,
        "totalTokenCount": 40,
        "thoughtsTokenCount": 20,
        "cachedContentTokenCount": 4,
    }
    calls = openai_reply(
        {"content": None, "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": '{"a":1}'}}]}, "tool_calls"
    )
    parsed = types.GenerateContentResponse.model_validate(gemini_reply(read_reply(calls), model="m"))
    assert parsed.function_calls[0].name == "f" and parsed.function_calls[0].args == {"a": 1}
    assert parsed.candidates[0].finish_reason == types.FinishReason.STOP


def sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else orjson.dumps(obj)) + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return sse({"id": "x", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


EVENTS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "The"}),
    chunk({"content": " sky"}),
    chunk({"content": " is blue"}, "stop"),
    sse({"id": "x", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}),
    sse(b"[DONE]"),
]


def convert(events: list[bytes], *, sse_framing: bool) -> bytes:
    conv = OpenAIToGeminiStream(model="m", response_id="r", sse=sse_framing)
    return b"".join(conv.feed(e) for e in events) + conv.finish()


def test_stream_sse_holds_the_last_text_for_the_final_chunk():
    raw = convert(EVENTS, sse_framing=True)
    events = [e for e in raw.split(b"\r\n\r\n") if e]
    chunks = [types.GenerateContentResponse.model_validate(orjson.loads(e.removeprefix(b"data: "))) for e in events]
    assert [c.text for c in chunks] == ["The", " sky", " is blue"]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.prompt_token_count == 5 and chunks[-1].usage_metadata.candidates_token_count == 3
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])


def test_stream_json_array_framing_and_whole_function_calls():
    raw = convert(EVENTS, sse_framing=False)
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in orjson.loads(raw)] == ["The", " sky", " is blue"]
    calls = [
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a"'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "tool_calls"),
        sse(b"[DONE]"),
    ]
    out = orjson.loads(convert(calls, sse_framing=False))
    assert len(out) == 1 and out[0]["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"id": "c1", "name": "f", "args": {"a": 1}}}
    ]
    err = orjson.loads(
        convert(
            [chunk({"content": "a"}), chunk({"content": "b"}), sse({"error": {"message": "boom"}})], sse_framing=False
        )
    )
    assert err[-1] == {"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}


def test_embed_requests_and_replies():
    one, _ = gemini_embed_to_openai(
        {"content": {"parts": [{"text": "Hello"}]}, "taskType": "RETRIEVAL_QUERY", "outputDimensionality": 8}, model="m"
    )
    assert one == {"model": "m", "input": "Hello", "dimensions": 8}
    batch, _ = gemini_embed_to_openai(
        {
            "requests": [
                {"model": "models/e", "content": {"parts": [{"text": "a"}]}},
                {"content": {"parts": [{"text": "b"}]}},
            ]
        },
        model="m",
        batch=True,
    )
    assert batch == {"model": "m", "input": ["a", "b"]}
    reply = {"data": [{"index": 1, "embedding": [0.2]}, {"index": 0, "embedding": [0.1]}]}
    assert gemini_embed_reply(reply) == {"embedding": {"values": [0.1]}}
    parsed = types.EmbedContentResponse.model_validate(gemini_embed_reply(reply, batch=True))
    assert [e.values for e in parsed.embeddings] == [[0.1], [0.2]]
    with pytest.raises(ValueError, match="content"):
        gemini_embed_to_openai({"content": {"parts": []}}, model="m")


JSON = st.recursive(
    st.none() | st.booleans() | PARSED_INTS | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=16,
)
PART = st.fixed_dictionaries(
    {},
    optional={
        "text": JSON,
        "thought": JSON,
        "inlineData": JSON,
        "functionCall": JSON,
        "functionResponse": JSON,
        "fileData": JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "contents": st.lists(
                st.fixed_dictionaries(
                    {
                        "role": st.sampled_from(["user", "model", "function"]) | JSON,
                        "parts": st.lists(PART, max_size=3) | JSON,
                    }
                ),
                max_size=3,
            )
            | JSON,
            "systemInstruction": JSON,
            "tools": JSON,
            "toolConfig": JSON,
            "generationConfig": JSON,
        },
    )
)
def test_hostile_bodies_translate_or_raise_value_error(body):
    try:
        out, dropped = gemini_to_openai(body, model="m")
    except ValueError:
        return
    orjson.dumps(out)
    assert isinstance(dropped, list)


def test_gemini_cli_classifier_json_schema_with_upper_case_types():
    """Gemini CLI's model-routing call: generateJson with responseJsonSchema written in Gemini's Type names."""
    body = {
        "contents": [{"role": "user", "parts": [{"text": "classify"}]}],
        "generationConfig": {
            "responseJsonSchema": {
                "type": "OBJECT",
                "properties": {
                    "complexity_reasoning": {"type": "STRING", "description": "Brief explanation for the score."},
                    "complexity_score": {"type": "INTEGER", "description": "Complexity score from 1-100."},
                },
                "required": ["complexity_reasoning", "complexity_score"],
            },
            "responseMimeType": "application/json",
        },
    }
    out, _ = gemini_to_openai(body, model="m")
    assert out["response_format"]["json_schema"]["schema"] == {
        "type": "object",
        "properties": {
            "complexity_reasoning": {"type": "string", "description": "Brief explanation for the score."},
            "complexity_score": {"type": "integer", "description": "Complexity score from 1-100."},
        },
        "required": ["complexity_reasoning", "complexity_score"],
    }
