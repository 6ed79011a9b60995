"""Ollama's native API (/api/chat, /api/generate, /api/embed) <-> OpenAI Chat Completions and embeddings.

Pure functions, no I/O. Requests are built from an allow-list, as in
``translate_requests``: what an OpenAI-compatible upstream cannot take
(``options.num_ctx``, ``top_k``, ``think``, ``suffix``, a raw template) is
named in the ``dropped`` list the caller notes in the ledger's reason.
Answers take Ollama's shapes from its API documentation: tool calls whole
with their arguments as an object, one final object with ``done: true``,
``done_reason`` and the counters (``prompt_eval_count``, ``eval_count`` and
durations in nanoseconds). Malformed input raises ``ValueError("<field
path>: <what is wrong>")``, answered 400 in Ollama's ``{"error": ...}``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from tiergate.adapters.openai_read import OpenAIAnswer, OpenAIStreamReader, ToolCall
from tiergate.adapters.translate_common import JsonObject, _bad, _clamp, _note, _obj, _objects

# options an OpenAI chat request carries under the same name
_SAME_NAME_OPTIONS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
# options that are Ollama's own (runner and sampler settings): accepted, not sent on
_LOCAL_OPTIONS = frozenset(
    {"num_keep", "numa", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread", "low_vram", "vocab_only"}
)
# fields every request may carry that change nothing upstream (model residency, truncation)
_ACCEPTED = frozenset({"model", "stream", "keep_alive", "truncate", "shift", "options"})
_CHAT_FIELDS = _ACCEPTED | {"messages", "tools", "format", "think", "logprobs", "top_logprobs"}
_GENERATE_FIELDS = _ACCEPTED | {"prompt", "system", "images", "format", "think", "suffix", "raw", "template", "context"}
OLLAMA_DONE_REASON = {"stop": "stop", "length": "length", "tool_calls": "stop", "function_call": "stop"}

# the first bytes of base64 images clients send, for the data URL's media type
_IMAGE_MAGIC = (("iVBORw0KGgo", "image/png"), ("/9j/", "image/jpeg"), ("R0lGOD", "image/gif"), ("UklGR", "image/webp"))


def image_data_url(data: Any, path: str) -> str:
    """An Ollama image (base64, no header) as a data URL; ValueError when it is not base64."""
    if not isinstance(data, str) or not data:
        raise _bad(path, "must be a base64-encoded image")
    if data.startswith("data:"):
        return data
    try:
        base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _bad(path, "is not base64") from None
    media = next((m for prefix, m in _IMAGE_MAGIC if data.startswith(prefix)), "image/png")
    return f"data:{media};base64,{data}"


def _images(images: Any, path: str) -> list[JsonObject]:
    if images is None:
        return []
    if not isinstance(images, list):
        raise _bad(path, "must be an array of base64-encoded images")
    return [
        {"type": "image_url", "image_url": {"url": image_data_url(x, f"{path}[{i}]")}} for i, x in enumerate(images)
    ]


def _user_content(text: str, images: list[JsonObject]) -> str | list[JsonObject]:
    if not images:
        return text
    return ([{"type": "text", "text": text}] if text else []) + images


def _tool_calls(calls: Any, path: str, first_id: str) -> list[JsonObject]:
    out = []
    for j, call in _objects(calls, path):
        fn = call.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _bad(f"{path}[{j}].function.name", "is required")
        args = fn.get("arguments", {})
        if isinstance(args, str):  # some clients send the OpenAI spelling
            arguments = args
        elif isinstance(args, dict):
            arguments = orjson.dumps(args).decode()
        else:
            raise _bad(f"{path}[{j}].function.arguments", "must be an object")
        call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else f"{first_id}_{j}"
        out.append({"id": call_id, "type": "function", "function": {"name": fn["name"], "arguments": arguments}})
    return out


def _messages(raw: Any, dropped: list[str]) -> list[JsonObject]:
    """Ollama messages -> OpenAI messages; a tool result without an id answers the oldest open call of its name."""
    out: list[JsonObject] = []
    open_calls: list[tuple[str, str]] = []  # (id, name) of calls not yet answered
    for i, msg in _objects(raw, "messages"):
        path = f"messages[{i}]"
        role = msg.get("role")
        role = role.lower() if isinstance(role, str) else role
        content = msg.get("content", "")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise _bad(f"{path}.content", "must be a string")
        if msg.get("thinking"):
            _note(dropped, "messages.thinking")
        if role == "system":
            out.append({"role": "system", "content": content})
        elif role == "user":
            out.append(
                {"role": "user", "content": _user_content(content, _images(msg.get("images"), f"{path}.images"))}
            )
        elif role == "assistant":
            entry: JsonObject = {"role": "assistant", "content": content}
            if msg.get("tool_calls"):
                calls = _tool_calls(msg["tool_calls"], f"{path}.tool_calls", f"call_{i}")
                entry["tool_calls"] = calls
                open_calls = [(c["id"], c["function"]["name"]) for c in calls]
                entry["content"] = content or None
            if msg.get("images"):
                _note(dropped, "messages.images")
            out.append(entry)
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                name = msg.get("tool_name") or msg.get("name")
                match = next((c for c in open_calls if c[1] == name), open_calls[0] if open_calls else None)
                if match is None:
                    raise _bad(f"{path}", "a tool result must follow an assistant message with tool_calls")
                call_id = match[0]
            open_calls = [c for c in open_calls if c[0] != call_id]
            out.append({"role": "tool", "tool_call_id": call_id, "content": content})
        else:
            raise _bad(f"{path}.role", f"unknown role {role!r} (system, user, assistant or tool)")
    return out


def _format(value: Any) -> JsonObject | None:
    """Ollama ``format`` -> OpenAI ``response_format``."""
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": value}}
    raise _bad("format", 'must be "json" or a JSON schema object')


def _options(options: Any, out: JsonObject, limit: int | None, dropped: list[str]) -> None:
    if options is None:
        return
    if not isinstance(options, dict):
        raise _bad("options", "must be an object")
    predict = options.get("num_predict")
    if predict is not None:
        if isinstance(predict, bool) or not isinstance(predict, int):
            raise _bad("options.num_predict", "must be an integer")
        if predict > 0:  # -1 (no limit) and -2 (fill the context) leave the cap to the upstream
            out["max_tokens"] = _clamp(predict, limit, "options.num_predict")
    for key in _SAME_NAME_OPTIONS:
        value = options.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _bad(f"options.{key}", "must be a number")
            out[key] = value
    stop = options.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("options.stop", "must be a string or an array of strings")
        if len(stops) > 4:
            _note(dropped, "options.stop")
        out["stop"] = stops[:4]
    for key, value in options.items():
        if key not in _SAME_NAME_OPTIONS and key not in ("num_predict", "stop") and key not in _LOCAL_OPTIONS:
            if value is not None:
                _note(dropped, f"options.{key}")


def _common(body: JsonObject, out: JsonObject, fields: frozenset[str], limit: int | None, dropped: list[str]) -> None:
    _options(body.get("options"), out, limit, dropped)
    response_format = _format(body.get("format"))
    if response_format is not None:
        out["response_format"] = response_format
    if body.get("think") not in (None, False):
        _note(dropped, "think")
    for key, value in body.items():
        if key not in fields and value is not None:
            _note(dropped, key)


def ollama_chat_to_openai(
    body: JsonObject, *, model: str, max_tokens_limit: int | None = None, stream: bool = False
) -> tuple[JsonObject, list[str]]:
    """An /api/chat body -> an OpenAI chat request for ``model``."""
    dropped: list[str] = []
    out: JsonObject = {"model": model, "messages": _messages(body.get("messages"), dropped)}
    tools = body.get("tools")
    if tools:
        for i, tool in _objects(tools, "tools"):
            fn = tool.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise _bad(f"tools[{i}].function.name", "is required")
        out["tools"] = [{"type": "function", "function": t["function"]} for t in tools]
    if body.get("logprobs"):
        _note(dropped, "logprobs")
    _common(body, out, _CHAT_FIELDS, max_tokens_limit, dropped)
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out, dropped


def ollama_generate_to_openai(
    body: JsonObject, *, model: str, max_tokens_limit: int | None = None, stream: bool = False
) -> tuple[JsonObject, list[str]]:
    """An /api/generate body -> an OpenAI chat request: the system and the prompt as two messages."""
    dropped: list[str] = []
    prompt, system = body.get("prompt", ""), body.get("system")
    if not isinstance(prompt, str):
        raise _bad("prompt", "must be a string")
    if system is not None and not isinstance(system, str):
        raise _bad("system", "must be a string")
    messages: list[JsonObject] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": _user_content(prompt, _images(body.get("images"), "images"))})
    for key in ("suffix", "template", "context"):
        if body.get(key):
            _note(dropped, key)
    if body.get("raw"):
        _note(dropped, "raw")
    out: JsonObject = {"model": model, "messages": messages}
    _common(body, out, _GENERATE_FIELDS, max_tokens_limit, dropped)
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out, dropped


def embed_input(body: JsonObject, *, legacy: bool) -> str | list[str]:
    """The text(s) of an /api/embed (``input``) or /api/embeddings (``prompt``) body."""
    key = "prompt" if legacy else "input"
    value = body.get(key)
    if isinstance(value, str) and (value or legacy):
        return value
    if not legacy and isinstance(value, list) and value and all(isinstance(x, str) for x in value):
        return value
    what = "a string" if legacy else "a string or a non-empty array of strings"
    raise _bad(key, f"is required ({what})")


def ollama_embed_to_openai(body: JsonObject, *, model: str, legacy: bool = False) -> tuple[JsonObject, list[str]]:
    out: JsonObject = {"model": model, "input": embed_input(body, legacy=legacy)}
    dims = body.get("dimensions")
    if dims is not None:
        if isinstance(dims, bool) or not isinstance(dims, int) or dims <= 0:
            raise _bad("dimensions", "must be a positive integer")
        out["dimensions"] = dims
    dropped = ["options"] if body.get("options") else []
    return out, dropped


# --------------------------------------------------------------------------- answers


def counters(answer: OpenAIAnswer, *, total_ns: int, first_ns: int | None = None) -> JsonObject:
    """Ollama's final counters: token counts from the usage, durations in nanoseconds."""
    prompt_ns = first_ns if first_ns is not None else 0
    return {
        "total_duration": total_ns,
        "load_duration": 0,
        "prompt_eval_count": answer.prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": answer.completion_tokens,
        "eval_duration": max(0, total_ns - prompt_ns),
    }


def ollama_tool_calls(calls: list[ToolCall]) -> list[JsonObject]:
    return [
        {"id": c.id, "function": {"index": i, "name": c.name, "arguments": c.arguments}} for i, c in enumerate(calls)
    ]


def done_reason(answer: OpenAIAnswer) -> str:
    return OLLAMA_DONE_REASON.get(answer.finish or "stop", "stop")


def _chat_message(text: str, thinking: str, calls: list[ToolCall]) -> JsonObject:
    msg: JsonObject = {"role": "assistant", "content": text}
    if thinking:
        msg["thinking"] = thinking
    if calls:
        msg["tool_calls"] = ollama_tool_calls(calls)
    return msg


def ollama_reply(
    answer: OpenAIAnswer, *, model: str, created_at: str, total_ns: int, generate: bool = False
) -> JsonObject:
    """The one object of a ``stream: false`` answer."""
    head: JsonObject = {"model": model, "created_at": created_at}
    if generate:
        head["response"] = answer.text
        if answer.thinking:
            head["thinking"] = answer.thinking
    else:
        head["message"] = _chat_message(answer.text, answer.thinking, answer.tool_calls)
    return {**head, "done": True, "done_reason": done_reason(answer), **counters(answer, total_ns=total_ns)}


def ndjson(obj: JsonObject) -> bytes:
    return orjson.dumps(obj) + b"\n"


def ollama_error_line(message: str) -> bytes:
    """An error after the stream has started: Ollama sends ``{"error": ...}`` as the last line."""
    return ndjson({"error": message})


class OpenAIToOllamaStream:
    """OpenAI SSE events in, Ollama NDJSON lines out (/api/chat's or /api/generate's shape).

    Tool calls go out whole in one line once the upstream has finished them; the
    final line (``done: true``) waits for ``[DONE]`` because OpenAI's usage comes
    after the finish reason. ``clock`` gives nanoseconds (the durations).
    """

    def __init__(self, *, model: str, created_at: Any, clock: Any, generate: bool = False) -> None:
        self._model = model
        self._created_at = created_at  # () -> RFC 3339 time
        self._clock = clock  # () -> int nanoseconds
        self._generate = generate
        self._reader = OpenAIStreamReader()
        self._start = clock()
        self._first: int | None = None
        self._finished = False

    @property
    def answer(self) -> OpenAIAnswer:
        return self._reader.answer

    def _line(self, text: str, thinking: str, calls: list[ToolCall], **final: Any) -> bytes:
        obj: JsonObject = {"model": self._model, "created_at": self._created_at()}
        if self._generate:
            obj["response"] = text
            if thinking:
                obj["thinking"] = thinking
        else:
            obj["message"] = _chat_message(text, thinking, calls)
        obj["done"] = bool(final)
        obj.update(final)
        return ndjson(obj)

    def feed(self, event: bytes) -> bytes:
        if self._finished:
            return b""
        text, thinking = self._reader.feed(event)
        if self._reader.error is not None:
            self._finished = True
            return ollama_error_line(self._reader.error)
        if self._reader.done:
            return self.finish()
        if not (text or thinking):
            return b""
        if self._first is None:
            self._first = self._clock()
        return self._line(text, thinking, [])

    def finish(self) -> bytes:
        """The tool calls (if any) and the final line; idempotent."""
        if self._finished:
            return b""
        self._finished = True
        out = b""
        calls = self._reader.tool_calls()
        if calls and not self._generate:
            out = self._line("", "", calls)
        now = self._clock()
        first = (self._first or now) - self._start
        final = counters(self.answer, total_ns=now - self._start, first_ns=first)
        return out + self._line("", "", [], done_reason=done_reason(self.answer), **final)


def ollama_embed_reply(obj: JsonObject, *, model: str, total_ns: int, legacy: bool = False) -> JsonObject:
    """An OpenAI embeddings reply -> /api/embed's (or the older /api/embeddings') answer."""
    data = obj.get("data")
    if not isinstance(data, list):
        raise ValueError("the embeddings reply has no data")
    rows = sorted((d for d in data if isinstance(d, dict)), key=lambda d: d.get("index", 0))
    vectors = [d.get("embedding") for d in rows]
    if not all(isinstance(v, list) for v in vectors):
        raise ValueError("an embedding is not an array of numbers")
    if legacy:
        return {"embedding": vectors[0] if vectors else []}
    prompt = _obj(obj.get("usage")).get("prompt_tokens")
    return {
        "model": model,
        "embeddings": vectors,
        "total_duration": total_ns,
        "load_duration": 0,
        "prompt_eval_count": prompt if isinstance(prompt, int) and not isinstance(prompt, bool) else 0,
    }
