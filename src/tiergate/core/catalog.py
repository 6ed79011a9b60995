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
        """What GET /v1/models lists: auto, task routes, aliases, then deployments.

        Only names that can be served: a task whose minimum tier no deployment reaches would only 503.
        """
        top = max((d.tier for d in self.deployments.values()), default=-1)
        tasks = (f"task/{t}" for t, tier in self.tasks.items() if tier <= top)
        return list(dict.fromkeys(["auto", *tasks, *self.aliases, *self.deployments]))

    def task_warning(self, model: str, task: str | None) -> str | None:
        """What to tell a client that named a task the config does not define (a typo must not pass silently)."""
        if model.startswith("task/"):
            task = model[len("task/") :].lower()
        if task is None or task in self.tasks:
            return None
        known = ", ".join(self.tasks) or "none"
        routed = "; routed as tier>=0" if model.strip() in ("", "auto") or model.startswith("task/") else ""
        return f"unknown task {task!r}; known: {known}{routed}"
