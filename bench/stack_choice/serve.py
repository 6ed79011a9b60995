"""Start one candidate proxy in the foreground: python serve.py NAME PORT.

NAME is a key of CANDIDATES. The upstream and the JSON library come from the
environment (see proxies.py); this file sets STACKBENCH_JSON per candidate.
One process, one worker, access logs off, for every candidate.
"""

from __future__ import annotations

import asyncio
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (label, server, client, json, loop)
CANDIDATES = {
    "aiohttp-orjson": ("aiohttp server + aiohttp client", "aiohttp", "aiohttp", "orjson", "asyncio"),
    "aiohttp-stdlib": ("aiohttp server + aiohttp client", "aiohttp", "aiohttp", "stdlib", "asyncio"),
    "starlette-httpx": ("Starlette/uvicorn + httpx", "uvicorn+starlette", "httpx", "orjson", "uvloop"),
    "starlette-aiohttp": ("Starlette/uvicorn + aiohttp client", "uvicorn+starlette", "aiohttp", "orjson", "uvloop"),
    "granian-asgi-aiohttp": ("plain ASGI/granian + aiohttp client", "granian (asgi)", "aiohttp", "orjson", "uvloop"),
    "aiohttp-uvloop-orjson": ("aiohttp server + aiohttp client", "aiohttp", "aiohttp", "orjson", "uvloop"),
    # not in the brief's list: tells whether granian's lead over aiohttp
    # survives once a real ASGI framework (routing, Request objects) is on it
    "starlette-granian-aiohttp": (
        "Starlette/granian + aiohttp client",
        "granian+starlette",
        "aiohttp",
        "orjson",
        "uvloop",
    ),
}


def _serve_aiohttp(port: int, loop: str) -> None:
    import proxies
    from aiohttp import web

    async def main():
        runner = web.AppRunner(proxies.aiohttp_app(), access_log=None, handle_signals=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        print(f"ready on {port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def _serve_uvicorn(port: int, client: str) -> None:
    import proxies
    import uvicorn

    uvicorn.run(
        proxies.starlette_app(client),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        backlog=1024,
    )


def _serve_granian(port: int, factory: str) -> None:
    granian = os.path.join(os.path.dirname(sys.executable), "granian")
    os.execv(
        granian,
        [
            granian,
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--runtime-threads",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "1",
            "--no-ws",
            "--log-level",
            "warning",
            "--backlog",
            "1024",
            "--working-dir",
            HERE,
            "--factory",
            factory,
        ],
    )


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    _label, server, client, json_lib, loop = CANDIDATES[name]
    os.environ["STACKBENCH_JSON"] = json_lib
    sys.path.insert(0, HERE)
    if server == "aiohttp":
        _serve_aiohttp(port, loop)
    elif server == "uvicorn+starlette":
        _serve_uvicorn(port, client)
    elif server == "granian (asgi)":
        _serve_granian(port, "proxies:plain_asgi_app")
    elif server == "granian+starlette":
        _serve_granian(port, "proxies:starlette_aiohttp_app")
    else:
        raise SystemExit(f"unknown server {server}")


if __name__ == "__main__":
    main()
