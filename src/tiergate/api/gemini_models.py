"""Gemini's model list and key: models.list / models.get, and who counts as a Google-style caller.

Apart from api/gemini.py so that api/openai.py can hand ``GET /v1/models``
to it (google-genai's default API version is v1) without an import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from tiergate.api.common import JSON
from tiergate.api.gateway import GATEWAY
from tiergate.api.model_cards import ModelCard, model_card, model_cards
from tiergate.core.errors import NotFound
from tiergate.core.types import Identity

GENERATE_METHODS = ["generateContent", "streamGenerateContent", "countTokens"]
EMBED_METHODS = ["embedContent", "batchEmbedContents"]
DEFAULT_OUTPUT_LIMIT = 8192  # what a model card says when no deployment behind a name sets max_output_tokens


def is_google_caller(request: web.Request) -> bool:
    return "x-goog-api-key" in request.headers or "key" in request.query


def _key_headers(request: web.Request) -> Mapping[str, str]:
    """The request's headers with a Google-style key presented as tiergate reads keys (``x-api-key``)."""
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    if not key or "Authorization" in request.headers or "x-api-key" in request.headers:
        return request.headers
    headers = CIMultiDict(request.headers)
    headers["x-api-key"] = key
    return headers


def identify(request: web.Request) -> Identity:
    return request.app[GATEWAY].keys.identify(_key_headers(request), request.remote)


def model_resource(card: ModelCard) -> dict[str, Any]:
    """A Model resource as models.list / models.get answer it."""
    return {
        "name": f"models/{card.name}",
        "version": "001",
        "displayName": card.name,
        "description": f"tiergate route over {', '.join(d.name for d in card.deployments)}",
        "inputTokenLimit": card.context_window,
        "outputTokenLimit": card.max_output_tokens or DEFAULT_OUTPUT_LIMIT,
        "supportedGenerationMethods": EMBED_METHODS if card.embeddings_only else GENERATE_METHODS,
    }


async def list_models(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    identify(request)
    models = [model_resource(card) for card in model_cards(gw.catalog)]
    return web.Response(body=orjson.dumps({"models": models}), content_type=JSON)


async def get_model(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    identify(request)
    name = request.match_info["name"].removeprefix("models/")
    card = model_card(gw.catalog, name)
    if card is None:
        raise NotFound(f"model 'models/{name}' not found")
    return web.Response(body=orjson.dumps(model_resource(card)), content_type=JSON)


async def get_v1_model(request: web.Request) -> web.Response:
    """GET /v1/models/{name}: Gemini's models.get for a Google-style caller (OpenAI's retrieve is not served)."""
    if not is_google_caller(request):
        raise NotFound(f"no route GET {request.path}")
    return await get_model(request)
