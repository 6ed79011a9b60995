"""Chat Completions over an upstream that speaks only Responses (``api: openai-responses``). Pure, no I/O.

The reverse of ``responses_request``/``responses_reply``/``responses_stream``:
a chat request becomes Responses input items (system messages stay in place
as system items, tool calls become ``function_call`` items, tool messages
``function_call_output`` items), the response object becomes a
chat.completion, and Responses stream events become chat chunks ending in
``[DONE]``. ``store`` is sent false: a chat client keeps its own history. As
everywhere, what Responses cannot take is named in ``dropped`` (``stop``,
``n``, ``logprobs``...). An Anthropic Messages client reaches such an
upstream through the existing Anthropic-over-chat bridge on top of this one.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from tiergate.adapters.responses_request import string
from tiergate.adapters.translate_common import _OPENAI_NEUTRAL, JsonObject, _bad, _clamp, _note, _obj, _objects
from tiergate.adapters.translate_streams import parse_sse

_CONSUMED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
        "response_format",
        "reasoning_effort",
        "store",
    }
)
FINISH = {"max_output_tokens": "length", "content_filter": "content_filter"}


def chat_to_responses_request(
    body: JsonObject, *, model: str, max_tokens_limit: int | None = None
) -> tuple[JsonObject, list[str]]:
    if not isinstance(body, dict):
        raise _bad("body", "must be a JSON object")
    dropped: list[str] = []
    items: list[JsonObject] = []
    for i, msg in _objects(body.get("messages"), "messages"):
        items.extend(_items(msg, f"messages[{i}]", dropped))
    if not items:
        raise _bad("messages", "must be a non-empty array")
    out: JsonObject = {"model": model, "input": items, "store": False}
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if body.get(key) is not None:
        out["max_output_tokens"] = _clamp(body[key], max_tokens_limit, key)
    out.update((k, body[k]) for k in ("temperature", "top_p", "parallel_tool_calls") if body.get(k) is not None)
    if body.get("stream"):
        out["stream"] = True
    tools = [t for _, t in _objects(body.get("tools") or [], "tools")]
    if tools:
        out["tools"] = [_tool(t, f"tools[{i}]", dropped) for i, t in enumerate(tools)]
        out["tools"] = [t for t in out["tools"] if t is not None]
    choice = body.get("tool_choice")
    if choice in ("auto", "none", "required"):
        out["tool_choice"] = choice
    elif isinstance(choice, dict) and isinstance(_obj(choice.get("function")).get("name"), str):
        out["tool_choice"] = {"type": "function", "name": choice["function"]["name"]}
    elif choice is not None:
        _note(dropped, "tool_choice")
    fmt = _obj(body.get("response_format"))
    if fmt.get("type") == "json_schema":
        spec = _obj(fmt.get("json_schema"))
        out["text"] = {
            "format": {
                "type": "json_schema",
                "name": string(spec.get("name")) or "response",
                **{k: spec[k] for k in ("schema", "strict", "description") if spec.get(k) is not None},
            }
        }
    elif fmt.get("type") == "json_object":
        out["text"] = {"format": {"type": "json_object"}}
    if isinstance(body.get("reasoning_effort"), str):
        out["reasoning"] = {"effort": body["reasoning_effort"]}
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        out["safety_identifier"] = user
    neutral = dict(_OPENAI_NEUTRAL)
    for k, v in body.items():
        if k not in _CONSUMED and v is not None and not (k in neutral and v == neutral[k]):
            _note(dropped, k)
    return out, dropped


def _items(msg: JsonObject, path: str, dropped: list[str]) -> list[JsonObject]:
    role = msg.get("role")
    content = msg.get("content")
    if role == "tool":
        call_id = msg.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise _bad(f"{path}.tool_call_id", "is required")
        return [{"type": "function_call_output", "call_id": call_id, "output": _text(content, path)}]
    if role in ("system", "developer"):
        return [{"role": role, "content": _text(content, path)}]
    if role == "assistant":
        out: list[JsonObject] = []
        text = _text(content, path) if content is not None else ""
        if text:
            out.append({"role": "assistant", "content": text})
        for j, call in _objects(msg.get("tool_calls") or [], f"{path}.tool_calls"):
            fn = _obj(call.get("function"))
            if not isinstance(fn.get("name"), str) or not isinstance(call.get("id"), str):
                raise _bad(f"{path}.tool_calls[{j}]", "needs an id and a function name")
            out.append(
                {
                    "type": "function_call",
                    "call_id": call["id"],
                    "name": fn["name"],
                    "arguments": string(fn.get("arguments")) or "{}",
                }
            )
        return out
    if role != "user":
        raise _bad(f"{path}.role", "must be system, developer, user, assistant or tool")
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    parts: list[JsonObject] = []
    for _, part in _objects(content, f"{path}.content", "a string or an array of parts"):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "input_text", "text": part["text"]})
        elif kind == "image_url" and isinstance(_obj(part.get("image_url")).get("url"), str):
            image = part["image_url"]
            parts.append({"type": "input_image", "image_url": image["url"], "detail": image.get("detail") or "auto"})
        elif kind == "file" and isinstance(_obj(part.get("file")).get("file_data"), str):
            f = part["file"]
            parts.append({"type": "input_file", "file_data": f["file_data"], "filename": f.get("filename") or "file"})
        else:
            _note(dropped, f"content.{kind}")
    return [{"role": "user", "content": parts}] if parts else []


def _text(content: Any, path: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for j, part in _objects(content, f"{path}.content", "a string or an array of text parts"):
        if not isinstance(part.get("text"), str):
            raise _bad(f"{path}.content[{j}]", "must be a text part")
        texts.append(part["text"])
    return "".join(texts)


def _tool(tool: JsonObject, path: str, dropped: list[str]) -> JsonObject | None:
    fn = _obj(tool.get("function"))
    if tool.get("type") != "function" or not isinstance(fn.get("name"), str):
        _note(dropped, f"tools.{tool.get('type')}")
        return None
    out: JsonObject = {
        "type": "function",
        "name": fn["name"],
        "parameters": _obj(fn.get("parameters")) or {"type": "object", "properties": {}},
    }
    if isinstance(fn.get("description"), str):
        out["description"] = fn["description"]
    out["strict"] = bool(fn.get("strict"))
    return out


# --------------------------------------------------------------------------- replies


def chat_usage(u: Any) -> JsonObject:
    u = _obj(u)
    prompt = u.get("input_tokens") if isinstance(u.get("input_tokens"), int) else 0
    completion = u.get("output_tokens") if isinstance(u.get("output_tokens"), int) else 0
    cached = _obj(u.get("input_tokens_details")).get("cached_tokens")
    reasoning = _obj(u.get("output_tokens_details")).get("reasoning_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached if isinstance(cached, int) else 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning if isinstance(reasoning, int) else 0},
    }


def _item_texts(item: JsonObject) -> tuple[str, str, str]:
    """(text, refusal, reasoning) of one output item."""
    text = refusal = thought = ""
    parts = item.get("content")
    for p in parts if isinstance(parts, list) else ():
        p = _obj(p)
        if p.get("type") == "output_text":
            text += string(p.get("text"))
        elif p.get("type") == "refusal":
            refusal += string(p.get("refusal"))
        elif p.get("type") == "reasoning_text":
            thought += string(p.get("text"))
    if item.get("type") == "reasoning" and not thought:
        summary = item.get("summary")
        thought = "\n".join(string(_obj(s).get("text")) for s in (summary if isinstance(summary, list) else ()))
    return text, refusal, thought


def responses_to_chat_response(obj: JsonObject, *, model: str) -> JsonObject:
    output = obj.get("output")
    if not isinstance(output, list):
        raise ValueError("the response has no output list")
    text = refusal = thought = ""
    calls: list[JsonObject] = []
    for item in (i for i in output if isinstance(i, dict)):
        t, r, th = _item_texts(item)
        text, refusal, thought = text + t, refusal + r, thought + th
        if item.get("type") == "function_call" and isinstance(item.get("name"), str):
            calls.append(
                {
                    "id": string(item.get("call_id")) or string(item.get("id")),
                    "type": "function",
                    "function": {"name": item["name"], "arguments": string(item.get("arguments"))},
                }
            )
    message: JsonObject = {"role": "assistant", "content": text or None}
    if refusal:
        message["refusal"] = refusal
    if thought:
        message["reasoning_content"] = thought
    if calls:
        message["tool_calls"] = calls
    why = string(_obj(obj.get("incomplete_details")).get("reason"))
    finish = FINISH.get(why, "length") if obj.get("status") == "incomplete" else ("tool_calls" if calls else "stop")
    return {
        "id": f"chatcmpl-{string(obj.get('id')) or 'resp'}",
        "object": "chat.completion",
        "created": int(obj["created_at"]) if isinstance(obj.get("created_at"), (int, float)) else int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": chat_usage(obj.get("usage")),
    }


class ResponsesToChatStream:
    """Responses SSE events in (one or several whole events), chat.completion.chunk events out, then [DONE]."""

    def __init__(self, *, model: str, completion_id: str, include_usage: bool) -> None:
        self._model, self._id, self._include_usage = model, completion_id, include_usage
        self._created = int(time.time())
        self._started = False
        self._done = False
        self._tools: dict[int, int] = {}  # Responses output_index -> chat tool index
        self._finish = "stop"
        self._usage: JsonObject | None = None

    def _chunk(self, delta: JsonObject, finish: str | None = None, **extra: Any) -> bytes:
        obj = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def feed(self, events: bytes) -> bytes:
        return b"".join(self._one(ev + b"\n\n") for ev in events.split(b"\n\n") if ev.strip())

    def _one(self, event: bytes) -> bytes:
        if self._done:
            return b""
        _, data = parse_sse(event)
        if data is None:
            return b""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise ValueError(f"stream: invalid JSON in a Responses event ({e})") from None
        if not isinstance(obj, dict):
            raise ValueError("stream: a Responses event is not a JSON object")
        kind = obj.get("type")
        out = b""
        if not self._started:
            self._started = True
            out = self._chunk({"role": "assistant", "content": ""})
        delta = obj.get("delta") if isinstance(obj.get("delta"), str) else ""
        index = obj.get("output_index")
        if kind == "response.output_text.delta" and delta:
            out += self._chunk({"content": delta})
        elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta") and delta:
            out += self._chunk({"reasoning_content": delta})
        elif kind == "response.output_item.added" and _obj(obj.get("item")).get("type") == "function_call":
            item = obj["item"]
            if isinstance(index, int) and isinstance(item.get("name"), str):
                n = self._tools[index] = len(self._tools)
                call = {"index": n, "id": string(item.get("call_id")), "type": "function"}
                call["function"] = {"name": item["name"], "arguments": string(item.get("arguments"))}
                out += self._chunk({"tool_calls": [call]})
        elif kind == "response.function_call_arguments.delta" and delta and index in self._tools:
            out += self._chunk({"tool_calls": [{"index": self._tools[index], "function": {"arguments": delta}}]})
        elif kind in ("response.completed", "response.incomplete"):
            response = _obj(obj.get("response"))
            why = string(_obj(response.get("incomplete_details")).get("reason"))
            self._finish = (
                FINISH.get(why, "length")
                if kind == "response.incomplete"
                else ("tool_calls" if self._tools else "stop")
            )
            self._usage = chat_usage(response.get("usage")) if response.get("usage") is not None else None
            out += self.finish()
        return out

    def finish(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        out = self._chunk({}, self._finish)
        if self._include_usage and self._usage is not None:
            obj = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model}
            out += b"data: " + orjson.dumps({**obj, "choices": [], "usage": self._usage}) + b"\n\n"
        return out + b"data: [DONE]\n\n"
