"""Unit tests for tiergate.local.discovery (no model, no real runtimes needed)."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web

from tiergate.local.discovery import (
    DEFAULT_PORTS,
    DiscoveredRuntime,
    discover_local_runtimes,
    parse_models_body,
)

LLAMACPP_BODY = {
    "models": [{"name": "smollm2", "model": "smollm2", "type": "model", "tags": [""]}],
    "object": "list",
    "data": [{"id": "smollm2", "aliases": ["smollm2"], "object": "model", "owned_by": "llamacpp"}],
}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"object": "list", "data": [{"id": "gpt-x"}, {"id": "gpt-y"}]}, ("gpt-x", "gpt-y"), id="openai"),
        pytest.param(LLAMACPP_BODY, ("smollm2",), id="llamacpp-both-lists-deduped"),
        pytest.param({"models": [{"name": "a.gguf"}, {"model": "b"}]}, ("a.gguf", "b"), id="llamacpp-models-only"),
        pytest.param({"data": [{"id": "x"}], "models": [{"name": "y"}]}, ("x", "y"), id="union-data-first"),
        pytest.param({"object": "list", "data": []}, (), id="empty-data"),
        pytest.param({}, (), id="empty-object"),
        pytest.param({"data": None, "models": "nope"}, (), id="wrong-types"),
        pytest.param({"data": [{"id": ""}, {"id": 3}, {"name": "no-id"}, 7, None]}, (), id="junk-entries"),
        pytest.param({"data": ["plain-string"]}, ("plain-string",), id="string-entries"),
        pytest.param({"data": [{"id": "m"}, {"id": "m"}]}, ("m",), id="dupes"),
        pytest.param([{"id": "m"}], None, id="top-level-list"),
        pytest.param("<html>", None, id="string"),
        pytest.param(None, None, id="null"),
    ],
)
def test_parse_models_body(body, expected):
    assert parse_models_body(body) == expected


def test_discovered_runtime_is_frozen():
    rt = DiscoveredRuntime("ollama", "http://127.0.0.1:11434/v1", ("llama3",))
    with pytest.raises(AttributeError):
        rt.kind = "vllm"  # type: ignore[misc]
    assert hash(rt) == hash(DiscoveredRuntime("ollama", "http://127.0.0.1:11434/v1", ("llama3",)))


def test_default_ports():
    assert DEFAULT_PORTS == {"llamacpp": 8080, "ollama": 11434, "lmstudio": 1234, "vllm": 8000}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _serve(handler) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/v1/models", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


async def _discover_against_fakes(use_own_session: bool) -> list[DiscoveredRuntime]:
    async def llamacpp(_):
        return web.json_response(LLAMACPP_BODY)

    async def empty(_):
        return web.json_response({"object": "list", "data": []})

    async def not_found(_):
        return web.Response(status=404, text="nope")

    async def html(_):
        return web.Response(text="<html>hi</html>", content_type="text/html")

    release = asyncio.Event()

    async def slow(_):  # answers only after discovery has given up on it
        await asyncio.wait_for(release.wait(), 10)
        return web.json_response({"data": [{"id": "too-late"}]})

    runners = []
    ports = {}
    for kind, handler in [
        ("llamacpp", llamacpp),
        ("lmstudio", empty),
        ("vllm", not_found),
        ("weird", html),
        ("slow", slow),
    ]:
        runner, port = await _serve(handler)
        runners.append(runner)
        ports[kind] = port
    ports["ollama"] = _free_port()  # nothing listening
    try:
        if use_own_session:
            return await discover_local_runtimes(ports=ports, timeout_s=0.5)
        async with aiohttp.ClientSession() as session:
            result = await discover_local_runtimes(ports=ports, timeout_s=0.5, session=session)
            assert not session.closed  # a caller's session is left open
            return result
    finally:
        release.set()
        for runner in runners:
            await runner.cleanup()


@pytest.mark.parametrize("own_session", [True, False])
def test_discover_against_fake_servers(own_session):
    found = asyncio.run(_discover_against_fakes(own_session))  # no pytest-asyncio here
    kinds = [rt.kind for rt in found]
    assert kinds == ["llamacpp", "lmstudio"]
    llama, lmstudio = found
    assert llama.base_url.startswith("http://127.0.0.1:") and llama.base_url.endswith("/v1")
    assert llama.models == ("smollm2",)
    assert lmstudio.models == ()


def test_discover_nothing_listening_is_quiet_and_fast():
    ports = {"a": _free_port(), "b": _free_port()}
    found = asyncio.run(discover_local_runtimes(ports=ports, timeout_s=0.5))
    assert found == []
