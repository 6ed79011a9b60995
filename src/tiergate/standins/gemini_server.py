"""A stand-in for Gemini's API: models/{m}:generateContent, :streamGenerateContent, :embedContent, :batchEmbedContents.

Speaks the shapes of Gemini's API reference closely enough for google-genai:
the key in ``x-goog-api-key`` (or ``?key=``), candidates with parts, whole
``functionCall`` parts, ``usageMetadata`` on every streamed chunk (the last
one final), SSE with ``alt=sse`` and a JSON array without it, errors in
Google's envelope. Replies are the deterministic fake model from
:mod:`.faults`; ``/_control`` injects faults.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .fake_model import approx_tokens, scripted_reply, split_text, tool_arguments
from .faults import ApiError, install_control, json_response, parse_json

EMBED_DIMS = 8
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
_STATUS |= {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


@dataclass(frozen=True)
class _Config:
    name: str
    models: tuple[str, ...]
    api_key: str | None
    stream_chunks: int
    chunk_delay_s: float


_CONFIG = web.AppKey("tiergate_gemini_standin", _Config)


def gemini_error(status: int, message: str, **_: Any) -> web.Response:
    return json_response(
        {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}, status
    )


def build_gemini_standin(
    *, name: str, models: list[str], api_key: str | None = None, stream_chunks: int = 20, chunk_delay_s: float = 0.0
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[_CONFIG] = _Config(name, tuple(models), api_key, max(1, stream_chunks), chunk_delay_s)
    install_control(app, model_paths=("/v1beta/models",), error_response=gemini_error)
    app.router.add_post("/v1beta/models/{tail:.+}", _method)
    return app


def _text_of(contents: Any) -> str:
    out = []
    for c in contents if isinstance(contents, list) else []:
        for p in c.get("parts") or [] if isinstance(c, dict) else []:
            if isinstance(p, dict) and isinstance(p.get("text"), str):
                out.append(p["text"])
    return "".join(out)


async def _method(request: web.Request) -> web.StreamResponse:
    cfg = request.app[_CONFIG]
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    if cfg.api_key is not None and key != cfg.api_key:
        raise ApiError(400, "API key not valid. Please pass a valid API key.")
    model, _, method = request.match_info["tail"].rpartition(":")
    if model not in cfg.models:
        raise ApiError(404, f"models/{model} is not found for API version v1beta, or is not supported for {method}.")
    body = parse_json(await request.read())
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON payload received.")
    if method in ("embedContent", "batchEmbedContents"):
        return _embed(model, body, batch=method == "batchEmbedContents")
    if method not in ("generateContent", "streamGenerateContent"):
        raise ApiError(404, f"Method {method} not found.")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise ApiError(400, "* GenerateContentRequest.contents: contents is not specified")
    return await _generate(request, cfg, model, body, stream=method == "streamGenerateContent")


async def _generate(
    request: web.Request, cfg: _Config, model: str, body: dict[str, Any], *, stream: bool
) -> web.StreamResponse:
    raw = body.get("generationConfig")
    gen: dict[str, Any] = raw if isinstance(raw, dict) else {}
    limit = gen.get("maxOutputTokens") if isinstance(gen.get("maxOutputTokens"), int) else None
    prompt_text = _text_of(body.get("contents"))
    decls = [d for t in body.get("tools") or [] if isinstance(t, dict) for d in t.get("functionDeclarations") or []]
    think = gen.get("thinkingConfig") or {}  # the API takes both spellings; google-genai sends snake_case here
    thinking = bool(think.get("includeThoughts") or think.get("include_thoughts")) if isinstance(think, dict) else False
    prompt = approx_tokens(prompt_text)
    if decls and "use tool" in prompt_text.lower():
        fn = decls[0]
        args = tool_arguments(fn.get("parametersJsonSchema") or fn.get("parameters"))
        parts: list[dict[str, Any]] = [{"functionCall": {"name": fn.get("name"), "args": args}}]
        completion, finish, pieces = approx_tokens(str(fn.get("name")) + orjson.dumps(args).decode()), "STOP", []
    else:
        reply = scripted_reply(cfg.name, prompt_text, max_tokens=limit)
        completion, finish = reply.tokens, "MAX_TOKENS" if reply.truncated else "STOP"
        pieces = split_text(reply.text, cfg.stream_chunks)
        parts = [{"text": reply.text}]
    thoughts = 3 if thinking else 0

    def usage(done: int) -> dict[str, Any]:
        out = {"promptTokenCount": prompt, "candidatesTokenCount": done, "totalTokenCount": prompt + done + thoughts}
        if thoughts:
            out["thoughtsTokenCount"] = thoughts
        return out

    def response(parts: list[dict[str, Any]], done: int, reason: str | None) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if reason:
            cand["finishReason"] = reason
        return {"candidates": [cand], "usageMetadata": usage(done), "modelVersion": model, "responseId": "r1"}

    lead = [{"text": "Considering.", "thought": True, "thoughtSignature": "c2ln"}] if thinking else []
    if not stream:
        return json_response(response(lead + parts, completion, finish))
    chunks = [response(lead, 0, None)] if lead else []
    if pieces:
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            done = completion if last else approx_tokens("".join(pieces[: i + 1]))
            chunks.append(response([{"text": piece}], done, finish if last else None))
    else:
        chunks.append(response(parts, completion, finish))
    sse = request.query.get("alt") == "sse"
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream" if sse else "application/json"})
    await resp.prepare(request)
    for i, obj in enumerate(chunks):
        if i and cfg.chunk_delay_s > 0:
            await asyncio.sleep(cfg.chunk_delay_s)
        data = orjson.dumps(obj)
        frame = b"data: " + data + b"\r\n\r\n" if sse else (b"[" if i == 0 else b",\r\n") + data
        try:
            await resp.write(frame)
        except ConnectionError:
            return resp
    if not sse:
        await resp.write(b"]")
    await resp.write_eof()
    return resp


def _vector(model: str, text: str) -> list[float]:
    digest = hashlib.sha256(f"{model}\0{text}".encode()).digest()
    vec = [b / 255 - 0.5 for b in digest[:EMBED_DIMS]]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in vec]


def _embed(model: str, body: dict[str, Any], *, batch: bool) -> web.Response:
    requests = body.get("requests") if batch else [body]
    if not isinstance(requests, list) or not requests:
        raise ApiError(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
    texts = [_text_of([r.get("content")]) if isinstance(r, dict) else "" for r in requests]
    if not all(texts):
        raise ApiError(400, "* EmbedContentRequest.content: contents is not specified")
    vectors = [{"values": _vector(model, t)} for t in texts]
    return json_response({"embeddings": vectors} if batch else {"embedding": vectors[0]})
