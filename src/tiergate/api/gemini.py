"""Gemini's API at tiergate's address: models/{m}:generateContent, :streamGenerateContent, :countTokens,
:embedContent, :batchEmbedContents and the model list, on both /v1beta (Gemini CLI) and /v1 (google-genai).

The key comes in ``x-goog-api-key`` or ``?key=`` and is checked like any
tiergate key. ``GET /v1/models`` is also OpenAI's list: a caller presenting
a Google-style key gets Gemini's shape (``openai.list_models`` asks
``gemini_models.is_google_caller``). Requests ride the one pipeline, translated by
``adapters/translated_clients``; errors leave in Google's envelope
(``api/edge.envelope_for``).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tiergate.adapters.translate_gemini import gemini_embed_to_openai, gemini_stream_frame, gemini_to_openai
from tiergate.api.common import JSON, google_error_body, read_json_object
from tiergate.api.edge import EdgeRoutes
from tiergate.api.gateway import GATEWAY
from tiergate.api.gemini_models import EMBED_METHODS, GENERATE_METHODS, get_model, get_v1_model, identify, list_models
from tiergate.api.needs import openai_chat_needs
from tiergate.api.openai import pipeline_request
from tiergate.api.plain_reply import Reply
from tiergate.api.render import render
from tiergate.core.errors import BadRequest, NotFound, TiergateError
from tiergate.core.tokens import chat_prompt, embeddings_prompt
from tiergate.core.types import EMBEDDINGS, NO_HINTS, ClientHints, RequestFeatures
from tiergate.pipeline.service import effective_identity

SSE_HINTS = ClientHints(query="alt=sse")


def split_target(tail: str) -> tuple[str, str]:
    """``{model}:{method}`` (the model may hold ``/`` and ``:``) -> (model, method)."""
    model, sep, method = tail.rpartition(":")
    if not sep or not model:
        raise NotFound(f"no method in 'models/{tail}': expected models/{{model}}:{{method}}")
    return model.removeprefix("models/"), method


def _stream_error(sse: bool) -> Any:
    def event(message: str) -> bytes:
        err = google_error_body(TiergateError(f"upstream stream failed: {message}"))
        return gemini_stream_frame(err, sse=sse, first=False) + (b"" if sse else b"]")

    return event


async def _generate(request: web.Request, model: str, *, stream: bool) -> Reply:
    gw = request.app[GATEWAY]
    ident = identify(request)
    _, body = await read_json_object(request)
    body = {**body, "model": model}
    try:  # validates here (a 400 before routing); routing measures the OpenAI view
        view, _ = gemini_to_openai(body, model=model)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    ident = effective_identity(ident, model)
    features = RequestFeatures(
        model=model,
        task=ident.task,
        prompt_tokens_est=(prompt := chat_prompt(view)).tokens,
        prompt=prompt,
        max_tokens=view.get("max_tokens"),
        local_only=ident.local_only,
        stream=stream,
        needs=openai_chat_needs(view, view["messages"]),
    )
    sse = request.query.get("alt") == "sse"
    hints = SSE_HINTS if sse else NO_HINTS
    answer = await gw.pipeline.open(pipeline_request(request, ident, features, body, "gemini-generate", hints))
    return await render(request, answer, error_event=_stream_error(sse))


async def _count_tokens(request: web.Request, model: str) -> web.Response:
    """An estimate (as routing makes it) of what the model would read; no upstream call."""
    identify(request)
    _, body = await read_json_object(request)
    inner = body.get("generateContentRequest") or body.get("generate_content_request")
    source = inner if isinstance(inner, dict) else body
    try:
        view, _ = gemini_to_openai(source, model=model)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return web.Response(body=orjson.dumps({"totalTokens": chat_prompt(view).tokens}), content_type=JSON)


async def _embed(request: web.Request, model: str, *, batch: bool) -> Reply:
    gw = request.app[GATEWAY]
    ident = identify(request)
    _, body = await read_json_object(request)
    try:
        view, _ = gemini_embed_to_openai(body, model=model, batch=batch)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    features = RequestFeatures(
        model=model,
        task=ident.task,
        prompt_tokens_est=(prompt := embeddings_prompt(view)).tokens,
        prompt=prompt,
        local_only=ident.local_only,
        needs=EMBEDDINGS,
    )
    protocol = "gemini-batch-embed" if batch else "gemini-embed"
    answer = await gw.pipeline.open(pipeline_request(request, ident, features, {**body, "model": model}, protocol))
    return await render(request, answer)


async def model_method(request: web.Request) -> Reply:
    """POST models/{model}:{method}."""
    model, method = split_target(request.match_info["tail"])
    if method == "generateContent":
        return await _generate(request, model, stream=False)
    if method == "streamGenerateContent":
        return await _generate(request, model, stream=True)
    if method == "countTokens":
        return await _count_tokens(request, model)
    if method in EMBED_METHODS:
        return await _embed(request, model, batch=method == "batchEmbedContents")
    raise NotFound(f"method '{method}' is not served (served: {', '.join(GENERATE_METHODS + EMBED_METHODS)})")


def add_routes(routes: EdgeRoutes) -> None:
    for version in ("v1beta", "v1"):
        routes.post(f"/{version}/models/{{tail:.+}}", model_method)
    routes.get("/v1beta/models", list_models)
    routes.get("/v1beta/models/{name:.+}", get_model)
    routes.get("/v1/models/{name:.+}", get_v1_model)
