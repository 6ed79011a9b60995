"""Ollama's native API at tiergate's address: /api/chat, /api/generate, /api/embed(dings), tags, show, ps, version.

OpenClaw's ``ollama`` provider, VS Code's Ollama models and the ollama
library speak only this. Model names are tiergate's (aliases, deployments,
``auto``, ``task/<type>``; a ``:latest`` tag is ignored). Requests ride the
same pipeline as every surface — routing, failover, budgets, the ledger —
translated to the deployment's protocol by ``adapters/translated_clients``.
Answers stream as NDJSON unless ``stream`` is false; errors leave in
Ollama's ``{"error": "..."}``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from tiergate.adapters.translate_ollama import (
    embed_input,
    ollama_chat_to_openai,
    ollama_error_line,
    ollama_generate_to_openai,
)
from tiergate.adapters.translated_clients import utc_now
from tiergate.api.common import JSON, read_json_object, require_type
from tiergate.api.edge import EdgeRoutes
from tiergate.api.gateway import GATEWAY, Gateway
from tiergate.api.model_cards import ModelCard, model_card, model_cards
from tiergate.api.needs import openai_chat_needs
from tiergate.api.openai import pipeline_request
from tiergate.api.plain_reply import Reply
from tiergate.api.render import render
from tiergate.core.errors import BadRequest, NotFound
from tiergate.core.tokens import chat_prompt, embeddings_prompt
from tiergate.core.types import EMBEDDINGS, RequestFeatures
from tiergate.pipeline.service import effective_identity

# What /api/version reports: a released Ollama that current clients accept (VS Code asks for >= 0.6.4)
OLLAMA_VERSION = "0.12.11"
NEVER_EXPIRES = "2099-01-01T00:00:00Z"


def ollama_stream_error(message: str) -> bytes:
    return ollama_error_line(f"upstream stream failed: {message}")


def model_name(body: dict[str, Any]) -> str:
    """The model a body names (``model``, or ``name`` in older clients), without Ollama's default tag."""
    value = body.get("model") or body.get("name")
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("model is required", param="model")
    return value.strip().removesuffix(":latest")


def _stream(body: dict[str, Any]) -> bool:
    value = require_type(body, "stream", bool, "a boolean")
    return True if value is None else value  # Ollama streams unless told not to


def _loaded_reply(model: str, body: dict[str, Any], *, generate: bool) -> web.Response:
    """An empty prompt asks Ollama to load (or, with keep_alive 0, unload) a model: nothing to route."""
    unload = body.get("keep_alive") in (0, "0", "0s", "0m")
    out: dict[str, Any] = {"model": model, "created_at": utc_now()}
    if generate:
        out["response"] = ""
    else:
        out["message"] = {"role": "assistant", "content": ""}
    out.update(done=True, done_reason="unload" if unload else "load")
    return web.Response(body=orjson.dumps(out), content_type=JSON)


async def _complete(request: web.Request, *, generate: bool) -> Reply:
    gw = request.app[GATEWAY]
    ident = gw.keys.identify(request.headers, request.remote)
    _, body = await read_json_object(request)
    model = model_name(body)
    stream = _stream(body)
    if generate and not body.get("prompt") and not body.get("images"):
        return _loaded_reply(model, body, generate=True)
    if not generate and body.get("messages") in (None, []):
        return _loaded_reply(model, body, generate=False)
    body = {**body, "model": model}
    translate = ollama_generate_to_openai if generate else ollama_chat_to_openai
    try:  # the OpenAI view: validates the body here (a 400 before routing) and is what routing measures
        view, _ = translate(body, model=model)
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
    protocol = "ollama-generate" if generate else "ollama-chat"
    answer = await gw.pipeline.open(pipeline_request(request, ident, features, body, protocol))
    return await render(request, answer, error_event=ollama_stream_error)


async def chat(request: web.Request) -> Reply:
    return await _complete(request, generate=False)


async def generate(request: web.Request) -> Reply:
    return await _complete(request, generate=True)


async def _embed(request: web.Request, *, legacy: bool) -> Reply:
    gw = request.app[GATEWAY]
    ident = gw.keys.identify(request.headers, request.remote)
    _, body = await read_json_object(request)
    model = model_name(body)
    try:
        text = embed_input(body, legacy=legacy)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    features = RequestFeatures(
        model=model,
        task=ident.task,
        prompt_tokens_est=(prompt := embeddings_prompt({"input": text})).tokens,
        prompt=prompt,
        local_only=ident.local_only,
        needs=EMBEDDINGS,
    )
    protocol = "ollama-embeddings" if legacy else "ollama-embed"
    answer = await gw.pipeline.open(pipeline_request(request, ident, features, {**body, "model": model}, protocol))
    return await render(request, answer)


async def embed(request: web.Request) -> Reply:
    return await _embed(request, legacy=False)


async def embeddings(request: web.Request) -> Reply:
    return await _embed(request, legacy=True)


def _details(card: ModelCard) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf" if card.local else "api",
        "family": "tiergate",
        "families": ["tiergate"],
        "parameter_size": "",
        "quantization_level": "",
    }


def _listed(card: ModelCard, modified_at: str) -> dict[str, Any]:
    return {
        "name": card.name,
        "model": card.name,
        "modified_at": modified_at,
        "size": 0,
        "digest": hashlib.sha256(card.name.encode()).hexdigest(),
        "details": _details(card),
        "capabilities": card.ollama_capabilities(),
    }


def _started(gw: Gateway) -> str:
    return datetime.fromtimestamp(gw.started_at, UTC).isoformat().replace("+00:00", "Z")


async def tags(request: web.Request) -> web.Response:
    """Every name tiergate serves, as Ollama lists its local models."""
    gw = request.app[GATEWAY]
    gw.keys.identify(request.headers, request.remote)
    started = _started(gw)
    models = [_listed(card, started) for card in model_cards(gw.catalog)]
    return web.Response(body=orjson.dumps({"models": models}), content_type=JSON)


def show_body(card: ModelCard, modified_at: str) -> dict[str, Any]:
    """/api/show's answer: capabilities from the deployments' own, the context window in model_info."""
    info: dict[str, Any] = {
        "general.architecture": "tiergate",
        "general.basename": card.name,
        "tiergate.context_length": card.context_window,
    }
    if card.embeddings_only:
        info["tiergate.embedding_length"] = 0
    return {
        "modelfile": f"# served by tiergate\nFROM {card.name}\n",
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": _details(card),
        "model_info": info,
        "capabilities": card.ollama_capabilities(),
        "modified_at": modified_at,
    }


async def show(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    gw.keys.identify(request.headers, request.remote)
    _, body = await read_json_object(request)
    name = model_name(body)
    card = model_card(gw.catalog, name)
    if card is None:
        raise NotFound(f"model '{name}' not found")
    return web.Response(body=orjson.dumps(show_body(card, _started(gw))), content_type=JSON)


def _running(gw: Gateway, card: ModelCard) -> bool:
    """A local deployment is running when tiergate's own engine has it loaded, or (another server's) always."""
    states = gw.local.states() if gw.local is not None else {}
    return all(d.local and (d.local_model is None or states.get(d.local_model) == "ready") for d in card.deployments)


async def ps(request: web.Request) -> web.Response:
    """The local deployments ready to answer now, as Ollama lists its loaded models."""
    gw = request.app[GATEWAY]
    gw.keys.identify(request.headers, request.remote)
    models = []
    for name in gw.catalog.deployments:
        card = model_card(gw.catalog, name)
        if card is not None and _running(gw, card):
            row = {k: v for k, v in _listed(card, _started(gw)).items() if k not in ("modified_at", "capabilities")}
            models.append({**row, "expires_at": NEVER_EXPIRES, "size_vram": 0, "context_length": card.context_window})
    return web.Response(body=orjson.dumps({"models": models}), content_type=JSON)


async def version(request: web.Request) -> web.Response:
    """No key needed, as with Ollama: clients probe it before they know whether they need one."""
    return web.Response(body=orjson.dumps({"version": OLLAMA_VERSION}), content_type=JSON)


def add_routes(routes: EdgeRoutes) -> None:
    routes.post("/api/chat", chat)
    routes.post("/api/generate", generate)
    routes.post("/api/embed", embed)
    routes.post("/api/embeddings", embeddings)
    routes.get("/api/tags", tags)
    routes.post("/api/show", show)
    routes.get("/api/ps", ps)
    routes.get("/api/version", version)
