"""The HTTP edge shared by both client protocols: bodies in, errors and headers out."""

from __future__ import annotations

import logging
import re
from typing import Any, Literal, TypeVar, overload

import orjson
from aiohttp import web

from tiergate.core.errors import BadRequest, PayloadTooLarge, TiergateError

log = logging.getLogger("tiergate.api")

JSON = "application/json"
_UNSAFE_HEADER = re.compile(r"[^\x20-\x7e]")


async def read_json_object(request: web.Request) -> tuple[bytes, dict[str, Any]]:
    """The raw body and its parsed object; 413 over the size limit, 400 for anything not a JSON object."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(
            f"request body is larger than the server's limit of {request.app['max_body_bytes']} bytes "
            f"(server.max_body_mb)"
        ) from exc
    if not raw:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return raw, body


def header_value(text: str, limit: int = 400) -> str:
    """Make free text safe for an HTTP header (ASCII, bounded)."""
    if len(text) <= limit and text.isascii() and text.isprintable():  # the usual case: no regex pass
        return text
    text = _UNSAFE_HEADER.sub("?", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def openai_error_body(err: TiergateError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": err.openai_type, "param": err.param, "code": err.code}}


def anthropic_error_body(err: TiergateError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": err.anthropic_type, "message": err.message}}


def error_response(err: TiergateError, *, anthropic: bool, request_id: str) -> web.Response:
    body = anthropic_error_body(err) if anthropic else openai_error_body(err)
    headers = {"X-Request-ID": request_id}
    if err.retry_after is not None:
        headers["Retry-After"] = str(err.retry_after)
    return web.Response(body=orjson.dumps(body), status=err.status, content_type=JSON, headers=headers)


T = TypeVar("T")


@overload
def require_type(body: dict[str, Any], key: str, types: type[T], what: str, *, required: Literal[True]) -> T: ...


@overload
def require_type(body: dict[str, Any], key: str, types: type[T], what: str, *, required: bool = False) -> T | None: ...


def require_type(
    body: dict[str, Any], key: str, types: type[T] | tuple[type, ...], what: str, *, required: bool = False
) -> Any:
    v = body.get(key)
    if v is None:
        if required:
            raise BadRequest(f"'{key}' is required ({what})", param=key)
        return None
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise BadRequest(f"'{key}' must be {what}, got a boolean", param=key)
    if not isinstance(v, types):
        raise BadRequest(f"'{key}' must be {what}, got {type(v).__name__}", param=key)
    return v
