"""GET /v1/codex/models: the model catalog Codex CLI reads from a provider's ``model_catalog_url``.

Since 0.156 Codex lists no models of a custom provider and warns "Model
metadata ... not found" for a name it does not know; with
``model_catalog_url`` it reads this list instead (its ``ModelsResponse``
shape: ``{"models": [ModelInfo, ...]}``). Every name /v1/models lists is an
entry, with the smallest context window among the deployments it can reach,
so Codex compacts its history before the weakest of them overflows.

Codex takes a catalog entry's ``base_instructions`` as its system prompt in
place of its built-in one (seen with 0.171: an empty string sent none). The
entry carries a short prompt of tiergate's own, which suits small local
models; a user who wants Codex's full built-in prompt leaves
``model_catalog_url`` out and accepts the warning (docs/clients.md).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tiergate.api.common import JSON
from tiergate.api.edge import EdgeRoutes
from tiergate.api.gateway import GATEWAY
from tiergate.core.catalog import Catalog

BASE_INSTRUCTIONS = (
    "You are a coding agent in the Codex CLI, working in the user's workspace through the tools you are given. "
    "Be precise and brief; run commands and edit files only as the task needs, and say what you did."
)


def _window(catalog: Catalog, name: str) -> int | None:
    ds = catalog.deployments
    names = [name] if name in ds else list(catalog.aliases.get(name, ())) or list(ds)
    windows = [ds[n].context_window for n in names if n in ds and ds[n].context_window]
    return min(windows) if windows else None


def codex_models(catalog: Catalog) -> dict[str, Any]:
    models = []
    for priority, name in enumerate(catalog.model_names()):
        entry: dict[str, Any] = {
            "slug": name,
            "display_name": name,
            "description": f"{name} through tiergate",
            "supported_reasoning_levels": [],
            "shell_type": "shell_command",
            "visibility": "list",
            "supported_in_api": True,
            "priority": priority,
            "upgrade": None,
            "base_instructions": BASE_INSTRUCTIONS,
            "supports_reasoning_summaries": False,
            "support_verbosity": False,
            "default_verbosity": None,
            "apply_patch_tool_type": "freeform",
            "truncation_policy": {"mode": "tokens", "limit": 10000},
            "supports_parallel_tool_calls": False,
            "experimental_supported_tools": [],
            "input_modalities": ["text"],
        }
        window = _window(catalog, name)
        if window is not None:
            entry["context_window"] = window
        models.append(entry)
    return {"models": models}


async def list_codex_models(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    gw.keys.identify(request.headers, request.remote)
    return web.Response(body=orjson.dumps(codex_models(gw.catalog)), content_type=JSON)


def add_routes(routes: EdgeRoutes) -> None:
    routes.get("/v1/codex/models", list_codex_models)
