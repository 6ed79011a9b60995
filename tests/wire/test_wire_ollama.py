"""Ollama's native API <-> OpenAI chat, field by field, from the examples in Ollama's docs/api.md.

The ollama library's own response types are the oracle for every answer
shape; hostile bodies must fail with a ValueError naming the field (a 400),
never anything else.
"""

from __future__ import annotations

import itertools
from typing import Any

import ollama
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiergate.adapters.openai_read import read_reply
from tiergate.adapters.translate_ollama import (
    OpenAIToOllamaStream,
    image_data_url,
    ollama_chat_to_openai,
    ollama_embed_reply,
    ollama_embed_to_openai,
    ollama_generate_to_openai,
    ollama_reply,
)

# what a parsed body can hold: orjson.loads reads an integer past 64 bits as a float
PARSED_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather in a given city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city to get the weather for"}},
            "required": ["city"],
        },
    },
}


def test_docs_chat_with_history_and_tools():
    """'Chat request (With history, with tools)': the tool result names its tool, not a call id."""
    body = {
        "model": "llama3.2",
        "messages": [
            {"role": "user", "content": "what is the weather in Toronto?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Toronto"}}}],
            },
            {"role": "tool", "content": "11 degrees celsius", "tool_name": "get_weather"},
        ],
        "stream": False,
        "tools": [WEATHER_TOOL],
    }
    out, dropped = ollama_chat_to_openai(body, model="m")
    assert dropped == []
    assert out == {
        "model": "m",
        "messages": [
            {"role": "user", "content": "what is the weather in Toronto?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1_0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Toronto"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1_0", "content": "11 degrees celsius"},
        ],
        "tools": [WEATHER_TOOL],
    }


def test_docs_generate_with_options_maps_what_openai_takes():
    """'Generate request (With options)': every option set; the sampler ones OpenAI lacks are named."""
    options = {
        "num_keep": 5,
        "seed": 42,
        "num_predict": 100,
        "top_k": 20,
        "top_p": 0.9,
        "min_p": 0.0,
        "typical_p": 0.7,
        "repeat_last_n": 33,
        "temperature": 0.8,
        "repeat_penalty": 1.2,
        "presence_penalty": 1.5,
        "frequency_penalty": 1.0,
        "penalize_newline": True,
        "stop": ["\n", "user:"],
        "numa": False,
        "num_ctx": 1024,
        "num_batch": 2,
        "num_gpu": 1,
        "main_gpu": 0,
        "use_mmap": True,
        "num_thread": 8,
    }
    body = {"model": "llama3.2", "prompt": "Why is the sky blue?", "stream": False, "options": options}
    out, dropped = ollama_generate_to_openai(body, model="m", max_tokens_limit=64, stream=True)
    assert out == {
        "model": "m",
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "max_tokens": 64,  # clamped to the deployment's limit
        "temperature": 0.8,
        "top_p": 0.9,
        "seed": 42,
        "presence_penalty": 1.5,
        "frequency_penalty": 1.0,
        "stop": ["\n", "user:"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert set(dropped) == {f"options.{k}" for k in ("top_k", "min_p", "typical_p", "repeat_last_n")} | {
        "options.repeat_penalty",
        "options.penalize_newline",
        "options.num_ctx",
    }


def test_docs_generate_suffix_raw_images_and_format():
    body = {
        "model": "codellama:code",
        "prompt": "def compute_gcd(a, b):",
        "suffix": "    return result",
        "raw": True,
        "system": "code only",
        "images": ["/9j/4AAQSkZJRg=="],
        "format": "json",
        "think": True,
        "keep_alive": 0,
    }
    out, dropped = ollama_generate_to_openai(body, model="m")
    assert out["messages"] == [
        {"role": "system", "content": "code only"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "def compute_gcd(a, b):"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
            ],
        },
    ]
    assert out["response_format"] == {"type": "json_object"}
    assert set(dropped) == {"suffix", "raw", "think"}  # keep_alive changes nothing upstream


@pytest.mark.parametrize(
    ("data", "url"),
    [
        ("iVBORw0KGgoAAAANSUhEUg", "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg"),
        ("R0lGODlhAQABAA==", "data:image/gif;base64,R0lGODlhAQABAA=="),
        ("UklGRiQAAABXRUJQ", "data:image/webp;base64,UklGRiQAAABXRUJQ"),
        ("data:image/png;base64,AAAA", "data:image/png;base64,AAAA"),
    ],
)
def test_image_media_types(data, url):
    assert image_data_url(data, "images[0]") == url


def openai_reply(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 169, "completion_tokens": 18, "total_tokens": 187},
    }


def test_docs_chat_no_streaming_with_tools_answer_shape():
    """'Chat request (No streaming, with tools)': arguments as an object, done_reason stop, the counters."""
    reply = openai_reply(
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Tokyo"}'}}
            ],
        },
        finish="tool_calls",
    )
    out = ollama_reply(read_reply(reply), model="llama3.2", created_at="2025-07-07T20:32:53Z", total_ns=3_000)
    parsed = ollama.ChatResponse.model_validate(out)
    assert parsed.message.tool_calls[0].function.arguments == {"city": "Tokyo"}
    assert out["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert out["done"] is True and out["done_reason"] == "stop"
    assert out["prompt_eval_count"] == 169 and out["eval_count"] == 18 and out["total_duration"] == 3_000
    gen = ollama_reply(
        read_reply(openai_reply({"content": "blue"}, "length")), model="m", created_at="t", total_ns=1, generate=True
    )
    assert ollama.GenerateResponse.model_validate(gen).response == "blue" and gen["done_reason"] == "length"


def sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else orjson.dumps(obj)) + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return sse({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def run_stream(events: list[bytes], *, generate: bool = False) -> list[dict[str, Any]]:
    ticks = itertools.count(0, 1_000)
    conv = OpenAIToOllamaStream(model="llama3.2", created_at=lambda: "t", clock=lambda: next(ticks), generate=generate)
    out = b"".join(conv.feed(e) for e in events) + conv.finish()
    assert out.endswith(b"\n")
    return [orjson.loads(line) for line in out.splitlines()]


def test_stream_text_then_one_final_line_with_usage():
    lines = run_stream(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "The"}),
            chunk({"content": " sky"}, "stop"),
            sse({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 26, "completion_tokens": 2}}),
            sse(b"[DONE]"),
        ]
    )
    assert [x["message"]["content"] for x in lines] == ["The", " sky", ""]
    assert [x["done"] for x in lines] == [False, False, True]
    final = ollama.ChatResponse.model_validate(lines[-1])
    assert final.done_reason == "stop" and final.prompt_eval_count == 26 and final.eval_count == 2
    assert final.total_duration == final.prompt_eval_duration + final.eval_duration


def test_stream_tool_call_fragments_go_out_whole():
    """'Chat request (Streaming with tools)': one line with the whole call, then the final line."""
    lines = run_stream(
        [
            chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "get_weather", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Tokyo"}'}}]}, "tool_calls"),
            sse(b"[DONE]"),
        ]
    )
    assert len(lines) == 2
    assert lines[0]["message"]["tool_calls"] == [
        {"id": "c1", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}}}
    ]
    assert lines[1]["done"] and lines[1]["done_reason"] == "stop"


def test_stream_reasoning_is_thinking_and_errors_end_in_band():
    lines = run_stream([chunk({"reasoning_content": "hmm"}), chunk({"content": "ok"})], generate=True)
    assert lines[0] == {"model": "llama3.2", "created_at": "t", "response": "", "thinking": "hmm", "done": False}
    assert lines[1]["response"] == "ok" and lines[-1]["done"]
    err = run_stream([chunk({"content": "a"}), sse({"error": {"message": "boom"}})])
    assert err[-1] == {"error": "boom"}


def test_broken_tool_arguments_are_an_error_not_a_crash():
    with pytest.raises(ValueError, match="arguments are not a JSON object"):
        run_stream(
            [chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{oops"}}]}), sse(b"[DONE]")]
        )


def test_docs_embed_and_legacy_embeddings():
    out, _ = ollama_embed_to_openai({"model": "all-minilm", "input": ["a", "b"], "dimensions": 8}, model="m")
    assert out == {"model": "m", "input": ["a", "b"], "dimensions": 8}
    legacy, _ = ollama_embed_to_openai({"model": "all-minilm", "prompt": "llamas"}, model="m", legacy=True)
    assert legacy == {"model": "m", "input": "llamas"}
    reply = {
        "data": [{"index": 1, "embedding": [0.2]}, {"index": 0, "embedding": [0.1]}],
        "usage": {"prompt_tokens": 8},
    }
    embed = ollama_embed_reply(reply, model="all-minilm", total_ns=5)
    assert ollama.EmbedResponse.model_validate(embed).embeddings == [[0.1], [0.2]] and embed["prompt_eval_count"] == 8
    assert ollama_embed_reply(reply, model="x", total_ns=5, legacy=True) == {"embedding": [0.1]}


JSON = st.recursive(
    st.none() | st.booleans() | PARSED_INTS | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "tool", "system", "x"]) | JSON},
    optional={"content": JSON, "images": JSON, "tool_calls": JSON, "tool_name": JSON, "thinking": JSON},
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {"model": st.just("m")},
        optional={
            "messages": st.lists(MESSAGE, max_size=4) | JSON,
            "tools": JSON,
            "format": JSON,
            "options": st.dictionaries(st.sampled_from(["num_predict", "stop", "temperature", "seed"]), JSON) | JSON,
            "prompt": JSON,
            "images": JSON,
            "system": JSON,
        },
    )
)
def test_hostile_bodies_translate_or_raise_value_error(body):
    for translate in (ollama_chat_to_openai, ollama_generate_to_openai):
        try:
            out, dropped = translate(body, model="m")
        except ValueError:
            continue
        orjson.dumps(out)
        assert isinstance(dropped, list)
