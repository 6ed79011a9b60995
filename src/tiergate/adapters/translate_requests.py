"""Request translation between Anthropic Messages and OpenAI Chat Completions.

Pure functions, no I/O. The target body is built from an allow-list: a field
is emitted only when its meaning survives the trip, so a strict upstream never
answers 400 for something the client sent to the other protocol. Everything
that could not be honoured is named once in the returned ``dropped`` list
(dotted names, e.g. ``"cache_control"``, ``"content.thinking"``,
``"tools.web_search_20250305"``) for the caller to log or surface.

Malformed input raises ``ValueError("<field path>: <what is wrong>")``; the
caller answers 400 in the client's own error format.
"""

from __future__ import annotations

from typing import Any

import orjson

from tiergate.adapters.translate_common import (
    _ANTHROPIC_CONSUMED,
    _TOOL_CHOICE,
    _TOOL_KEYS,
    OPENAI_MAX_STOP,
    JsonObject,
    _bad,
    _blocks,
    _clamp,
    _joined_text,
    _leftovers,
    _mentions,
    _note,
    _obj,
    _objects,
    _required,
)

# re-exported: one import point for both directions
from tiergate.adapters.translate_to_anthropic import openai_to_anthropic_request as openai_to_anthropic_request

# --------------------------------------------------------------------------- Anthropic -> OpenAI


def anthropic_to_openai_request(
    body: JsonObject, *, model: str, max_tokens_limit: int | None = None
) -> tuple[JsonObject, list[str]]:
    """Anthropic Messages request -> OpenAI chat request for an OpenAI-protocol upstream.

    ``max_tokens`` becomes OpenAI ``max_tokens`` (the spelling every
    OpenAI-compatible server accepts), clamped to ``max_tokens_limit``.
    """
    if not isinstance(body, dict):
        raise _bad("body", "must be a JSON object")
    dropped: list[str] = ["cache_control"] if _mentions(body, "cache_control") else []
    messages: list[JsonObject] = []
    systems = [_joined_text(body.get("system"), "system", "\n\n")]
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages", "must be a non-empty array")
    for i, msg in enumerate(raw):
        if isinstance(msg, dict) and msg.get("role") == "system":
            # Claude Code sends system turns inside messages; many OpenAI-compatible chat
            # templates accept a system message only first, so they join the leading one.
            systems.append(_joined_text(msg.get("content"), f"messages[{i}].content", "\n\n"))
            continue
        messages.extend(_anthropic_message(msg, f"messages[{i}]", dropped))
    system = "\n\n".join(t for t in systems if t)
    if system:
        messages.insert(0, {"role": "system", "content": system})

    out: dict[str, Any] = {"model": model, "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = _clamp(body["max_tokens"], max_tokens_limit, "max_tokens")
    stops = body.get("stop_sequences")
    if stops:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("stop_sequences", "must be an array of strings")
        if len(stops) > OPENAI_MAX_STOP:
            _note(dropped, "stop_sequences")
        out["stop"] = stops[:OPENAI_MAX_STOP]
    out.update((k, body[k]) for k in ("temperature", "top_p") if body.get(k) is not None)
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}

    tools = _anthropic_tools(body.get("tools"), dropped)
    if body.get("tool_choice") is not None:
        choice, no_parallel = _anthropic_tool_choice(body["tool_choice"])
        if tools:
            out["tool_choice"] = choice
            if no_parallel:
                out["parallel_tool_calls"] = False
        elif choice not in ("auto", "none"):
            _note(dropped, "tool_choice")  # it named a tool that could not be sent
    if tools:
        out["tools"] = tools
    meta = body.get("metadata")
    for key, value in meta.items() if isinstance(meta, dict) else ():
        if key == "user_id" and isinstance(value, str) and value:
            out["user"] = value
        elif value is not None:
            _note(dropped, f"metadata.{key}")
    _leftovers(body, _ANTHROPIC_CONSUMED, dropped)
    return out, dropped


def _anthropic_part(block: JsonObject, path: str, dropped: list[str]) -> JsonObject | None:
    """One user-side block -> one OpenAI content part, or None when OpenAI cannot carry it.

    Plain-text documents become text, base64 PDFs an OpenAI ``file`` part.
    """
    kind = block["type"]
    src = _obj(block.get("source"))
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise _bad(f"{path}.text", "must be a string")
        if block.get("citations"):
            _note(dropped, "citations")
        return {"type": "text", "text": block["text"]}
    if kind == "image" and src.get("type") == "base64":
        if not isinstance(src.get("media_type"), str) or not isinstance(src.get("data"), str):
            raise _bad(f"{path}.source", "base64 source needs media_type and data")
        return {"type": "image_url", "image_url": {"url": f"data:{src['media_type']};base64,{src['data']}"}}
    if kind == "image" and src.get("type") == "url":
        return {"type": "image_url", "image_url": {"url": _required(src, "url", f"{path}.source")}}
    if kind == "document" and src.get("type") == "text" and isinstance(src.get("data"), str):
        return {"type": "text", "text": src["data"]}
    if kind == "document" and src.get("type") == "base64" and src.get("media_type") == "application/pdf":
        return {
            "type": "file",
            "file": {
                "file_data": f"data:application/pdf;base64,{src.get('data', '')}",
                "filename": block.get("title") or "document.pdf",
            },
        }
    _note(dropped, f"{kind}.source.{src.get('type')}" if kind in ("image", "document") else f"content.{kind}")
    return None


def _tool_result(block: JsonObject, path: str, dropped: list[str]) -> tuple[JsonObject, list[JsonObject]]:
    """tool_result -> (OpenAI tool message, parts that must ride in the next user message).

    OpenAI tool messages carry text only, so images in a result move to the
    user message that follows; ``is_error`` survives as an "Error: " prefix.
    """
    tool_id = _required(block, "tool_use_id", path)
    content = block.get("content")
    texts: list[str] = [content] if isinstance(content, str) else []
    extra: list[JsonObject] = []
    if content is not None and not isinstance(content, str):
        for k, inner in enumerate(_blocks(content, f"{path}.content")):
            part = _anthropic_part(inner, f"{path}.content[{k}]", dropped)
            if part is not None and part["type"] == "text":
                texts.append(part["text"])
            elif part is not None:
                extra.append(part)
    text = "\n\n".join(texts)
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": tool_id, "content": text}, extra


def _anthropic_message(msg: Any, path: str, dropped: list[str]) -> list[JsonObject]:
    if not isinstance(msg, dict):
        raise _bad(path, "must be an object")
    role, content = msg.get("role"), msg.get("content")
    if role not in ("user", "assistant"):
        raise _bad(f"{path}.role", f"unknown role {role!r}")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    blocks = _blocks(content, f"{path}.content")
    if role == "assistant":
        return [_anthropic_assistant(blocks, path, dropped)]
    out: list[JsonObject] = []
    parts: list[JsonObject] = []
    for j, block in enumerate(blocks):
        if block["type"] == "tool_result":
            tool_msg, extra = _tool_result(block, f"{path}.content[{j}]", dropped)
            out.append(tool_msg)
            parts.extend(extra)
        elif (part := _anthropic_part(block, f"{path}.content[{j}]", dropped)) is not None:
            parts.append(part)
    if parts:  # after the tool messages: OpenAI wants those right behind the tool_calls
        single = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if single else parts})
    return out or [{"role": "user", "content": ""}]


def _anthropic_assistant(content: list[JsonObject], path: str, dropped: list[str]) -> JsonObject:
    texts: list[str] = []
    calls: list[JsonObject] = []
    for j, block in enumerate(content):
        here = f"{path}.content[{j}]"
        if block["type"] == "text":
            if not isinstance(block.get("text"), str):
                raise _bad(f"{here}.text", "must be a string")
            texts.append(block["text"])
        elif block["type"] == "tool_use":
            call_id, name = _required(block, "id", here), _required(block, "name", here)
            args = block.get("input", {})
            if not isinstance(args, dict):
                raise _bad(f"{here}.input", "must be an object")
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(args).decode()},
                }
            )
        else:  # thinking, redacted_thinking, server tool blocks
            _note(dropped, f"content.{block['type']}")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _anthropic_tools(tools: Any, dropped: list[str]) -> list[JsonObject]:
    """Client tools -> functions; server tools (typed, no input_schema) cannot travel."""
    out: list[JsonObject] = []
    for i, tool in _objects(tools, "tools") if tools is not None else ():
        if tool.get("type") not in (None, "custom") or "input_schema" not in tool:
            _note(dropped, f"tools.{tool.get('type') or tool.get('name')}")
            continue
        fn: dict[str, Any] = {"name": _required(tool, "name", f"tools[{i}]")}
        if tool.get("description"):
            fn["description"] = tool["description"]
        if not isinstance(tool["input_schema"], dict):
            raise _bad(f"tools[{i}].input_schema", "must be an object")
        fn["parameters"] = tool["input_schema"]
        if isinstance(tool.get("strict"), bool):
            fn["strict"] = tool["strict"]
        for key, value in tool.items():
            if key not in _TOOL_KEYS and value is not None:
                _note(dropped, f"tools.{key}")
        out.append({"type": "function", "function": fn})
    return out


def _anthropic_tool_choice(choice: Any) -> tuple[str | JsonObject, bool]:
    """-> (OpenAI tool_choice, whether parallel tool calls are disabled)."""
    raw = choice.get("type") if isinstance(choice, dict) else None
    kind = raw if isinstance(raw, str) else None  # a list or object would make the lookup below raise TypeError
    no_parallel = kind != "none" and bool(choice.get("disable_parallel_tool_use")) if kind else False
    simple = dict(_TOOL_CHOICE)
    if kind in simple:
        return simple[kind], no_parallel
    if kind == "tool":
        return {"type": "function", "function": {"name": _required(choice, "name", "tool_choice")}}, no_parallel
    raise _bad("tool_choice.type", f"unknown tool_choice {raw!r}")
