"""Deployments, aliases, tiers and prices, resolved once from config (``tiergate.config.catalog``).

The catalog is immutable: routing reads it without locks, and a config
reload builds a new one.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from tiergate.core.capabilities import CHAT_DEFAULT
from tiergate.core.limits import LimitCounter
from tiergate.core.money import cost_usd
from tiergate.core.prices import PriceTier, Rates, tier_rates, token_cost
from tiergate.core.types import Usage

UNPRICED = "unpriced"  # Deployment.price_source of a cloud deployment nothing could price: it costs 0


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """How much and how long an upstream may send: every read of an answer is bounded (issue 13).

    A faulty or hostile upstream must cost one attempt, not the gateway's memory or a client's wait.
    """

    stream_timeout_s: float = 600.0  # a whole stream, from the request to its last event
    stream_idle_timeout_s: float | None = None  # between a stream's events; None: the attempt timeout
    max_event_bytes: int = 1024 * 1024  # one SSE event (bytes without a blank line are cut here)
    max_response_bytes: int = 64 * 1024 * 1024  # a non-streamed reply's body


DEFAULT_READ_LIMITS = ReadLimits()


@dataclass(frozen=True, slots=True)
class AwsSigning:
    """What SigV4 signs a Bedrock call with (adapters/bedrock_converse.py); never in a repr."""

    region: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


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
    limits: ReadLimits = DEFAULT_READ_LIMITS
    capabilities: frozenset[str] = CHAT_DEFAULT  # what it can do (core.capabilities)
    cache_read_per_mtok: float | None = None  # None: the input price
    cache_write_per_mtok: float | None = None  # None: the input price
    price_tiers: tuple[PriceTier, ...] = ()  # dearer rates for long prompts, ascending
    price_source: str = "config"  # config, local, genai-prices:<provider>/<model>, or UNPRICED
    rate: tuple[LimitCounter, ...] = ()  # its own rpm/tpm counters (core.limits.deployment_counters)
    api_version: str | None = None  # Azure OpenAI's ?api-version=
    aws: AwsSigning | None = field(default=None, repr=False)  # Bedrock's SigV4 credentials
    reasoning_floor: int | None = None  # a client's output cap below it is raised to it (a reasoning model)

    def output_tokens(self, asked: int | None) -> int | None:
        """The output cap this deployment is sent for a client's ``asked``: raised to the reasoning floor
        (a thinking model spends its allowance before it answers), then held to max_output_tokens."""
        if asked is None:
            return None
        if self.reasoning_floor and asked < self.reasoning_floor:
            asked = self.reasoning_floor
        return min(asked, self.max_output_tokens) if self.max_output_tokens else asked

    def starved_allowance(self, asked: int | None, factor: float) -> int | None:
        """The larger output cap a reasoning-starved answer is retried with: ``factor`` times what was sent,
        held to max_output_tokens; None when there is no floor, no cap was sent, or it cannot grow."""
        sent = self.output_tokens(asked) if self.reasoning_floor else None
        if sent is None or factor <= 1:
            return None
        more = int(sent * factor)
        more = min(more, self.max_output_tokens) if self.max_output_tokens else more
        return more if more > sent else None

    def cost(
        self, prompt_tokens: int, completion_tokens: int, cache_read_tokens: int = 0, cache_write_tokens: int = 0
    ) -> float:
        """USD for one call: per request, so the common case (no cache, no tier) is one expression."""
        if self.price_tiers and prompt_tokens > self.price_tiers[0].above:
            rates = tier_rates(self.price_tiers, prompt_tokens) or self.rates
            return token_cost(rates, prompt_tokens, completion_tokens, cache_read_tokens, cache_write_tokens)
        if not (cache_read_tokens or cache_write_tokens):
            return cost_usd(self.input_per_mtok, self.output_per_mtok, prompt_tokens, completion_tokens)
        return token_cost(self.rates, prompt_tokens, completion_tokens, cache_read_tokens, cache_write_tokens)

    def usage_cost(self, usage: Usage) -> float:
        """What this deployment bills for ``usage``, cache reads and writes at their own prices."""
        return self.cost(
            usage.prompt_tokens, usage.completion_tokens, usage.cache_read_tokens, usage.cache_write_tokens
        )

    @property
    def rates(self) -> Rates:
        """The base rates (below any price tier), cache prices resolved."""
        cr, cw = self.cache_read_per_mtok, self.cache_write_per_mtok
        return Rates(
            self.input_per_mtok,
            self.output_per_mtok,
            self.input_per_mtok if cr is None else cr,
            self.input_per_mtok if cw is None else cw,
        )

    @property
    def priced(self) -> bool:
        """False for a cloud deployment whose price nobody knows: its calls are recorded at $0."""
        return self.price_source != UNPRICED


@dataclass(frozen=True, slots=True)
class WildcardRoute:
    """A deployment name with one ``*`` (LiteLLM's ``openai/*``): any client model name it matches is served by
    a deployment built for that name, the matched part written into the upstream model (``make``)."""

    pattern: str  # the config's name, e.g. openai/*
    make: Callable[[str, str], Deployment]  # (client model name, the part the * matched) -> its deployment

    def match(self, name: str) -> str | None:
        head, _, tail = self.pattern.partition("*")
        if len(name) > len(head) + len(tail) and name.startswith(head) and name.endswith(tail):
            return name[len(head) : len(name) - len(tail)]
        return None


WILDCARD_CHARS = re.compile(r"^[\w.:/@+-]{1,200}$")  # a model name a wildcard passes upstream


class WildcardDeployments(Mapping[str, Deployment]):
    """The deployments of a catalog with wildcard routes: the configured ones, plus one per client model name a
    route matches, built on first use and kept (bounded: names come from clients).

    Iterating lists only the configured deployments, so ``auto``, escalation and /v1/models never pick a
    name only a client made up; ``in`` and ``[]`` also answer for every name a route matches. A catalog
    without wildcard routes keeps its plain mapping, so routing costs the same as before.
    """

    MAX_MADE = 1024

    def __init__(self, fixed: Mapping[str, Deployment], routes: tuple[WildcardRoute, ...]) -> None:
        self._fixed = fixed
        self._routes = routes
        self._made: dict[str, Deployment] = {}

    def _find(self, name: str) -> Deployment | None:
        d = self._fixed.get(name) or self._made.get(name)
        if d is not None or not WILDCARD_CHARS.match(name):
            return d
        for route in self._routes:
            part = route.match(name)
            if part is not None:
                if len(self._made) >= self.MAX_MADE:
                    self._made.clear()
                d = self._made[name] = route.make(name, part)
                return d
        return None

    def __getitem__(self, name: str) -> Deployment:
        d = self._find(name)
        if d is None:
            raise KeyError(name)
        return d

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._fixed)

    def __len__(self) -> int:
        return len(self._fixed)


@dataclass(frozen=True, slots=True)
class Catalog:
    deployments: Mapping[str, Deployment]
    aliases: Mapping[str, tuple[str, ...]]
    tasks: Mapping[str, int]
    fallbacks: Mapping[str, tuple[str, ...]]
    escalate: bool = True
    embeddings_local_only: bool = False
    model_map: tuple[tuple[str, str], ...] = ()
    balanced: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # alias -> members' shares of its load
    wildcards: tuple[str, ...] = ()  # wildcard route names (deployments answer for what they match)

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

    def unpriced(self) -> list[str]:
        """Cloud deployments with no price line and no price in the database (check-config and /health)."""
        return sorted(n for n, d in self.deployments.items() if not d.priced)

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
