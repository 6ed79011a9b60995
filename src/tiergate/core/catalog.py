"""Deployments, aliases, tiers and prices, resolved once from config.

The catalog is immutable: routing reads it without locks, and a config
reload builds a new one.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from tiergate.config.schema import DeploymentConfig, TiergateConfig
from tiergate.core.money import cost_usd


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    provider: str
    api: str
    base_url: str
    model: str
    tier: int
    local: bool
    context_window: int
    max_output_tokens: int | None
    input_per_mtok: float
    output_per_mtok: float
    api_key: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    local_model: str | None = None  # served by tiergate's own local model manager

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return cost_usd(self.input_per_mtok, self.output_per_mtok, prompt_tokens, completion_tokens)


@dataclass(frozen=True, slots=True)
class Catalog:
    deployments: Mapping[str, Deployment]
    aliases: Mapping[str, tuple[str, ...]]
    tasks: Mapping[str, int]
    fallbacks: Mapping[str, tuple[str, ...]]
    escalate: bool = True
    model_map: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_config(cls, cfg: TiergateConfig, *, local_urls: Mapping[str, str] | None = None) -> Catalog:
        """``local_urls``: where each managed local model is served (from the model manager)."""
        deployments: dict[str, Deployment] = {}
        for d in cfg.deployments:
            if d.local_model is not None:
                deployments[d.name] = cls._managed(cfg, d, (local_urls or {}).get(d.local_model))
                continue
            assert d.provider is not None and d.model is not None
            p = cfg.providers[d.provider]
            deployments[d.name] = Deployment(
                name=d.name,
                provider=d.provider,
                api=p.api,
                base_url=p.base_url,
                model=d.model,
                tier=d.tier,
                local=p.local,
                context_window=d.context_window,
                max_output_tokens=d.max_output_tokens,
                input_per_mtok=d.price.input_per_mtok,
                output_per_mtok=d.price.output_per_mtok,
                api_key=p.api_key.get_secret_value() if p.api_key else None,
                headers=MappingProxyType(dict(p.headers)),
                timeout_s=p.timeout_s,
            )
        return cls(
            deployments=MappingProxyType(deployments),
            aliases=MappingProxyType({k: tuple(v) for k, v in cfg.aliases.items()}),
            tasks=MappingProxyType(dict(cfg.tasks)),
            fallbacks=MappingProxyType({k: tuple(v) for k, v in cfg.routing.fallbacks.items()}),
            escalate=cfg.routing.escalate,
            model_map=tuple(cfg.model_map.items()),
        )

    @staticmethod
    def _managed(cfg: TiergateConfig, d: DeploymentConfig, url: str | None) -> Deployment:
        assert cfg.local_models is not None and d.local_model is not None
        m = next(m for m in cfg.local_models.models if m.name == d.local_model)
        return Deployment(
            name=d.name, provider="local-models", api="openai-chat", base_url=url or "http://127.0.0.1:0/v1",
            model=d.model or m.name, tier=d.tier, local=True,
            context_window=min(d.context_window, m.context) if "context_window" in d.model_fields_set else m.context,
            max_output_tokens=d.max_output_tokens, input_per_mtok=d.price.input_per_mtok,
            output_per_mtok=d.price.output_per_mtok, local_model=m.name,
        )

    def expand(self, target: str) -> tuple[str, ...]:
        """A deployment name or alias as the deployment names it stands for."""
        if target in self.deployments:
            return (target,)
        return self.aliases.get(target, ())

    def map_model(self, name: str) -> str | None:
        """The target a ``model_map`` glob gives an otherwise unknown model name (e.g. claude-* -> local/fast)."""
        for pattern, target in self.model_map:
            if fnmatch.fnmatchcase(name, pattern):
                return target
        return None

    def tiers(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for d in sorted(self.deployments.values(), key=lambda d: (d.tier, d.name)):
            out.setdefault(d.tier, []).append(d.name)
        return out

    def model_names(self) -> list[str]:
        """What GET /v1/models lists: auto, task routes, aliases, then deployments."""
        names = ["auto", *(f"task/{t}" for t in self.tasks), *self.aliases, *self.deployments]
        return list(dict.fromkeys(names))
