"""Deployments, aliases, tiers and prices, resolved once from config (``tiergate.config.catalog``).

The catalog is immutable: routing reads it without locks, and a config
reload builds a new one.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field

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
