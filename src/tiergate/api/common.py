"""The HTTP edge shared by both client protocols: bodies in, errors and headers out."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any, Literal, TypeVar, overload

import orjson
from aiohttp import StreamReader, web

from tiergate.api.gateway import GATEWAY
from tiergate.api.inbound import BodiesInFlight, BoundedBody, content_encoding, nesting_exceeds, too_large
from tiergate.core.errors import BadRequest, TiergateError

log = logging.getLogger("tiergate.api")

JSON = "application/json"
_UNSAFE_HEADER = re.compile(r"[^\x20-\x7e]")


BODIES_IN_FLIGHT: web.AppKey[BodiesInFlight] = web.AppKey("bodies_in_flight", BodiesInFlight)


async def read_body(request: web.Request, limit: int, bodies: BodiesInFlight | None = None) -> bytes:
    """The body, decompressed, never gathered past ``limit`` bytes, nor past the bytes all of this worker's
    requests may be reading at once (``BodiesInFlight``; 503 with Retry-After beyond it).

    A declared Content-Length over the limit is refused before a byte of the
    body is read; a chunked or compressed body is read with a running bound.
    aiohttp's own decompression is off (``handler_args`` in app.py): it
    answered unsupported encodings in plain text and read bodies in chunks
    of the whole limit, so 413 came only after 21-28 MB.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(limit)
    encoding = request.headers.get("Content-Encoding")
    content = request.content
    if bodies is None:
        bodies = request.app[BODIES_IN_FLIGHT]
    if encoding is None and declared is not None:
        # the usual body: plain, its length declared and within the limit, and aiohttp's parser never
        # gives more than the declared length, so no running bound is needed: one add, one subtract
        if bodies.taken + declared > bodies.limit:
            raise bodies.refusal()
        if content.is_eof():  # all of it is in aiohttp's buffer already (a small body, usually): taken now
            return content.read_nowait()
        bodies.taken += declared
        try:
            parts: list[bytes] = []
            if declared > bodies.PACE_AFTER:
                await _read_paced(content, bodies, parts.append)
            else:
                while chunk := await content.readany():
                    parts.append(chunk)
        finally:
            bodies.taken -= declared
        return parts[0] if len(parts) == 1 else b"".join(parts)
    body = BoundedBody(content_encoding(encoding), limit)
    counted = 0

    def feed(chunk: bytes) -> None:
        nonlocal counted
        body.feed(chunk)
        grew = body.held - counted
        bodies.take(grew)
        counted += grew

    try:
        await _read_paced(content, bodies, feed)
        return body.finish()
    finally:
        bodies.taken -= counted


async def _read_paced(content: StreamReader, bodies: BodiesInFlight, use: Callable[[bytes], None]) -> None:
    """Each chunk to ``use``; past the body's first PACE_AFTER bytes, at the worker's shared pace for large
    bodies (BodiesInFlight.pace), so that a flood of them cannot keep the worker from its other clients."""
    loop = asyncio.get_running_loop()
    seen = 0
    while chunk := await content.readany():
        use(chunk)
        seen += len(chunk)
        if seen > bodies.PACE_AFTER:
            wait = bodies.pace(min(len(chunk), seen - bodies.PACE_AFTER), loop.time())
            if wait > 0:
                await asyncio.sleep(wait)


async def read_json_object(request: web.Request) -> tuple[bytes, dict[str, Any]]:
    """The raw (decompressed) body and its parsed object; 413 over the size limit, 400 for anything not a
    JSON object or nested deeper than server.max_json_depth."""
    app = request.app  # once: each read goes through aiohttp's match info
    server = app[GATEWAY].config.server
    raw = await read_body(request, int(server.max_body_mb * 1024 * 1024), app[BODIES_IN_FLIGHT])
    if not raw:
        raise BadRequest("request body is empty; expected a JSON object")
    depth = server.max_json_depth
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):  # orjson's own limit (1024), far above ours
            raise too_deep(depth) from None
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    # a body with fewer opening brackets than the limit cannot nest that deep (most do not): counting them in
    # C is cheaper than the walk for a small body; a large one goes to the walk (docs/decisions/0003)
    if (len(raw) > SMALL_BODY or len(raw.translate(None, _NOT_OPENING)) >= depth) and nesting_exceeds(body, depth):
        raise too_deep(depth)
    return raw, body


def query_count(request: web.Request, name: str, default: int, most: int) -> int:
    """A whole-number query parameter (a page's limit or offset): ``default`` when absent, 400 naming it when
    it is not a number from 0 to ``most``."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > most:
        raise BadRequest(f"'{name}' must be a whole number from 0 to {most}", param=name)
    return int(raw)


SMALL_BODY = 64 * 1024
# every byte but "[" and "{": deleting them leaves the openers, counted in one C pass (two counts cost twice)
_NOT_OPENING = bytes(b for b in range(256) if b not in b"[{")


def too_deep(limit: int) -> BadRequest:
    return BadRequest(f"request body nests JSON arrays and objects deeper than {limit} levels (server.max_json_depth)")


HEADER_CHARS = 400  # the longest free-text header value sent


def header_value(text: str, limit: int = HEADER_CHARS) -> str:
    """Make free text safe for an HTTP header (ASCII, bounded)."""
    if len(text) <= limit and text.isascii() and text.isprintable():  # the usual case: no regex pass
        return text
    text = _UNSAFE_HEADER.sub("?", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def openai_error_body(err: TiergateError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": err.openai_type, "param": err.param, "code": err.code}}


def anthropic_error_body(err: TiergateError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": err.anthropic_type, "message": err.message}}


def ollama_error_body(err: TiergateError) -> dict[str, Any]:
    """Ollama's envelope: the message alone (docs/api/errors.mdx)."""
    return {"error": err.message}


# HTTP status -> google.rpc.Code name, as Google's APIs pair them in their error envelope
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def google_error_body(err: TiergateError) -> dict[str, Any]:
    """Google's envelope (``{"error": {"code", "message", "status"}}``), which google-genai raises as APIError."""
    status = GOOGLE_STATUS.get(err.status) or ("INTERNAL" if err.status >= 500 else "FAILED_PRECONDITION")
    return {"error": {"code": err.status, "message": err.message, "status": status}}


Envelope = Callable[[TiergateError], dict[str, Any]]


def error_response(
    err: TiergateError, *, anthropic: bool = False, request_id: str, envelope: Envelope | None = None
) -> web.Response:
    """``err`` in a client's envelope: ``envelope`` when given, else Anthropic's or OpenAI's."""
    envelope = envelope or (anthropic_error_body if anthropic else openai_error_body)
    body = envelope(err)
    headers = {"X-Request-ID": request_id}
    if err.retry_after is not None:
        headers["Retry-After"] = str(err.retry_after)
    if err.should_retry is not None:  # the openai and anthropic SDKs obey it before their own retry rules
        headers["x-should-retry"] = "true" if err.should_retry else "false"
    try:
        data = orjson.dumps(body)
    except TypeError:  # a message carrying text that is not UTF-8 (a path's bytes): rendered escaped, never a 500
        err.message = err.message.encode("utf-8", "backslashreplace").decode("utf-8")
        data = orjson.dumps(envelope(err))
    return web.Response(body=data, status=err.status, content_type=JSON, headers=headers)


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
