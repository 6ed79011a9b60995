"""Gemini's generateContent API <-> OpenAI Chat Completions (requests, replies, streams, embeddings).

Pure functions, no I/O. Both spellings the API accepts are read (camelCase,
as google-genai and Gemini CLI send, and snake_case). Requests are built from
an allow-list; what OpenAI cannot carry (``thinkingConfig``, ``topK``,
``safetySettings``, ``cachedContent``, Google's own tools) is named in
``dropped``. Schemas in Gemini's OpenAPI subset (``"type": "OBJECT"``,
``nullable``) become JSON Schema. Answers take the shapes of Gemini's API
reference: ``candidates[0].content.parts`` with ``text`` and whole
``functionCall`` parts, a ``finishReason``, ``usageMetadata``. Malformed
input raises ``ValueError("<field path>: <what is wrong>")`` (a 400 in
Google's envelope).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

import orjson

from tiergate.adapters.openai_read import OpenAIAnswer, OpenAIStreamReader, ToolCall
from tiergate.adapters.translate_common import JsonObject, _bad, _clamp, _note, _obj, _objects

FINISH_REASON = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}
_MODES = {"AUTO": "auto", "ANY": "required", "NONE": "none", "VALIDATED": "auto"}
_GENERATION_SAME: tuple[tuple[str, str], ...] = (
    ("temperature", "temperature"),
    ("topP", "top_p"),
    ("seed", "seed"),
    ("presencePenalty", "presence_penalty"),
    ("frequencyPenalty", "frequency_penalty"),
)
_GENERATION_READ = frozenset(
    {"maxOutputTokens", "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema"}
    | {k for k, _ in _GENERATION_SAME}
    | {"candidateCount", "responseModalities", "thinkingConfig"}
)
_TOP_LEVEL = frozenset({"model", "contents", "systemInstruction", "tools", "toolConfig", "generationConfig"})


def _get(obj: JsonObject, camel: str) -> Any:
    """A field in camelCase or in the snake_case the API also accepts."""
    value = obj.get(camel)
    if value is None:
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
        value = obj.get(snake)
    return value


def _camel(obj: JsonObject) -> JsonObject:
    """An object's keys in camelCase (one level)."""
    out = {}
    for key, value in obj.items():
        head, *rest = key.split("_")
        out[head + "".join(p[:1].upper() + p[1:] for p in rest)] = value
    return out


def json_schema(schema: Any, path: str) -> Any:
    """Gemini's OpenAPI schema subset -> JSON Schema: lower-case types, ``nullable`` as a null type.

    A JSON Schema passes unchanged but for upper-case type names, which Gemini takes there too (Gemini
    CLI sends ``"type": "OBJECT"`` in ``responseJsonSchema``) and llama.cpp's grammar builder refuses.
    """
    if not isinstance(schema, dict):
        raise _bad(path, "must be a schema object")
    out: JsonObject = {}
    for key, value in _camel(schema).items():
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {k: json_schema(v, f"{path}.properties.{k}") for k, v in value.items()}
        elif key == "items":
            out["items"] = json_schema(value, f"{path}.items")
        elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
            out[key] = [json_schema(v, f"{path}.{key}[{i}]") for i, v in enumerate(value)]
        elif key not in ("nullable", "propertyOrdering", "example"):
            out[key] = value
    if schema.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _text(content: Any, path: str) -> str:
    """The text of a Content (or a bare string, as some clients send systemInstruction)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, dict):
        raise _bad(path, "must be a Content object")
    parts = content.get("parts")
    if parts is None:
        return ""
    return "".join(p["text"] for _, p in _objects(parts, f"{path}.parts") if isinstance(p.get("text"), str))


def _media_part(part: JsonObject, path: str, dropped: list[str]) -> JsonObject | None:
    inline, file = _get(part, "inlineData"), _get(part, "fileData")
    if inline is not None:
        if not isinstance(inline, dict):
            raise _bad(f"{path}.inlineData", "must be an object")
        mime, data = _get(inline, "mimeType"), inline.get("data")
        if not isinstance(mime, str) or not isinstance(data, str):
            raise _bad(f"{path}.inlineData", "needs mimeType and data (base64)")
        if mime.startswith("image/"):
            return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}
        if mime == "application/pdf":
            return {"type": "file", "file": {"file_data": f"data:{mime};base64,{data}", "filename": "document.pdf"}}
        if mime in ("audio/wav", "audio/mp3", "audio/mpeg"):
            return {"type": "input_audio", "input_audio": {"data": data, "format": "wav" if "wav" in mime else "mp3"}}
        if mime.startswith("text/"):
            try:
                return {"type": "text", "text": base64.b64decode(data, validate=True).decode("utf-8", "replace")}
            except (binascii.Error, ValueError):
                raise _bad(f"{path}.inlineData.data", "is not base64") from None
        _note(dropped, f"inlineData.{mime}")
        return None
    if isinstance(file, dict):
        mime, uri = _get(file, "mimeType"), _get(file, "fileUri")
        if isinstance(mime, str) and mime.startswith("image/") and isinstance(uri, str):
            return {"type": "image_url", "image_url": {"url": uri}}
        _note(dropped, "fileData")
        return None
    kinds = [k for k in part if k not in ("thoughtSignature", "thought_signature")]
    _note(dropped, f"parts.{kinds[0] if kinds else 'empty'}")
    return None


class _Calls:
    """Ids for function calls (Gemini's are optional, OpenAI's required) and the results that answer them."""

    def __init__(self) -> None:
        self.open: list[tuple[str, str]] = []  # (id, name) not yet answered

    def call(self, fn: JsonObject, path: str, fallback_id: str) -> JsonObject:
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"{path}.name", "is required")
        args = fn.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise _bad(f"{path}.args", "must be an object")
        given = fn.get("id")
        call_id = given if isinstance(given, str) and given else fallback_id
        self.open.append((call_id, name))
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": orjson.dumps(args).decode()}}

    def result(self, fr: JsonObject, path: str) -> JsonObject:
        name, given = fr.get("name"), fr.get("id")
        match = next((c for c in self.open if c[0] == given), None) if isinstance(given, str) else None
        match = match or next((c for c in self.open if c[1] == name), None)
        if match is None:
            raise _bad(path, "a functionResponse must answer a functionCall of the model turn before it")
        self.open.remove(match)
        response = fr.get("response")
        content = response if isinstance(response, str) else orjson.dumps({} if response is None else response).decode()
        return {"role": "tool", "tool_call_id": match[0], "content": content}


def _contents(raw: Any, dropped: list[str]) -> list[JsonObject]:
    if not isinstance(raw, list) or not raw:
        raise _bad("contents", "must be a non-empty array of Content objects")
    calls = _Calls()
    out: list[JsonObject] = []
    for i, content in _objects(raw, "contents"):
        path = f"contents[{i}]"
        role = content.get("role", "user")
        parts = content.get("parts")
        if not isinstance(parts, list):
            raise _bad(f"{path}.parts", "must be an array of parts")
        if role == "model":
            texts, tool_calls = [], []
            for j, part in _objects(parts, f"{path}.parts"):
                fc = _get(part, "functionCall")
                if isinstance(fc, dict):
                    tool_calls.append(calls.call(fc, f"{path}.parts[{j}].functionCall", f"call_{i}_{j}"))
                elif isinstance(part.get("text"), str):
                    if part.get("thought"):
                        _note(dropped, "thought")
                    else:
                        texts.append(part["text"])
                elif set(part) - {"thoughtSignature", "thought_signature"}:
                    _note(dropped, f"parts.{next(iter(part))}")
            msg: JsonObject = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None}
            if tool_calls:
                msg["tool_calls"] = tool_calls
            out.append(msg)
        elif role in ("user", "function", "tool"):
            user: list[JsonObject] = []
            for j, part in _objects(parts, f"{path}.parts"):
                here = f"{path}.parts[{j}]"
                fr = _get(part, "functionResponse")
                if isinstance(fr, dict):
                    out.append(calls.result(fr, f"{here}.functionResponse"))
                elif isinstance(part.get("text"), str):
                    if not part.get("thought"):
                        user.append({"type": "text", "text": part["text"]})
                elif (media := _media_part(part, here, dropped)) is not None:
                    user.append(media)
            if user:
                single = len(user) == 1 and user[0]["type"] == "text"
                out.append({"role": "user", "content": user[0]["text"] if single else user})
        else:
            raise _bad(f"{path}.role", f"unknown role {role!r} (user or model)")
    return out


def _tools(tools: Any, dropped: list[str]) -> list[JsonObject]:
    out = []
    for i, tool in _objects(tools, "tools"):
        decls = _get(tool, "functionDeclarations")
        for key in tool:
            if key not in ("functionDeclarations", "function_declarations"):
                _note(dropped, f"tools.{key}")
        for j, decl in _objects(decls, f"tools[{i}].functionDeclarations") if decls is not None else ():
            here = f"tools[{i}].functionDeclarations[{j}]"
            name = decl.get("name")
            if not isinstance(name, str) or not name:
                raise _bad(f"{here}.name", "is required")
            fn: JsonObject = {"name": name}
            if isinstance(decl.get("description"), str):
                fn["description"] = decl["description"]
            schema = _get(decl, "parametersJsonSchema")
            if schema is not None:
                fn["parameters"] = json_schema(schema, f"{here}.parametersJsonSchema")
            elif decl.get("parameters") is not None:
                fn["parameters"] = json_schema(decl["parameters"], f"{here}.parameters")
            else:
                fn["parameters"] = {"type": "object", "properties": {}}
            out.append({"type": "function", "function": fn})
    return out


def _tool_choice(config: Any) -> str | JsonObject | None:
    fcc = _get(_obj(config), "functionCallingConfig")
    if fcc is None:
        return None
    if not isinstance(fcc, dict):
        raise _bad("toolConfig.functionCallingConfig", "must be an object")
    mode = str(fcc.get("mode") or "AUTO").upper()
    if mode not in _MODES:
        raise _bad("toolConfig.functionCallingConfig.mode", f"unknown mode {fcc.get('mode')!r}")
    allowed = _get(fcc, "allowedFunctionNames")
    if mode == "ANY" and isinstance(allowed, list) and len(allowed) == 1 and isinstance(allowed[0], str):
        return {"type": "function", "function": {"name": allowed[0]}}
    return _MODES[mode]


def _generation(config: Any, out: JsonObject, limit: int | None, dropped: list[str]) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise _bad("generationConfig", "must be an object")
    cfg = _camel(config)
    if cfg.get("maxOutputTokens") is not None:
        out["max_tokens"] = _clamp(cfg["maxOutputTokens"], limit, "generationConfig.maxOutputTokens")
    for key, target in _GENERATION_SAME:
        value = cfg.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _bad(f"generationConfig.{key}", "must be a number")
            out[target] = value
    stops = cfg.get("stopSequences")
    if stops:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("generationConfig.stopSequences", "must be an array of strings")
        if len(stops) > 4:
            _note(dropped, "generationConfig.stopSequences")
        out["stop"] = stops[:4]
    # Gemini CLI writes Gemini's upper-case type names even in responseJsonSchema: both are normalised
    key = "responseJsonSchema" if cfg.get("responseJsonSchema") is not None else "responseSchema"
    schema = json_schema(cfg[key], f"generationConfig.{key}") if cfg.get(key) is not None else None
    if schema is not None:
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    elif cfg.get("responseMimeType") == "application/json":
        out["response_format"] = {"type": "json_object"}
    if isinstance(cfg.get("candidateCount"), int) and cfg["candidateCount"] > 1:
        _note(dropped, "generationConfig.candidateCount")
    if cfg.get("thinkingConfig"):
        _note(dropped, "generationConfig.thinkingConfig")
    for key, value in cfg.items():
        if key not in _GENERATION_READ and value is not None:
            _note(dropped, f"generationConfig.{key}")


def gemini_to_openai(
    body: JsonObject, *, model: str, max_tokens_limit: int | None = None, stream: bool = False
) -> tuple[JsonObject, list[str]]:
    """A generateContent body -> an OpenAI chat request for ``model``."""
    dropped: list[str] = []
    top = _camel(body)
    messages = _contents(top.get("contents"), dropped)
    system = top.get("systemInstruction")
    if system is not None:
        text = _text(system, "systemInstruction")
        if text:
            messages.insert(0, {"role": "system", "content": text})
    out: JsonObject = {"model": model, "messages": messages}
    tools = _tools(top["tools"], dropped) if top.get("tools") is not None else []
    if tools:
        out["tools"] = tools
        choice = _tool_choice(top.get("toolConfig"))
        if choice is not None:
            out["tool_choice"] = choice
    _generation(top.get("generationConfig"), out, max_tokens_limit, dropped)
    for key, value in top.items():
        if key not in _TOP_LEVEL and value is not None:
            _note(dropped, key)
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out, dropped


def includes_thoughts(body: JsonObject) -> bool:
    thinking = _get(_obj(_get(body, "generationConfig")), "thinkingConfig")
    return bool(_get(_obj(thinking), "includeThoughts"))


# --------------------------------------------------------------------------- answers


def usage_metadata(answer: OpenAIAnswer) -> JsonObject:
    """Gemini counts thoughts apart from the candidates; OpenAI's completion tokens include reasoning."""
    thoughts = min(answer.reasoning_tokens, answer.completion_tokens)
    out: JsonObject = {
        "promptTokenCount": answer.prompt_tokens,
        "candidatesTokenCount": answer.completion_tokens - thoughts,
        "totalTokenCount": answer.prompt_tokens + answer.completion_tokens,
    }
    if thoughts:
        out["thoughtsTokenCount"] = thoughts
    if answer.cached_tokens:
        out["cachedContentTokenCount"] = answer.cached_tokens
    return out


def call_parts(calls: list[ToolCall]) -> list[JsonObject]:
    return [{"functionCall": {"id": c.id, "name": c.name, "args": c.arguments}} for c in calls]


def _candidate(parts: list[JsonObject], finish: str | None) -> JsonObject:
    cand: JsonObject = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        cand["finishReason"] = finish
    return cand


def finish_reason(answer: OpenAIAnswer) -> str:
    return FINISH_REASON.get(answer.finish or "stop", "OTHER")


def gemini_reply(answer: OpenAIAnswer, *, model: str, include_thoughts: bool = False) -> JsonObject:
    """The GenerateContentResponse of a plain generateContent call."""
    parts: list[JsonObject] = []
    if include_thoughts and answer.thinking:
        parts.append({"text": answer.thinking, "thought": True})
    if answer.text or not answer.tool_calls:
        parts.append({"text": answer.text})
    parts += call_parts(answer.tool_calls)
    return {
        "candidates": [_candidate(parts, finish_reason(answer))],
        "usageMetadata": usage_metadata(answer),
        "modelVersion": model,
        "responseId": answer.id or uuid.uuid4().hex,
    }


def gemini_stream_frame(obj: JsonObject, *, sse: bool, first: bool) -> bytes:
    """One chunk as ``alt=sse`` sends it, or as the next element of the JSON array sent without it."""
    data = orjson.dumps(obj)
    if sse:
        return b"data: " + data + b"\r\n\r\n"
    return (b"[" if first else b",\r\n") + data


class OpenAIToGeminiStream:
    """OpenAI SSE events in, streamGenerateContent chunks out (SSE, or a JSON array without ``alt=sse``).

    The last piece of text is held back and sent with the finish reason and
    usage (OpenAI reports them after it): Gemini CLI takes a final chunk whose
    only part is empty text for a broken stream. Function calls go out whole.
    """

    def __init__(self, *, model: str, response_id: str, sse: bool = True, include_thoughts: bool = False) -> None:
        self._model = model
        self._id = response_id
        self._sse = sse
        self._thoughts = include_thoughts
        self._reader = OpenAIStreamReader()
        self._held = ""
        self._sent = False
        self._finished = False

    def _frame(self, obj: JsonObject) -> bytes:
        out = gemini_stream_frame(obj, sse=self._sse, first=not self._sent)
        self._sent = True
        return out

    def _chunk(self, parts: list[JsonObject], finish: str | None = None, usage: JsonObject | None = None) -> bytes:
        obj: JsonObject = {"candidates": [_candidate(parts, finish)]}
        if usage is not None:
            obj["usageMetadata"] = usage
        obj.update(modelVersion=self._model, responseId=self._id)
        return self._frame(obj)

    def feed(self, event: bytes) -> bytes:
        if self._finished:
            return b""
        text, thinking = self._reader.feed(event)
        if self._reader.error is not None:
            self._finished = True
            err = {"error": {"code": 500, "message": self._reader.error, "status": "INTERNAL"}}
            return self._frame(err) + (b"" if self._sse else b"]")
        out = b""
        if thinking and self._thoughts:
            out += self._chunk([{"text": thinking, "thought": True}])
        if text:
            if self._held:
                out += self._chunk([{"text": self._held}])
            self._held = text
        if self._reader.done:
            out += self.finish()
        return out

    def finish(self) -> bytes:
        """The held text, the function calls, the finish reason and usage in one chunk; idempotent."""
        if self._finished:
            return b""
        self._finished = True
        answer = self._reader.answer
        calls = self._reader.tool_calls()
        parts: list[JsonObject] = [{"text": self._held}] if self._held or not calls else []
        parts += call_parts(calls)
        out = self._chunk(parts, finish_reason(answer), usage_metadata(answer))
        return out if self._sse else out + b"]"


# --------------------------------------------------------------------------- embeddings


def _embed_text(request: JsonObject, path: str) -> str:
    content = request.get("content")
    if content is None:
        raise _bad(f"{path}.content", "is required")
    text = _text(content, f"{path}.content")
    if not text:
        raise _bad(f"{path}.content", "must hold text to embed")
    return text


def gemini_embed_to_openai(body: JsonObject, *, model: str, batch: bool = False) -> tuple[JsonObject, list[str]]:
    """embedContent (one content) or batchEmbedContents (``requests``) -> an OpenAI embeddings request."""
    if batch:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise _bad("requests", "must be a non-empty array of embedContent requests")
        items = _objects(requests, "requests")
        texts: str | list[str] = [_embed_text(r, f"requests[{i}]") for i, r in items]
        first = items[0][1]
    else:
        texts, first = _embed_text(body, "body"), body
    out: JsonObject = {"model": model, "input": texts}
    dims = _get(first, "outputDimensionality")
    if dims is not None:
        if isinstance(dims, bool) or not isinstance(dims, int) or dims <= 0:
            raise _bad("outputDimensionality", "must be a positive integer")
        out["dimensions"] = dims
    dropped = ["taskType"] if _get(first, "taskType") else []
    return out, dropped


def gemini_embed_reply(obj: JsonObject, *, batch: bool = False) -> JsonObject:
    data = obj.get("data")
    if not isinstance(data, list):
        raise ValueError("the embeddings reply has no data")
    rows = sorted((d for d in data if isinstance(d, dict)), key=lambda d: d.get("index", 0))
    vectors = [d.get("embedding") for d in rows]
    if not vectors or not all(isinstance(v, list) for v in vectors):
        raise ValueError("an embedding is not an array of numbers")
    if batch:
        return {"embeddings": [{"values": v} for v in vectors]}
    return {"embedding": {"values": vectors[0]}}
