"""What a config that validates can still get wrong: the checks behind ``tiergate check-config``.

The schema refuses what cannot be read (types, unknown fields, dangling
names); these checks find what reads fine but cannot work: a task whose
minimum tier no deployment reaches answers 503, a missing model file never
loads, a gateway without keys is open to anyone who can reach it. Pure: a
config in, problems out; the one fact from outside, whether a file exists,
is passed in, so ``check-config``, zero-config and ``/health`` agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiergate.config.schema import DeploymentConfig, TiergateConfig
from tiergate.core.capabilities import capabilities_of, named_for_embeddings


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: where (``deployments[0].provider``; empty for the whole file), what, how bad."""

    path: str
    message: str
    warning: bool = False  # listed, but check-config still exits 0 unless --strict

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def field_path(loc: Iterable[Any]) -> str:
    """``("deployments", 0, "provider")`` -> ``deployments[0].provider``: the one path style of every message."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def unreachable_tasks(tasks: Mapping[str, int], tiers: Iterable[int]) -> dict[str, int]:
    """Tasks whose minimum tier is above every deployment's tier: routing them can only fail."""
    top = max(tiers, default=None)
    return {t: tier for t, tier in tasks.items() if top is None or tier > top}


def missing_model_files(cfg: TiergateConfig, exists: Callable[[Path], bool]) -> dict[str, Path]:
    """Local model name -> its GGUF path, for every model tiergate should start whose file is not there."""
    if cfg.local_models is None:
        return {}
    return {m.name: m.gguf for m in cfg.local_models.models if m.gguf is not None and not exists(m.gguf)}


def file_problems(raw: Mapping[str, Any]) -> list[Problem]:
    """What is wrong with the file as a whole, before any field is read."""
    if not raw:
        return [Problem("", "the config is empty: no providers or deployments, so every request would fail")]
    return []


def semantic_problems(cfg: TiergateConfig, *, exists: Callable[[Path], bool]) -> list[Problem]:
    """Every problem of a valid config, errors first in file order, then warnings."""
    found = [*_routing(cfg), *_embedding_mixups(cfg), *_model_files(cfg, exists), *_auth(cfg)]
    return [p for p in found if not p.warning] + [p for p in found if p.warning]


def _routing(cfg: TiergateConfig) -> list[Problem]:
    if not cfg.deployments:
        return [Problem("deployments", "none configured: every request would get 503")]
    tiers = [d.tier for d in cfg.deployments]
    top = max(tiers)
    strongest = ", ".join(d.name for d in cfg.deployments if d.tier == top)
    return [
        Problem(
            f"tasks.{task}",
            f"needs tier>={tier}, but the highest deployment tier is {top} ({strongest}): "
            f"task/{task} and X-Tiergate-Task: {task} would get 503",
        )
        for task, tier in unreachable_tasks(cfg.tasks, tiers).items()
    ]


def deployment_capabilities(d: DeploymentConfig) -> frozenset[str]:
    """What a deployment row can do, as the catalog will decide it (declared, else the model's family)."""
    declared = frozenset(d.capabilities) if d.capabilities is not None else None
    return capabilities_of(d.model or d.local_model or d.name, declared=declared)


def _embedding_mixups(cfg: TiergateConfig) -> list[Problem]:
    """Names that send embeddings to chat-only deployments or chat to embedding-only ones.

    The policy skips such members as "lacks embeddings" / "lacks chat", so the
    request does not go wrong, but the name cannot do what it was written for,
    or its members are no failover for each other.
    """
    caps = {d.name: deployment_capabilities(d) for d in cfg.deployments if "*" not in d.name}

    def members(name: str) -> list[str]:
        return [m for m in cfg.aliases.get(name, [name]) if m in caps]

    def only(names: list[str], cap: str, other: str) -> list[str]:
        return [n for n in names if cap in caps[n] and other not in caps[n]]

    out = []
    for alias in cfg.aliases:
        ms = members(alias)
        embed_only, chat_only = only(ms, "embeddings", "chat"), only(ms, "chat", "embeddings")
        if named_for_embeddings(alias) and ms and not any("embeddings" in caps[m] for m in ms):
            out.append(
                Problem(
                    f"aliases.{alias}",
                    f"is named for embeddings, but none of its members can embed ({', '.join(ms)}: "
                    f"chat only): embeddings with model={alias} would get 400 model_not_capable; point it at an "
                    "embedding deployment or declare capabilities: [embeddings] on one that embeds",
                )
            )
        elif embed_only and chat_only:
            kind = "model group" if alias in cfg.routing.balance else "alias"
            out.append(
                Problem(
                    f"aliases.{alias}",
                    f"mixes embedding-only deployments ({', '.join(embed_only)}) and chat-only ones "
                    f"({', '.join(chat_only)}): embeddings for this {kind} never reach {', '.join(chat_only)} and "
                    f"chat never reaches {', '.join(embed_only)}, so they are no failover for each other; "
                    "split it into an embeddings alias and a chat alias",
                    warning=True,
                )
            )
    for src, target in cfg.model_map.items():
        ms = members(target)
        if ms and not any("chat" in caps[m] for m in ms):
            out.append(
                Problem(
                    f"model_map.{src}",
                    f"maps to {target}, which only embeds ({', '.join(ms)}): chat requests for {src} would get "
                    "400 model_not_capable",
                )
            )
    for src, targets in cfg.routing.fallbacks.items():
        src_ms = members(src)
        for t in targets:
            for cap, other in (("embeddings", "chat"), ("chat", "embeddings")):
                if src_ms and only(src_ms, cap, other) == src_ms and (t_ms := members(t)):
                    if only(t_ms, other, cap) == t_ms:
                        out.append(
                            Problem(
                                f"routing.fallbacks.{src}",
                                f"{src} only serves {cap}, but its fallback {t} only serves {other}: "
                                "the fallback can never be used",
                                warning=True,
                            )
                        )
    return out


def _model_files(cfg: TiergateConfig, exists: Callable[[Path], bool]) -> list[Problem]:
    missing = missing_model_files(cfg, exists)
    out = []
    for i, m in enumerate(cfg.local_models.models if cfg.local_models else ()):
        path = missing.get(m.name)
        if path is None:
            continue
        users = [d.name for d in cfg.deployments if d.local_model == m.name]
        where = "" if path.is_absolute() else " (a relative path is read from the directory serve runs in)"
        served = f"; {', '.join(users)} cannot be served" if users else ""
        out.append(Problem(f"local_models.models[{i}].gguf", f"file not found: {path}{where}{served}"))
    return out


def _auth(cfg: TiergateConfig) -> list[Problem]:
    listen = f"{cfg.server.host}:{cfg.server.port}"
    if not cfg.auth.required:
        return [
            Problem(
                "auth.required",
                f"false: anyone who can reach {listen} may call the gateway and spend its provider keys",
                warning=True,
            )
        ]
    if cfg.auth.master_key is None:
        return [
            Problem(
                "auth.master_key",
                "not set: serve starts only if the ledger already holds virtual keys (tiergate keys create); "
                "set it to env:TIERGATE_MASTER_KEY",
                warning=True,
            )
        ]
    return []
