"""Find OpenAI-compatible local inference runtimes listening on their standard ports."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp

DEFAULT_PORTS: dict[str, int] = {
    "llamacpp": 8080,
    "ollama": 11434,
    "lmstudio": 1234,
    "vllm": 8000,
}


@dataclass(frozen=True, slots=True)
class DiscoveredRuntime:
    kind: str
    base_url: str  # ends in /v1
    models: tuple[str, ...]


def parse_models_body(body: Any) -> tuple[str, ...] | None:
    """Model ids from a ``GET /v1/models`` JSON body, in order, without duplicates.

    Understands OpenAI's ``{"data": [{"id": ...}]}`` (Ollama, LM Studio, vLLM, llama.cpp)
    and llama.cpp's extra ``{"models": [{"name"|"model": ...}]}`` list. Returns ``None``
    when the body is not a JSON object at all (i.e. not a models listing), and ``()``
    for a listing with no usable entries.
    """
    if not isinstance(body, dict):
        return None
    ids: list[str] = []
    for key, fields in (("data", ("id",)), ("models", ("name", "model", "id"))):
        entries = body.get(key)
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if isinstance(entry, str):
                candidate: Any = entry
            elif isinstance(entry, dict):
                candidate = next((entry[f] for f in fields if isinstance(entry.get(f), str) and entry[f]), None)
            else:
                candidate = None
            if isinstance(candidate, str) and candidate and candidate not in ids:
                ids.append(candidate)
    return tuple(ids)


async def _probe(
    session: aiohttp.ClientSession, kind: str, host: str, port: int, timeout_s: float
) -> DiscoveredRuntime | None:
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    base_url = f"http://{netloc}/v1"
    try:
        async with session.get(f"{base_url}/models", timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            if r.status != 200:
                return None
            body = await r.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError, OSError):
        return None  # nothing listening (the normal case), or not an OpenAI-style server
    models = parse_models_body(body)
    return None if models is None else DiscoveredRuntime(kind, base_url, models)


async def discover_local_runtimes(
    *,
    host: str = "127.0.0.1",
    ports: dict[str, int] | None = None,
    timeout_s: float = 0.5,
    session: aiohttp.ClientSession | None = None,
) -> list[DiscoveredRuntime]:
    """Probe ``GET http://host:port/v1/models`` for every ``kind -> port`` concurrently.

    Returns the runtimes that answered, in the order of ``ports`` (default
    :data:`DEFAULT_PORTS`). Unreachable ports are skipped silently.
    """
    targets = dict(DEFAULT_PORTS if ports is None else ports)
    own = session is None
    if own:
        session = aiohttp.ClientSession()
    assert session is not None
    try:
        found = await asyncio.gather(*(_probe(session, kind, host, port, timeout_s) for kind, port in targets.items()))
    finally:
        if own:
            await session.close()
    return [rt for rt in found if rt is not None]
