"""OpenAI chat request -> Anthropic Messages request (the reverse bridge)."""

from __future__ import annotations

from typing import Any

import orjson

from tiergate.adapters.translate_common import (
    _OPENAI_CONSUMED,
    _OPENAI_NEUTRAL,
    _TOOL_CHOICE,
    JSON_OBJECT_INSTRUCTION,
    SAMPLING_REMOVED_IN,
    JsonObject,
    _bad,
    _clamp,
    _joined_text,
    _leftovers,
    _note,
    _obj,
    _objects,
    _required,
)

# --------------------------------------------------------------------------- OpenAI -> Anthropic


def openai_to_anthropic_request(
    body: JsonObject,
    *,
    model: str,
    max_tokens_limit: int | None = None,
    default_max_tokens: int = 4096,
    anthropic_version: str = "2023-06-01",
) -> tuple[JsonObject, list[str]]:
    """OpenAI chat request -> Anthropic Messages request.

    System and developer messages are hoisted into ``system`` wherever they
    stand (Anthropic has one system prompt). ``response_format: json_object``
    becomes an instruction appended to the system prompt; ``json_schema`` is
    dropped. Temperature above Anthropic's 1.0 ceiling is clamped, and when
    both temperature and top_p are given only temperature is sent (newer
    Claude models refuse the pair); both cases are listed in ``dropped``.
    ``anthropic_version`` is the ``anthropic-version`` header the adapter
    sends: from 2026-10-21 on the API refuses temperature and top_p, so they
    are then dropped (and listed) instead of sent.
    """
    if not isinstance(body, dict):
        raise _bad("body", "must be a JSON object")
    dropped: list[str] = []
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages", "must be a non-empty array")
    system: list[str] = []
    messages: list[JsonObject] = []
    for i, msg in enumerate(raw):
        _openai_message(msg, f"messages[{i}]", system, messages, dropped)
    if not messages:
        raise _bad("messages", "needs at least one user, assistant or tool message")
    for msg in messages:  # a lone text block reads better, and travels better, as a string
        if (
            len(msg["content"]) == 1
            and msg["content"][0].keys() == {"type", "text"}
            and msg["content"][0]["type"] == "text"
        ):
            msg["content"] = msg["content"][0]["text"]

    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        system.append(JSON_OBJECT_INSTRUCTION)
    elif isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        _note(dropped, "response_format")
    path = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    limit = body.get(path)
    out: dict[str, Any] = {
        "model": model,
        "max_tokens": _clamp(default_max_tokens if limit is None else limit, max_tokens_limit, path),
    }
    if system:
        out["system"] = "\n\n".join(system)
    out["messages"] = messages

    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("stop", "must be a string or an array of strings")
        kept = [s for s in stops if s.strip()]  # Anthropic refuses whitespace-only sequences
        if len(kept) < len(stops):
            _note(dropped, "stop")
        if kept:
            out["stop_sequences"] = kept
    _sampling(body, out, dropped, anthropic_version)
    if body.get("stream"):
        out["stream"] = True

    tools = _openai_tools(body.get("tools"), dropped)
    if tools:
        out["tools"] = tools
        choice = _openai_tool_choice(body.get("tool_choice"), dropped)
        if body.get("parallel_tool_calls") is False and (choice or {}).get("type") != "none":
            choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if choice is not None:
            out["tool_choice"] = choice
    elif body.get("tool_choice") not in (None, "none", "auto"):
        _note(dropped, "tool_choice")
    user = body.get("user") or body.get("safety_identifier")  # the latter is the former's successor
    if isinstance(user, str):
        out["metadata"] = {"user_id": user}
    _leftovers(body, _OPENAI_CONSUMED, dropped, _OPENAI_NEUTRAL)
    return out, dropped


def _sampling(body: JsonObject, out: JsonObject, dropped: list[str], anthropic_version: str) -> None:
    temperature, top_p = body.get("temperature"), body.get("top_p")
    if anthropic_version >= SAMPLING_REMOVED_IN:
        for key in ("temperature", "top_p"):
            if body.get(key) is not None:
                _note(dropped, key)
    elif temperature is not None:
        if isinstance(temperature, (int, float)) and temperature > 1:
            _note(dropped, "temperature")  # OpenAI allows up to 2, Anthropic up to 1
            temperature = 1.0
        out["temperature"] = temperature
        if top_p is not None:
            _note(dropped, "top_p")
    elif top_p is not None:
        out["top_p"] = top_p


def _openai_image(part: JsonObject, path: str, dropped: list[str]) -> JsonObject:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise _bad(f"{path}.image_url.url", "is required")
    if isinstance(image, dict) and image.get("detail") not in (None, "auto"):
        _note(dropped, "image_url.detail")
    if not url.startswith("data:"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    head, sep, data = url[5:].partition(",")
    media_type, _, encoding = head.partition(";")
    if not sep or encoding != "base64" or not media_type:
        raise _bad(f"{path}.image_url.url", "data URL must be data:<media type>;base64,<data>")
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _openai_parts(content: Any, path: str, dropped: list[str]) -> list[JsonObject]:
    """User or assistant content (string or parts) -> Anthropic blocks."""
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[JsonObject] = []
    for j, part in _objects(content, path, "a string or an array of content parts"):
        here = f"{path}[{j}]"
        kind, file = part.get("type"), _obj(part.get("file"))
        if kind in ("text", "refusal"):
            if not isinstance(part.get(kind), str):
                raise _bad(f"{here}.{kind}", "must be a string")
            if part[kind]:
                blocks.append({"type": "text", "text": part[kind]})
        elif kind == "image_url":
            blocks.append(_openai_image(part, here, dropped))
        elif kind == "file" and str(file.get("file_data", "")).startswith("data:application/pdf;base64,"):
            doc = {
                "type": "document",
                "source": {
                    "type": "base64",
                    "media_type": "application/pdf",
                    "data": file["file_data"].split(",", 1)[1],
                },
            }
            blocks.append({**doc, "title": file["filename"]} if file.get("filename") else doc)
        else:
            _note(dropped, f"content.{kind}")
    return blocks


def _openai_tool_calls(calls: Any, path: str, dropped: list[str]) -> list[JsonObject]:
    blocks: list[JsonObject] = []
    for j, call in _objects(calls, path):
        here = f"{path}[{j}]"
        if call.get("type", "function") != "function":
            _note(dropped, f"tool_calls.{call.get('type')}")
            continue
        call_id = _required(call, "id", here)
        fn = _obj(call.get("function"))
        name = _required(fn, "name", f"{here}.function")
        args = fn.get("arguments") or ""
        try:  # "" is how some servers spell "no arguments"
            parsed = (orjson.loads(args) if args.strip() else {}) if isinstance(args, str) else None
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _bad(f"{here}.function.arguments", "must be a JSON object encoded as a string")
        blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": parsed})
    return blocks


def _push(messages: list[JsonObject], role: str, blocks: list[JsonObject]) -> None:
    """Append a turn, merging with the previous one of the same role as Anthropic would."""
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _openai_message(msg: Any, path: str, system: list[str], messages: list[JsonObject], dropped: list[str]) -> None:
    if not isinstance(msg, dict):
        raise _bad(path, "must be an object")
    role, content = msg.get("role"), msg.get("content")
    if role not in ("system", "developer", "user", "assistant", "tool"):
        raise _bad(f"{path}.role", f"unknown role {role!r}")
    if msg.get("name") is not None:
        _note(dropped, "messages.name")
    if role in ("system", "developer"):
        if text := _joined_text(content, f"{path}.content", ""):
            system.append(text)
    elif role == "tool":  # consecutive results merge into one user turn, as Anthropic requires
        result = {
            "type": "tool_result",
            "tool_use_id": _required(msg, "tool_call_id", path),
            "content": _joined_text(content, f"{path}.content", ""),
        }
        _push(messages, "user", [result])
    elif role == "user":
        if blocks := _openai_parts(content, f"{path}.content", dropped):
            _push(messages, "user", blocks)
    else:
        blocks = _openai_parts(content, f"{path}.content", dropped)
        if msg.get("tool_calls"):
            blocks += _openai_tool_calls(msg["tool_calls"], f"{path}.tool_calls", dropped)
        for key in ("function_call", "audio"):
            if msg.get(key) is not None:
                _note(dropped, f"messages.{key}")
        if blocks:  # Anthropic refuses empty turns; an empty assistant turn carries nothing
            _push(messages, "assistant", blocks)


def _openai_tools(tools: Any, dropped: list[str]) -> list[JsonObject]:
    out: list[JsonObject] = []
    for i, tool in _objects(tools, "tools") if tools is not None else ():
        if tool.get("type") != "function":
            _note(dropped, f"tools.{tool.get('type')}")
            continue
        fn = _obj(tool.get("function"))
        entry: dict[str, Any] = {"name": _required(fn, "name", f"tools[{i}].function")}
        if fn.get("description"):
            entry["description"] = fn["description"]
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise _bad(f"tools[{i}].function.parameters", "must be an object")
        entry["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
        if isinstance(fn.get("strict"), bool):
            entry["strict"] = fn["strict"]
        out.append(entry)
    return out


def _openai_tool_choice(choice: Any, dropped: list[str]) -> JsonObject | None:
    simple = {openai: anthropic for anthropic, openai in _TOOL_CHOICE}
    if choice is None or isinstance(choice, str) and choice in simple:
        return {"type": simple[choice]} if choice else None
    if isinstance(choice, dict) and choice.get("type") == "function":
        fn = _obj(choice.get("function"))
        return {"type": "tool", "name": _required(fn, "name", "tool_choice.function")}
    if isinstance(choice, dict) and isinstance(choice.get("type"), str):
        _note(dropped, f"tool_choice.{choice['type']}")  # e.g. allowed_tools
        return None
    raise _bad("tool_choice", f"unknown tool_choice {choice!r}")
