"""Candidate pass-through proxies for the HTTP stack choice.

Every candidate does the same work per request, the hot path of a
same-protocol pass-through in tiergate:

1. read the whole request body,
2. parse it as JSON,
3. rewrite the ``model`` field,
4. serialize it again,
5. POST it to the upstream (same path) over a pooled keep-alive client,
6. return the upstream body with its status and content-type; when the
   request asked for ``"stream": true`` the upstream body is relayed chunk by
   chunk as it arrives (no buffering).

Configuration comes from the environment so that servers started by a CLI
(granian) see the same settings:

  STACKBENCH_UPSTREAM  base URL of the upstream, e.g. http://127.0.0.1:18080
  STACKBENCH_JSON      orjson | stdlib
"""

from __future__ import annotations

import json
import os

import orjson

UPSTREAM_MODEL = "qwen2.5-7b-instruct-q4_k_m"
POOL_SIZE = 100


def json_codec(kind: str):
    if kind == "orjson":
        return orjson.loads, orjson.dumps
    if kind == "stdlib":

        def dumps(obj, _dumps=json.dumps):
            return _dumps(obj, separators=(",", ":")).encode()

        return json.loads, dumps
    raise ValueError(f"STACKBENCH_JSON must be orjson or stdlib, not {kind!r}")


def rewrite(body: bytes, loads, dumps) -> tuple[bytes, bool]:
    """Parse, rewrite ``model``, serialize. Returns (payload, wants_stream)."""
    obj = loads(body)
    obj["model"] = UPSTREAM_MODEL
    return dumps(obj), obj.get("stream") is True


def _settings():
    upstream = os.environ.get("STACKBENCH_UPSTREAM", "http://127.0.0.1:18080").rstrip("/")
    loads, dumps = json_codec(os.environ.get("STACKBENCH_JSON", "orjson"))
    return upstream, loads, dumps


JSON_HEADERS = {"Content-Type": "application/json"}


# --------------------------------------------------------------------------
# aiohttp server + aiohttp client (candidates 1, 2, 6)
# --------------------------------------------------------------------------


def aiohttp_app():
    import aiohttp
    from aiohttp import web

    upstream, loads, dumps = _settings()
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def client_ctx(app):
        connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=60)
        app[session_key] = aiohttp.ClientSession(connector=connector)
        yield
        await app[session_key].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        payload, stream = rewrite(await request.read(), loads, dumps)
        session = request.app[session_key]
        async with session.post(upstream + request.path, data=payload, headers=JSON_HEADERS) as up:
            ctype = up.headers.get("Content-Type", "application/json")
            if not stream:
                return web.Response(body=await up.read(), status=up.status, headers={"Content-Type": ctype})
            resp = web.StreamResponse(status=up.status, headers={"Content-Type": ctype})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app = web.Application()
    app.cleanup_ctx.append(client_ctx)
    app.router.add_post("/{tail:.*}", proxy)
    return app


# --------------------------------------------------------------------------
# Starlette (on uvicorn) + httpx or aiohttp client (candidates 3, 4)
# --------------------------------------------------------------------------


def starlette_app(client: str):
    import contextlib

    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    upstream, loads, dumps = _settings()
    state: dict = {}

    if client == "httpx":
        import httpx

        @contextlib.asynccontextmanager
        async def lifespan(app):
            limits = httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE, keepalive_expiry=60)
            async with httpx.AsyncClient(limits=limits, timeout=30) as c:
                state["client"] = c
                yield

        async def proxy(request: Request):
            payload, stream = rewrite(await request.body(), loads, dumps)
            c = state["client"]
            req = c.build_request("POST", upstream + request.url.path, content=payload, headers=JSON_HEADERS)
            up = await c.send(req, stream=True)
            ctype = up.headers.get("content-type", "application/json")
            if not stream:
                try:
                    body = await up.aread()
                finally:
                    await up.aclose()
                return Response(body, status_code=up.status_code, headers={"content-type": ctype})
            return StreamingResponse(
                up.aiter_raw(),
                status_code=up.status_code,
                headers={"content-type": ctype},
                background=BackgroundTask(up.aclose),
            )

    elif client == "aiohttp":
        import aiohttp

        @contextlib.asynccontextmanager
        async def lifespan(app):
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=60)
            async with aiohttp.ClientSession(connector=connector) as s:
                state["client"] = s
                yield

        async def proxy(request: Request):
            payload, stream = rewrite(await request.body(), loads, dumps)
            up = await state["client"].post(upstream + request.url.path, data=payload, headers=JSON_HEADERS)
            ctype = up.headers.get("Content-Type", "application/json")
            if not stream:
                try:
                    body = await up.read()
                finally:
                    up.release()
                return Response(body, status_code=up.status, headers={"content-type": ctype})

            async def relay():
                try:
                    async for chunk in up.content.iter_any():
                        yield chunk
                finally:
                    up.release()

            return StreamingResponse(relay(), status_code=up.status, headers={"content-type": ctype})
    else:
        raise ValueError(client)

    return Starlette(routes=[Route("/{path:path}", proxy, methods=["POST"])], lifespan=lifespan)


def starlette_aiohttp_app():
    """Factory for servers started from a CLI (granian --factory)."""
    return starlette_app("aiohttp")


# --------------------------------------------------------------------------
# Plain ASGI callable + aiohttp client (candidate 5, served by granian)
# --------------------------------------------------------------------------


def plain_asgi_app():
    import aiohttp

    upstream, loads, dumps = _settings()
    state: dict = {}

    async def read_body(receive) -> bytes:
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                return b"".join(chunks)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=60)
                    state["client"] = aiohttp.ClientSession(connector=connector)
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await state["client"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http" or scope["method"] != "POST":
            await send({"type": "http.response.start", "status": 405, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if "client" not in state:  # server without lifespan support
            state["client"] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=60)
            )
        payload, stream = rewrite(await read_body(receive), loads, dumps)
        async with state["client"].post(upstream + scope["path"], data=payload, headers=JSON_HEADERS) as up:
            ctype = up.headers.get("Content-Type", "application/json").encode()
            await send({"type": "http.response.start", "status": up.status, "headers": [(b"content-type", ctype)]})
            if not stream:
                await send({"type": "http.response.body", "body": await up.read()})
                return
            async for chunk in up.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app
