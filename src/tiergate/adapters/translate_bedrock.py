"""OpenAI chat completions <-> AWS Bedrock's Converse API: requests, replies and stream events. Pure.

Converse (Bedrock's one API for every model it hosts, Anthropic's included)
takes ``messages`` of typed content blocks (``text``, ``image``, ``toolUse``,
``toolResult``) that must alternate user/assistant, the system prompt apart,
``inferenceConfig`` and ``toolConfig``; it answers ``output.message`` with a
``stopReason`` and ``usage`` (input tokens exclude cache reads and writes,
as on Anthropic's API). Streams are AWS event-stream frames whose events
(``messageStart``, ``contentBlockStart/Delta/Stop``, ``messageStop``,
``metadata``) become OpenAI chunks here. What Converse cannot carry is named
in ``dropped``; what cannot be translated at all is a ValueError naming the
field (the adapter turns it into a 400).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from tiergate.adapters.translate_common import _OPENAI_NEUTRAL, JsonObject, _bad, _leftovers, _note, _obj, _objects

CONSUMED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
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
)
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}


def _text(content: Any, path: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    parts = _objects(content, path, "a string or an array of text parts")
    return "".join(str(p.get("text") or "") for _, p in parts if p.get("type") == "text")


def _user_blocks(content: Any, path: str, dropped: list[str]) -> list[JsonObject]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    out: list[JsonObject] = []
    for j, part in _objects(content, path, "a string or an array of content parts"):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            out.append({"text": part["text"]})
        elif kind == "image_url":
            url = str(_obj(part.get("image_url")).get("url") or "")
            head, _, data = url.partition(",")
            fmt = IMAGE_FORMATS.get(head.removeprefix("data:").removesuffix(";base64"))
            if not (url.startswith("data:") and head.endswith(";base64") and fmt):
                raise _bad(
                    f"{path}[{j}].image_url.url", "Bedrock takes images as base64 data: URLs (png, jpeg, gif, webp)"
                )
            out.append({"image": {"format": fmt, "source": {"bytes": data}}})
            base64.b64decode(data, validate=True)  # a broken image is the client's 400, not Bedrock's
        else:
            _note(dropped, f"messages[].content[].{kind}")
    return out


def _tool_use(call: JsonObject, path: str) -> JsonObject:
    fn = call.get("function")
    fn = fn if isinstance(fn, dict) else {}
    name, raw = fn.get("name"), fn.get("arguments") or "{}"
    if not isinstance(name, str) or not name:
        raise _bad(f"{path}.function.name", "is required")
    try:
        args = orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        raise _bad(f"{path}.function.arguments", "must be a JSON object") from None
    if not isinstance(args, dict):
        raise _bad(f"{path}.function.arguments", "must be a JSON object")
    return {"toolUse": {"toolUseId": str(call.get("id") or name), "name": name, "input": args}}


def converse_request(
    body: JsonObject, *, max_tokens_limit: int | None = None, output_cap: int | None = None
) -> tuple[JsonObject, list[str]]:
    """(the Converse body, the OpenAI fields it cannot carry)."""
    dropped: list[str] = []
    system: list[JsonObject] = []
    turns: list[tuple[str, list[JsonObject]]] = []

    def add(role: str, blocks: list[JsonObject]) -> None:
        if not blocks:
            return
        if turns and turns[-1][0] == role:  # Converse wants user and assistant to alternate
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))

    for i, msg in _objects(body.get("messages"), "messages"):
        role, path = msg.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            text = _text(msg.get("content"), f"{path}.content")
            if text:
                system.append({"text": text})
        elif role == "user":
            add("user", _user_blocks(msg.get("content"), f"{path}.content", dropped))
        elif role == "assistant":
            blocks: list[JsonObject] = []
            text = _text(msg.get("content"), f"{path}.content")
            if text:
                blocks.append({"text": text})
            for j, call in _objects(msg.get("tool_calls") or [], f"{path}.tool_calls"):
                blocks.append(_tool_use(call, f"{path}.tool_calls[{j}]"))
            add("assistant", blocks)
        elif role == "tool":
            result = {
                "toolUseId": str(msg.get("tool_call_id") or ""),
                "content": [{"text": _text(msg.get("content"), f"{path}.content")}],
            }
            add("user", [{"toolResult": result}])
        else:
            raise _bad(f"{path}.role", "must be one of system, developer, user, assistant, tool")
    if not turns:
        raise _bad("messages", "needs at least one user message")
    out: JsonObject = {"messages": [{"role": r, "content": b} for r, b in turns]}
    if system:
        out["system"] = system
    config: JsonObject = {}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is None:
        limit = output_cap
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise _bad("max_tokens", "must be a positive integer")
        config["maxTokens"] = min(limit, max_tokens_limit) if max_tokens_limit else limit
    for src, dst in (("temperature", "temperature"), ("top_p", "topP")):
        if isinstance(body.get(src), int | float) and not isinstance(body.get(src), bool):
            config[dst] = body[src]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)]
    if config:
        out["inferenceConfig"] = config
    tools = _tool_config(body, dropped)
    if tools:
        out["toolConfig"] = tools
    _leftovers(body, CONSUMED, dropped, _OPENAI_NEUTRAL)
    return out, dropped


def _tool_config(body: JsonObject, dropped: list[str]) -> JsonObject | None:
    specs = []
    for i, tool in _objects(body.get("tools") or [], "tools"):
        fn = tool.get("function")
        if tool.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad(f"tools[{i}]", "must be {type: function, function: {name, parameters}}")
        spec: JsonObject = {"name": fn["name"], "inputSchema": {"json": fn.get("parameters") or {"type": "object"}}}
        if isinstance(fn.get("description"), str) and fn["description"]:
            spec["description"] = fn["description"]
        specs.append({"toolSpec": spec})
    if not specs:
        return None
    choice = body.get("tool_choice")
    config: JsonObject = {"tools": specs}
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict) and isinstance(_obj(choice.get("function")).get("name"), str):
        config["toolChoice"] = {"tool": {"name": choice["function"]["name"]}}
    elif choice == "none":
        _note(dropped, "tool_choice")  # Converse has no "none": the model may still call a tool
    return config


def _usage(u: Any) -> JsonObject:
    u = u if isinstance(u, dict) else {}
    read, write = int(u.get("cacheReadInputTokens") or 0), int(u.get("cacheWriteInputTokens") or 0)
    prompt = int(u.get("inputTokens") or 0) + read + write
    completion = int(u.get("outputTokens") or 0)
    out: JsonObject = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if read or write:
        out["prompt_tokens_details"] = {"cached_tokens": read, "cache_creation_tokens": write}
    return out


def chat_completion(reply: Any, *, model: str, ident: str, created: int) -> JsonObject:
    """A Converse reply as an OpenAI ``chat.completion`` (ValueError when it is not a Converse reply)."""
    message = _obj(_obj(reply).get("output")).get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        raise ValueError("not a Converse reply: no output.message.content")
    text, calls = "", []
    for block in message["content"]:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            text += block["text"]
        use = block.get("toolUse")
        if isinstance(use, dict):
            args = orjson.dumps(use.get("input") or {}).decode()
            calls.append(
                {
                    "id": str(use.get("toolUseId")),
                    "type": "function",
                    "function": {"name": use.get("name"), "arguments": args},
                }
            )
    msg: JsonObject = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        msg["tool_calls"] = calls
    finish = STOP_REASONS.get(str(reply.get("stopReason")), "stop")
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(reply.get("usage")),
    }


class StreamTranslator:
    """Converse stream events (event type, payload) in, OpenAI ``chat.completion.chunk`` events out."""

    def __init__(self, *, model: str, ident: str, created: int) -> None:
        self._head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
        self._tools: dict[int, int] = {}  # Converse content block index -> OpenAI tool call index

    def _chunk(self, delta: JsonObject | None, finish: str | None = None, **extra: Any) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return b"data: " + orjson.dumps({**self._head, "choices": choices, **extra}) + b"\n\n"

    def event(self, kind: str, payload: JsonObject) -> list[bytes]:
        """The OpenAI events for one Converse event (none for those with nothing to say)."""
        if kind == "messageStart":
            return [self._chunk({"role": "assistant", "content": ""})]
        block = payload.get("contentBlockIndex")
        if kind == "contentBlockStart":
            use = _obj(payload.get("start")).get("toolUse")
            if isinstance(use, dict) and isinstance(block, int):
                n = self._tools[block] = len(self._tools)
                call = {"index": n, "id": use.get("toolUseId"), "type": "function"}
                return [self._chunk({"tool_calls": [{**call, "function": {"name": use.get("name"), "arguments": ""}}]})]
            return []
        if kind == "contentBlockDelta":
            delta = _obj(payload.get("delta"))
            if isinstance(delta.get("text"), str):
                return [self._chunk({"content": delta["text"]})]
            use = delta.get("toolUse")
            if isinstance(use, dict) and isinstance(block, int) and block in self._tools:
                part = {"index": self._tools[block], "function": {"arguments": str(use.get("input") or "")}}
                return [self._chunk({"tool_calls": [part]})]
            return []
        if kind == "messageStop":
            return [self._chunk({}, STOP_REASONS.get(str(payload.get("stopReason")), "stop"))]
        if kind == "metadata":
            return [self._chunk(None, usage=_usage(payload.get("usage"))), b"data: [DONE]\n\n"]
        return []
