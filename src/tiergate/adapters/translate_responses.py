"""Non-streaming response translation: chat.completion <-> Anthropic Message.

Pure functions, no I/O. Both directions keep text, tool calls (ids, names,
arguments) and usage. Where the vocabularies differ the maps below decide:
OpenAI's "stop" covers both a natural end and a stop sequence, Anthropic's
"pause_turn" (a server-tool loop paused) has no OpenAI twin and reads as
"stop". Thinking blocks are omitted from OpenAI replies, and OpenAI
``reasoning_content`` is not turned into thinking blocks: Anthropic thinking
needs a signature that only Anthropic can make.

Usage: OpenAI ``prompt_tokens`` counts cached tokens, Anthropic
``input_tokens`` does not (cache reads and writes are separate counters), so
cached tokens move between ``prompt_tokens_details.cached_tokens`` and
``cache_read_input_tokens``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, TypedDict

import orjson

from tiergate.adapters.translate_common import JsonObject, _obj

OPENAI_TO_ANTHROPIC_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
ANTHROPIC_TO_OPENAI_STOP: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}


class AnthropicUsage(TypedDict):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class PromptTokensDetails(TypedDict):
    cached_tokens: int


class OpenAIUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


def _bad(path: str, what: str) -> ValueError:
    return ValueError(f"{path}: {what}")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _reason(value: Any) -> str | None:
    """A stop / finish reason; anything but a non-empty string reads as absent (unknown ones map to the default)."""
    return value if isinstance(value, str) and value else None


def anthropic_message_id(openai_id: Any) -> str:
    """A Message id derived from a chat.completion id (``chatcmpl-X`` -> ``msg_X``)."""
    if isinstance(openai_id, str) and openai_id:
        return "msg_" + openai_id.removeprefix("chatcmpl-")
    return "msg_" + uuid.uuid4().hex


def openai_completion_id(anthropic_id: Any) -> str:
    """A chat.completion id derived from a Message id (``msg_X`` -> ``chatcmpl-X``)."""
    if isinstance(anthropic_id, str) and anthropic_id:
        return "chatcmpl-" + anthropic_id.removeprefix("msg_")
    return "chatcmpl-" + uuid.uuid4().hex


def parse_arguments(arguments: Any) -> JsonObject:
    """OpenAI function arguments (a JSON string) -> Anthropic tool input (an object).

    Arguments that are not a JSON object (a model can emit broken JSON) become
    ``{}``: Anthropic clients require an object.
    """
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def anthropic_usage_from_openai(usage: Any) -> AnthropicUsage:
    """OpenAI usage -> Anthropic usage, cached prompt tokens split out as cache reads."""
    u = usage if isinstance(usage, dict) else {}
    prompt, cached = _int(u.get("prompt_tokens")), _int(_obj(u.get("prompt_tokens_details")).get("cached_tokens"))
    cached = min(cached, prompt)
    return {
        "input_tokens": prompt - cached,
        "output_tokens": _int(u.get("completion_tokens")),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def openai_usage_from_anthropic(usage: Any) -> OpenAIUsage:
    """Anthropic usage -> OpenAI usage: cache reads and writes are prompt tokens too."""
    u = usage if isinstance(usage, dict) else {}
    read = _int(u.get("cache_read_input_tokens"))
    prompt = _int(u.get("input_tokens")) + read + _int(u.get("cache_creation_input_tokens"))
    completion = _int(u.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read},
    }


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some compatible servers answer with content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def openai_to_anthropic_response(obj: JsonObject, *, model: str) -> JsonObject:
    """chat.completion -> Anthropic Message (first choice; text then tool_use blocks)."""
    if not isinstance(obj, dict):
        raise _bad("body", "must be a JSON object")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _bad("choices", "must be a non-empty array of objects")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _bad("choices[0].message", "must be an object")
    content: list[JsonObject] = []
    text = _message_text(message.get("content"))
    refusal = message.get("refusal") if isinstance(message.get("refusal"), str) else ""
    if text or refusal:
        content.append({"type": "text", "text": text or refusal})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _bad("choices[0].message.tool_calls", "must be an array")
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad(f"choices[0].message.tool_calls[{j}].function", "needs a name")
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": fn["name"],
                "input": parse_arguments(fn.get("arguments")),
            }
        )
    stop = OPENAI_TO_ANTHROPIC_STOP.get(_reason(choice.get("finish_reason")) or "stop", "end_turn")
    if calls and stop == "end_turn":
        stop = "tool_use"  # several compatible servers say "stop" after tool calls
    if refusal and not text:
        stop = "refusal"
    return {
        "id": anthropic_message_id(obj.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": anthropic_usage_from_openai(obj.get("usage")),
    }


def anthropic_to_openai_response(obj: JsonObject, *, model: str) -> JsonObject:
    """Anthropic Message -> chat.completion (text joined, tool_use -> tool_calls)."""
    if not isinstance(obj, dict):
        raise _bad("body", "must be a JSON object")
    blocks = obj.get("content")
    if not isinstance(blocks, list):
        raise _bad("content", "must be an array")
    texts: list[str] = []
    calls: list[JsonObject] = []
    for j, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise _bad(f"content[{j}]", "must be an object")
        if block.get("type") == "text":
            text = block.get("text") or ""
            if not isinstance(text, str):
                raise _bad(f"content[{j}].text", "must be a string")
            texts.append(text)
        elif block.get("type") == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _bad(f"content[{j}]", "tool_use needs an id and a name")
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": orjson.dumps(block.get("input") or {}).decode()},
                }
            )
        # thinking, redacted_thinking and server-tool blocks have no OpenAI form
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    finish = ANTHROPIC_TO_OPENAI_STOP.get(_reason(obj.get("stop_reason")) or "end_turn", "stop")
    if finish == "tool_calls" and not calls:
        finish = "stop"  # only server tools ran: nothing for the client to call
    return {
        "id": openai_completion_id(obj.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": openai_usage_from_anthropic(obj.get("usage")),
    }
