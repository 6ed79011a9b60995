"""The HTTP edge around every handler: a request id, and every error in the client's own envelope.

This is a handler wrapper, not an aiohttp middleware: with any middleware
installed aiohttp looks up the built chain per request (a cache lookup that
hashes the app) and runs its own current-app middleware, a few microseconds
of every request (docs/decisions/0003-hot-path.md). Requests no route matches reach a
catch-all route wrapped the same way, so a 404 or 405 is rendered in the
client's envelope too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web

from tiergate.api.common import (
    Envelope,
    anthropic_error_body,
    error_response,
    google_error_body,
    header_value,
    ollama_error_body,
    openai_error_body,
)
from tiergate.api.inbound import header_problem, plain_headers
from tiergate.api.plain_reply import Reply
from tiergate.core.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    TiergateError,
    UpstreamRejected,
)
from tiergate.core.ids import IdSource
from tiergate.core.request_scope import REQUEST_ID

log = logging.getLogger("tiergate.app")

Handler = Callable[[web.Request], Awaitable[Reply]]
# what aiohttp's router is told a handler is: it awaits prepare() and write_eof() of whatever a handler
# returns, and a PlainReply has both (and is written in one piece by tiergate.client_protocol)
AiohttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_IDS: web.AppKey[IdSource] = web.AppKey("request_ids", IdSource)


GOOGLE_PREFIXES = ("/v1beta/", "/v1alpha/")


def envelope_for(request: web.Request) -> Envelope:
    """The error envelope of the client the path (and, on /v1/models, the key header) says is calling."""
    path = request.path
    if path.startswith("/v1/messages"):
        return anthropic_error_body
    if path.startswith("/api/"):
        return ollama_error_body
    if (
        path.startswith(GOOGLE_PREFIXES)
        or path.startswith("/v1/models")
        and (":" in path or "x-goog-api-key" in request.headers or "key" in request.query)
    ):
        return google_error_body
    return openai_error_body


def guarded(handler: Handler, ids: IdSource) -> Handler:
    """``handler`` with a request id (X-Request-ID, or else one from ``ids``) and errors mapped to 4xx/5xx
    bodies."""

    @functools.wraps(handler)
    async def at_the_edge(request: web.Request) -> Reply:
        request["started"] = time.perf_counter()
        problem = None if plain_headers(request.raw_headers) else header_problem(request.headers.items())
        rid = (None if problem else request.headers.get("X-Request-ID")) or ids.new()
        request["request_id"] = rid
        # log lines and upstream calls made for this request carry it; aiohttp runs each request in a task
        # of its own (a copy of the context), so it needs no reset: the next request never sees it
        REQUEST_ID.set(rid)
        try:
            if problem is not None:  # before any handler reads a header into an identity or a record
                raise BadRequest(problem)
            return await handler(request)
        except TiergateError as err:
            if isinstance(err, UpstreamRejected) and err.body:  # the vendor's own bytes, for its own clients
                return web.Response(
                    body=err.body, status=err.status, content_type="application/json", headers={"X-Request-ID": rid}
                )
            resp = error_response(err, envelope=envelope_for(request), request_id=rid)
            if not request.content.is_eof():  # refused before its body was all read (413, 401, 415)
                resp.force_close()  # aiohttp discards the rest for at most its lingering time, then closes
            return resp
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:  # a bug must not leak a stack trace to the client
            log.exception("unhandled error on %s %s (request %s)", request.method, request.path, rid)
            internal = TiergateError(f"internal error; request id {rid}")
            return error_response(internal, envelope=envelope_for(request), request_id=rid)

    return at_the_edge


def _for_aiohttp(handler: Handler) -> AiohttpHandler:
    return cast(AiohttpHandler, handler)


# (method, path) -> its route, for every route whose path has no variable part: the client protocol
# (tiergate.client_protocol) dispatches those without aiohttp's router walk
STATIC_ROUTES: web.AppKey[dict[tuple[str, str], web.AbstractRoute]] = web.AppKey("static_routes", dict)


class EdgeRoutes:
    """Registers guarded handlers and remembers each path's methods for the catch-all's 404 and 405."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._methods: dict[str, set[str]] = {}
        self._static = app[STATIC_ROUTES] = {}
        self._ids = app[REQUEST_IDS]  # create_app sets it before any route is added

    def add(self, method: str, path: str, handler: Handler) -> None:
        if method == "GET":
            route = self._app.router.add_get(path, _for_aiohttp(guarded(handler, self._ids)))  # and HEAD too
            self._methods.setdefault(path, set()).update(("GET", "HEAD"))
        else:
            route = self._app.router.add_route(method, path, _for_aiohttp(guarded(handler, self._ids)))
            self._methods.setdefault(path, set()).add(method)
        if "{" not in path:
            self._static.setdefault((method, path), route)  # the first registered wins, as in aiohttp's walk

    def get(self, path: str, handler: Handler) -> None:
        self.add("GET", path, handler)

    def post(self, path: str, handler: Handler) -> None:
        self.add("POST", path, handler)

    def finish(self) -> None:
        """Last: the route every other request falls through to."""
        methods = {path: frozenset(m) for path, m in self._methods.items()}  # a "*" path never falls through

        async def not_routed(request: web.Request) -> web.StreamResponse:
            allowed = methods.get(request.path)
            route = header_value(f"{request.method} {request.path}", 200)  # printable ASCII: any other byte as ?
            if allowed is None:
                raise NotFound(f"no route {route}")
            allow = ", ".join(sorted(allowed))
            err = MethodNotAllowed(f"{route}: method not allowed; allowed: {allow}")
            resp = error_response(err, envelope=envelope_for(request), request_id=request["request_id"])
            resp.headers["Allow"] = allow
            return resp

        # [\s\S], not ".": a path with an encoded line break (%0A) matched no route, and aiohttp answered it
        # in plain text
        self._app.router.add_route("*", r"/{tail:[\s\S]*}", _for_aiohttp(guarded(not_routed, self._ids)))
