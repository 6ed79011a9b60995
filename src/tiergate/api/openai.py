"""OpenAI surface: /v1/chat/completions, /v1/embeddings, /v1/models.

Parses only what routing needs (model, messages present, stream,
max_tokens); everything else in the body travels to the upstream untouched.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tiergate.api.common import JSON, read_json_object, require_type
from tiergate.api.edge import EdgeRoutes
from tiergate.api.gateway import GATEWAY
from tiergate.api.gemini_models import is_google_caller
from tiergate.api.gemini_models import list_models as gemini_list_models
from tiergate.api.needs import openai_chat_needs
from tiergate.api.plain_reply import Reply
from tiergate.api.render import render
from tiergate.core.errors import BadRequest
from tiergate.core.tokens import chat_prompt, embeddings_prompt
from tiergate.core.types import EMBEDDINGS, NO_HINTS, ClientHints, Identity, RequestFeatures
from tiergate.pipeline.service import PipelineRequest, effective_identity

PROTOCOL = "openai-chat"


def openai_stream_error(message: str) -> bytes:
    payload = {
        "error": {"message": f"upstream stream failed: {message}", "type": "api_error", "code": "stream_interrupted"}
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def max_tokens_of(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        v = body.get(key)
        if v is None:
            continue
        if type(v) is not int:  # the usual value passes without a call; require_type says what is wrong
            v = require_type(body, key, int, "a positive integer", required=True)
        if v <= 0:
            raise BadRequest(f"'{key}' must be a positive integer", param=key)
        return v
    return None


def chat_features(raw: bytes, body: dict[str, Any], ident: Identity) -> tuple[Identity, RequestFeatures]:
    """Validate the few fields routing reads and build its features; the rest is not looked at.

    Each field is tested for its usual exact type first (what a JSON parser gives); anything else goes
    to ``require_type``, which accepts or names what is wrong, so the answers are the same either way.
    """
    model = body.get("model")
    if type(model) is not str:
        model = require_type(body, "model", str, "a string")
    model = model or "auto"
    messages = body.get("messages")
    if type(messages) is not list:
        messages = require_type(body, "messages", list, "a non-empty list of messages", required=True)
    if not messages:
        raise BadRequest("'messages' must contain at least one message", param="messages")
    stream = body.get("stream")
    if type(stream) is not bool:
        stream = bool(require_type(body, "stream", bool, "a boolean"))
    ident = effective_identity(ident, model)
    prompt = chat_prompt(body)
    # in field order (model, task, prompt_tokens_est, prompt, max_tokens, local_only, stream, needs):
    # a class called with keywords builds a dict of them per request
    features = RequestFeatures(
        model,
        ident.task,
        prompt.tokens,
        prompt,
        max_tokens_of(body),
        ident.local_only,
        stream,
        openai_chat_needs(body, messages),
    )
    return ident, features


def pipeline_request(
    request: web.Request,
    ident: Identity,
    features: RequestFeatures,
    body: dict[str, Any],
    protocol: str,
    hints: ClientHints = NO_HINTS,
) -> PipelineRequest:
    # in field order: a class called with keywords builds a dict of them per request
    return PipelineRequest(request["request_id"], ident, features, body, protocol, request["started"], hints)


async def chat_completions(request: web.Request) -> Reply:
    gw = request.app[GATEWAY]
    ident = gw.keys.identify(request.headers, peer=request)
    raw, body = await read_json_object(request)
    ident, features = chat_features(raw, body, ident)
    answer = await gw.pipeline.open(pipeline_request(request, ident, features, body, PROTOCOL))
    return await render(request, answer, error_event=openai_stream_error)


async def embeddings(request: web.Request) -> Reply:
    gw = request.app[GATEWAY]
    ident = gw.keys.identify(request.headers, peer=request)
    raw, body = await read_json_object(request)
    model = require_type(body, "model", str, "a string") or "auto"
    if body.get("input") in (None, "", []):
        raise BadRequest("'input' is required (a string or a list of strings)", param="input")
    features = RequestFeatures(
        model=model,
        task=ident.task,
        prompt_tokens_est=(prompt := embeddings_prompt(body)).tokens,
        prompt=prompt,
        local_only=ident.local_only,
        needs=EMBEDDINGS,
    )
    answer = await gw.pipeline.open(pipeline_request(request, ident, features, body, "openai-embeddings"))
    return await render(request, answer)


async def list_models(request: web.Request) -> web.Response:
    if is_google_caller(request):  # google-genai lists models at /v1/models too, with its key header
        return await gemini_list_models(request)
    gw = request.app[GATEWAY]
    gw.keys.identify(request.headers, peer=request)
    created = int(gw.started_at)
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "tiergate"} for name in gw.catalog.model_names()
    ]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=JSON)


def add_routes(routes: EdgeRoutes) -> None:
    routes.post("/v1/chat/completions", chat_completions)
    routes.post("/chat/completions", chat_completions)
    routes.post("/v1/embeddings", embeddings)
    routes.get("/v1/models", list_models)
