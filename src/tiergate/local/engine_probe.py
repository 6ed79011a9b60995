"""What a local engine says it can do, asked once at start: llama.cpp's ``GET /props``, Ollama's
``POST /api/show``.

A model's family guesses its capabilities from its name; the engine knows.
llama.cpp's ``/props`` reports ``modalities.vision`` (true only when a
multimodal projector is loaded), so a ``gemma-3`` served without one is not
sent images and a renamed vision model is. Embeddings cannot be probed that
way: llama.cpp answers ``/props`` and ``/v1/models`` the same with and
without ``--embedding``, so they stay the config's or the family's word.
Nor are tools: ``chat_template_caps.supports_tools`` is false for templates
that llama.cpp still serves tool calls through with its generic format.
Ollama's ``/api/show`` lists each model's capabilities (completion,
embedding, tools, vision, thinking), read from its files: it is the whole
answer for an Ollama model, embeddings included. Asked only where ``/props``
is not answered (a llama.cpp server is not asked twice).

Bounded: one GET per distinct server, all at once, each with a total
deadline and a cap on the body; a server that is down, slow, not llama.cpp
or answers nonsense keeps the family's guess. The answer is kept for the
life of the process (the catalog is built once from it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from tiergate.config.schema import TiergateConfig
from tiergate.core.capabilities import capabilities_of

log = logging.getLogger("tiergate.local.probe")

PROBE_TIMEOUT_S = 2.0
MAX_PROPS_BYTES = 1 << 20  # /props carries the chat template: kilobytes, rarely more


def capabilities_from_props(props: Any, guessed: frozenset[str]) -> frozenset[str] | None:
    """``guessed`` corrected by a ``/props`` body; None when the body says nothing usable."""
    if not isinstance(props, dict):
        return None
    modalities = props.get("modalities")
    if not isinstance(modalities, dict) or not isinstance(modalities.get("vision"), bool):
        return None
    if "chat" not in guessed:  # an embedding model: vision is a chat capability
        return guessed
    return guessed | {"vision"} if modalities["vision"] else guessed - {"vision"}


# Ollama's capability names (its types.go) -> tiergate's; any completion model follows a JSON schema (``format``)
_OLLAMA_CAPS = {
    "completion": ("chat", "json_schema"),
    "embedding": ("embeddings",),
    "tools": ("tools",),
    "vision": ("vision",),
    "thinking": ("reasoning",),
}


def capabilities_from_show(show: Any) -> frozenset[str] | None:
    """The capabilities an Ollama ``/api/show`` body lists; None when it lists none we know (an older Ollama
    without the field, or not Ollama at all)."""
    if not isinstance(show, dict) or not isinstance(show.get("capabilities"), list):
        return None
    caps = frozenset(c for name in show["capabilities"] if isinstance(name, str) for c in _OLLAMA_CAPS.get(name, ()))
    return caps or None


def probe_targets(cfg: TiergateConfig) -> dict[str, list[tuple[str, str, frozenset[str]]]]:
    """Server origin -> (deployment, model, family guess) for each local OpenAI-style or Ollama deployment whose
    capabilities the config does not declare (a declared list is the user's word and is never probed over)."""
    out: dict[str, list[tuple[str, str, frozenset[str]]]] = {}
    for d in cfg.deployments:
        if d.capabilities is not None or d.provider is None or d.model is None or "*" in d.name:
            continue
        p = cfg.providers[d.provider]
        if not p.local or p.api not in ("openai-chat", "ollama"):
            continue
        origin = p.base_url.rstrip("/").removesuffix("/v1")
        out.setdefault(origin, []).append((d.name, d.model, capabilities_of(d.model)))
    return out


async def _props(session: aiohttp.ClientSession, origin: str) -> Any:
    return await _ask(session, "GET", f"{origin}/props", None)


async def _show(session: aiohttp.ClientSession, origin: str, model: str) -> Any:
    return await _ask(session, "POST", f"{origin}/api/show", {"model": model})


async def _ask(session: aiohttp.ClientSession, method: str, url: str, body: Any) -> Any:
    """One bounded JSON exchange; None for anything but a 200 with a JSON body under the cap."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            async with session.request(method, url, data=None if body is None else orjson.dumps(body)) as r:
                if r.status != 200:
                    return None
                body = bytearray()
                async for chunk in r.content.iter_any():
                    body += chunk
                    if len(body) > MAX_PROPS_BYTES:
                        return None
                return orjson.loads(body)
    except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError, OSError, ValueError):
        return None  # down, slow or not that engine: the family's guess stands


async def probe_local_capabilities(cfg: TiergateConfig, session: aiohttp.ClientSession) -> Mapping[str, frozenset[str]]:
    """Deployment name -> capabilities its engine reported, for the deployments whose engine answered."""
    targets = probe_targets(cfg)
    if not targets:
        return {}
    found: dict[str, frozenset[str]] = {}
    await asyncio.gather(
        *(_probe_origin(session, origin, deployments, found) for origin, deployments in targets.items())
    )
    return found


async def _probe_origin(
    session: aiohttp.ClientSession,
    origin: str,
    deployments: list[tuple[str, str, frozenset[str]]],
    found: dict[str, frozenset[str]],
) -> None:
    props = await _props(session, origin)
    if props is not None:  # llama.cpp: one server, one model, one answer for all its deployments
        answers = [
            (name, guessed, capabilities_from_props(props, guessed), "/props") for name, _, guessed in deployments
        ]
    else:  # perhaps Ollama: one answer per model
        shows = await asyncio.gather(*(_show(session, origin, model) for _, model, _ in deployments))
        answers = [
            (name, guessed, capabilities_from_show(show), "/api/show")
            for (name, _, guessed), show in zip(deployments, shows, strict=True)
        ]
    for name, guessed, caps, where in answers:
        if caps is None:
            continue
        found[name] = caps
        if caps != guessed:
            log.info("%s: capabilities %s as %s%s reports", name, ", ".join(sorted(caps)), origin, where)
