"""Reply translation: a chat.completion -> an OpenAI Responses ``response`` object. Pure, no I/O.

The response echoes what the client asked (instructions, tools, tool_choice,
text format, reasoning, metadata...) as OpenAI's does, and carries the
output as items: a ``reasoning`` item for an upstream's ``reasoning_content``,
a ``message`` with ``output_text`` (or ``refusal``), and one ``function_call``
or ``custom_tool_call`` per tool call, turned back into the client's own
tools by ``ToolNames``. The stream translator (``responses_stream``) builds
the same items with the same helpers, so both shapes agree.

Usage: chat ``prompt_tokens`` already counts cached tokens, as Responses
``input_tokens`` does; ``cached_tokens`` and ``reasoning_tokens`` move into
their ``*_details``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from tiergate.adapters.responses_request import ToolNames, string
from tiergate.adapters.translate_common import JsonObject, _obj

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_ECHO_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("instructions", None),
    ("max_output_tokens", None),
    ("max_tool_calls", None),
    ("previous_response_id", None),
    ("temperature", 1.0),
    ("top_p", 1.0),
    ("tool_choice", "auto"),
    ("tools", []),
    ("parallel_tool_calls", True),
    ("truncation", "disabled"),
    ("user", None),
    ("safety_identifier", None),
    ("prompt_cache_key", None),
    ("metadata", {}),
)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def response_envelope(
    request: JsonObject, *, response_id: str, model: str, created_at: int | None = None
) -> JsonObject:
    """The response object before its output: everything it echoes from the request."""
    out: JsonObject = {
        "id": response_id,
        "object": "response",
        "created_at": created_at if created_at is not None else int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
    }
    for key, default in _ECHO_DEFAULTS:
        value = request.get(key)
        out[key] = default if value is None else value
    r = _obj(request.get("reasoning"))
    out["reasoning"] = {"effort": r.get("effort"), "summary": r.get("summary")}
    text = _obj(request.get("text"))
    out["text"] = {**text, "format": _obj(text.get("format")) or {"type": "text"}}
    out["service_tier"] = "default"
    out["usage"] = None
    return out


def responses_usage(chat_usage: Any) -> JsonObject:
    u = _obj(chat_usage)
    prompt, completion = _int(u.get("prompt_tokens")), _int(u.get("completion_tokens"))
    details = _obj(u.get("prompt_tokens_details"))
    cached = min(prompt, _int(details.get("cached_tokens")))
    written = min(prompt - cached, _int(details.get("cache_write_tokens")))
    reasoning = min(completion, _int(_obj(u.get("completion_tokens_details")).get("reasoning_tokens")))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def finished(
    envelope: JsonObject, output: list[JsonObject], finish_reason: str | None, usage: JsonObject | None
) -> JsonObject:
    """The envelope with its output, final status and usage."""
    why = INCOMPLETE.get(finish_reason or "")
    return {
        **envelope,
        "status": "incomplete" if why else "completed",
        "incomplete_details": {"reason": why} if why else None,
        "output": output,
        "usage": usage,
        "completed_at": None if why else int(time.time()),
    }


def message_item(item_id: str, text: str, *, refusal: str = "", status: str = "completed") -> JsonObject:
    content: list[JsonObject] = []
    if text or not refusal:
        content.append(output_text_part(text))
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def output_text_part(text: str) -> JsonObject:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(item_id: str, text: str) -> JsonObject:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": "completed",
    }


def call_item(
    item_id: str, call_id: str, chat_name: str, arguments: str, names: ToolNames, status: str = "completed"
) -> JsonObject:
    """A chat tool call as the client's own item: function_call, or custom_tool_call with its text input."""
    kind, name, ns = names.item_of(chat_name)
    if kind == "custom":
        item: JsonObject = {
            "id": item_id,
            "type": "custom_tool_call",
            "call_id": call_id,
            "name": name,
            "input": custom_input(arguments),
        }
    else:
        item = {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
        }
    if ns is not None:
        item["namespace"] = ns
    return item


def custom_input(arguments: str) -> str:
    """The text a custom tool gets: the ``input`` member the chat model wrote, or its raw arguments."""
    try:
        obj = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return arguments
    value = obj.get("input") if isinstance(obj, dict) else None
    return value if isinstance(value, str) else arguments


def chat_to_response(
    reply: JsonObject, *, request: JsonObject, names: ToolNames, model: str, response_id: str
) -> JsonObject:
    """A non-streamed chat.completion as a Responses response object; ValueError when it has no choice."""
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("the reply has no choices")
    choice = choices[0]
    msg = _obj(choice.get("message"))
    output: list[JsonObject] = []
    thought = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(thought, str) and thought:
        output.append(reasoning_item(new_id("rs"), thought))
    text, refusal = string(msg.get("content")), string(msg.get("refusal"))
    if text or refusal:
        output.append(message_item(new_id("msg"), text, refusal=refusal))
    calls = msg.get("tool_calls")
    for call in (c for c in calls if isinstance(c, dict)) if isinstance(calls, list) else ():
        fn = _obj(call.get("function"))
        if not isinstance(fn.get("name"), str):
            continue
        args = string(fn.get("arguments"))
        call_id = string(call.get("id")) or new_id("call")
        output.append(call_item(new_id("fc"), call_id, fn["name"], args, names))
    if not output:
        output.append(message_item(new_id("msg"), ""))
    envelope = response_envelope(request, response_id=response_id, model=model)
    reason = choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None
    return finished(envelope, output, reason, responses_usage(reply.get("usage")))
