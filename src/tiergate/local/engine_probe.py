"""What a local llama.cpp server says it can do, asked once at start (``GET /props``).

A model's family guesses its capabilities from its name; the engine knows:
llama.cpp's ``/props`` reports ``modalities.vision`` (true only when a
multimodal projector is loaded), so a ``gemma-3`` served without one is not
sent images and a renamed vision model is. Embeddings cannot be probed this
way: llama.cpp answers ``/props`` and ``/v1/models`` the same with and
without ``--embedding``, so they stay the config's or the family's word.

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


def probe_targets(cfg: TiergateConfig) -> dict[str, list[tuple[str, frozenset[str]]]]:
    """Server origin -> (deployment, family guess) for each local OpenAI-style deployment whose capabilities
    the config does not declare (a declared list is the user's word and is never probed over)."""
    out: dict[str, list[tuple[str, frozenset[str]]]] = {}
    for d in cfg.deployments:
        if d.capabilities is not None or d.provider is None or d.model is None or "*" in d.name:
            continue
        p = cfg.providers[d.provider]
        if not p.local or p.api != "openai-chat":
            continue
        origin = p.base_url.removesuffix("/v1")
        out.setdefault(origin, []).append((d.name, capabilities_of(d.model)))
    return out


async def _props(session: aiohttp.ClientSession, origin: str) -> Any:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            async with session.get(f"{origin}/props") as r:
                if r.status != 200:
                    return None
                body = bytearray()
                async for chunk in r.content.iter_any():
                    body += chunk
                    if len(body) > MAX_PROPS_BYTES:
                        return None
                return orjson.loads(body)
    except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError, OSError, ValueError):
        return None  # down, slow or not llama.cpp: the family's guess stands


async def probe_local_capabilities(cfg: TiergateConfig, session: aiohttp.ClientSession) -> Mapping[str, frozenset[str]]:
    """Deployment name -> capabilities its engine reported, for the deployments whose engine answered."""
    targets = probe_targets(cfg)
    if not targets:
        return {}
    answers = await asyncio.gather(*(_props(session, origin) for origin in targets))
    found: dict[str, frozenset[str]] = {}
    for (origin, deployments), props in zip(targets.items(), answers, strict=True):
        for name, guessed in deployments:
            caps = capabilities_from_props(props, guessed)
            if caps is None:
                continue
            found[name] = caps
            if caps != guessed:
                log.info("%s: capabilities %s as %s/props reports", name, ", ".join(sorted(caps)), origin)
    return found
