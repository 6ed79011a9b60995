"""Azure OpenAI stand-in: deployments under a resource endpoint, checked as Azure checks them.

What Azure refuses, this refuses the same way (status and body as Azure
sends them): a call without ``?api-version=`` or with a version Azure does not
have (404 ``Resource not found``), a missing or wrong ``api-key`` header or
Entra token (401 ``Access denied ...``), a deployment the resource does not
have (404 ``DeploymentNotFound``), ``stream_options`` on a version older than
2024-09-01 (400). Both URL forms are served: the classic
``/openai/deployments/NAME/chat/completions`` and the v1 API's
``/openai/v1/chat/completions`` (deployment as ``model``, version optional).
Replies are the OpenAI stand-in's, with Azure's content-filter fields.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .faults import ApiError, install_control, json_response, parse_json
from .openai_server import _CONFIG, _Config, chat_reply, embeddings_reply, openai_error

# GA and preview versions of the data-plane inference API (Azure's REST reference)
API_VERSIONS = frozenset(
    {
        "2023-05-15",
        "2024-02-01",
        "2024-06-01",
        "2024-10-21",
        "2024-08-01-preview",
        "2024-09-01-preview",
        "2024-10-01-preview",
        "2024-12-01-preview",
        "2025-01-01-preview",
        "2025-03-01-preview",
        "2025-04-01-preview",
    }
)
V1_VERSIONS = frozenset({"preview", "latest"})
STREAM_USAGE_SINCE = "2024-09-01"  # stream_options.include_usage is unknown to older versions
ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)
_AZURE = web.AppKey("tiergate_azure_standin", dict)


def azure_error(status: int, message: str, *, code: str | None = None, param: str | None = None) -> web.Response:
    """Azure's own envelope for what its gateway refuses: ``{"error": {"code", "message"}}``."""
    return json_response({"error": {"code": code or str(status), "message": message}}, status)


def build_azure_standin(
    *,
    name: str,
    models: list[str],
    api_key: str | None = None,
    entra_token: str | None = None,
    stream_chunks: int = 20,
    chunk_delay_s: float = 0.0,
) -> web.Application:
    """``models`` are the resource's deployment names; ``api_key`` / ``entra_token``: what it accepts."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[_CONFIG] = _Config(name, tuple(models), None, max(1, stream_chunks), chunk_delay_s)
    app[_AZURE] = {"api_key": api_key, "entra_token": entra_token}
    paths = [f"/openai/deployments/{m}/{op}" for m in models for op in ("chat/completions", "embeddings")]
    install_control(
        app, model_paths=(*paths, "/openai/v1/chat/completions", "/openai/v1/embeddings"), error_response=openai_error
    )
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", _classic_chat)
    app.router.add_post("/openai/deployments/{deployment}/embeddings", _classic_embeddings)
    app.router.add_post("/openai/v1/chat/completions", _v1_chat)
    app.router.add_post("/openai/v1/embeddings", _v1_embeddings)
    return app


_BY_STATUS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    404: web.HTTPNotFound,
}


def _refused(response: web.Response) -> web.HTTPException:
    assert isinstance(response.body, bytes)
    return _BY_STATUS[response.status](body=response.body, content_type="application/json")


def _authorize(request: web.Request) -> None:
    want = request.app[_AZURE]
    if want["api_key"] is None and want["entra_token"] is None:
        return
    key = request.headers.get("api-key")
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
    if (key is not None and key == want["api_key"]) or (token is not None and token == want["entra_token"]):
        return
    raise _refused(azure_error(401, ACCESS_DENIED))


def _version(request: web.Request, *, v1: bool) -> str | None:
    v = request.query.get("api-version")
    if v1 and (v is None or v in V1_VERSIONS):
        return None
    if v is None or v not in API_VERSIONS:
        raise _refused(azure_error(404, "Resource not found"))
    return v


async def _body(request: web.Request, deployment: str | None, *, v1: bool) -> dict[str, Any]:
    version = _version(request, v1=v1)
    _authorize(request)
    body = parse_json(await request.read())
    if not isinstance(body, dict):
        raise ApiError(400, "We could not parse the JSON body of your request.")
    if deployment is None:  # the v1 API: the deployment is the body's model
        deployment = body.get("model") if isinstance(body.get("model"), str) else None
    if deployment not in request.app[_CONFIG].models:
        raise _refused(
            azure_error(
                404,
                "The API deployment for this resource does not exist. If you created the deployment within the last "
                "5 minutes, please wait a moment and try again.",
                code="DeploymentNotFound",
            )
        )
    if version is not None and version < STREAM_USAGE_SINCE and "stream_options" in body:
        raise _refused(azure_error(400, "Unrecognized request argument supplied: stream_options", code="BadRequest"))
    return {**body, "model": deployment}


async def _classic_chat(request: web.Request) -> web.StreamResponse:
    body = await _body(request, request.match_info["deployment"], v1=False)
    return await chat_reply(request, request.app[_CONFIG], body, azure=True)


async def _v1_chat(request: web.Request) -> web.StreamResponse:
    return await chat_reply(request, request.app[_CONFIG], await _body(request, None, v1=True), azure=True)


async def _classic_embeddings(request: web.Request) -> web.Response:
    return embeddings_reply(await _body(request, request.match_info["deployment"], v1=False))


async def _v1_embeddings(request: web.Request) -> web.Response:
    return embeddings_reply(await _body(request, None, v1=True))
