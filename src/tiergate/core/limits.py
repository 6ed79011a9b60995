"""Which rate and concurrency limits a request is under, and what a refusal says. Pure: no I/O, no clock.

A ``limits[]`` line applies when its scope's value (the key's name, or the
agent) matches ``match``; every matching value has counters of its own, so
``{scope: agent, match: "*", max_concurrent: 2}`` lets each agent run two
requests at once, unless the line is ``shared``: then every match counts in
one counter, a class (``{scope: agent, match: "sub-*", max_concurrent: 4,
shared: true}``: four subagents at once, whichever they are). A line becomes up to three counters, one per field set:

- ``rpm``: requests admitted in the last 60 s (an exact sliding window, so no
  burst of twice the limit around a minute boundary);
- ``tpm``: tokens in the last 60 s: the prompt estimate when admitted, the
  completion (and any prompt above the estimate) when the request ends;
- ``max_concurrent``: leases held by requests in flight. A lease expires
  ``LEASE_TTL_S`` after its last renewal, so slots held by a replica that
  died come back by themselves; live requests renew every ``RENEW_EVERY_S``.

The shared state (``SharedState.limit_*``) counts; this module decides what
to count and how to explain a refusal.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from tiergate.core.types import Identity, Usage

WINDOW_S = 60.0
LEASE_TTL_S = 30.0  # how long a dead replica's slot stays taken
RENEW_EVERY_S = 10.0  # live requests renew well before their lease runs out

Kind = Literal["rpm", "tpm", "max_concurrent"]  # named after the config field each one enforces


class LimitRule(Protocol):
    """A ``limits[]`` line as config gives it (``tiergate.config.guardrails.LimitRule``), read-only."""

    @property
    def id(self) -> str: ...
    @property
    def scope(self) -> Literal["key", "agent", "deployment"]: ...
    @property
    def match(self) -> str: ...
    @property
    def rpm(self) -> int | None: ...
    @property
    def tpm(self) -> int | None: ...
    @property
    def max_concurrent(self) -> int | None: ...
    @property
    def shared(self) -> bool: ...
    @property
    def queue_timeout(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class LimitCounter:
    """One shared counter a request is counted in: which kind, its key, its cap and the line it comes from."""

    kind: Kind
    key: str  # "<scope>:<match>|<value>", e.g. "agent:*|researcher"
    cap: int
    limit: LimitRule
    value: str


@dataclass(frozen=True, slots=True)
class DeploymentRate:
    """A deployment's own rpm/tpm (a provider quota, LiteLLM's per-entry rpm/tpm): a request is counted in it
    when routed there, and a deployment at it is skipped for the next candidate rather than refused."""

    match: str  # the deployment's name
    rpm: int | None
    tpm: int | None
    scope: Literal["deployment"] = "deployment"
    max_concurrent: None = None
    shared: bool = False
    queue_timeout: None = None

    @property
    def id(self) -> str:
        return f"deployment:{self.match}"


def deployment_counters(name: str, rpm: int | None, tpm: int | None) -> tuple[LimitCounter, ...]:
    """The counters of a deployment's own rate limit; none when it has none."""
    if rpm is None and tpm is None:
        return ()
    rule = DeploymentRate(name, rpm, tpm)
    key = f"{rule.id}|{name}"
    caps: tuple[tuple[Kind, int | None], ...] = (("rpm", rpm), ("tpm", tpm))
    return tuple(LimitCounter(kind, key, cap, rule, name) for kind, cap in caps if cap)


def scope_value(limit: LimitRule, ident: Identity) -> str | None:
    """The key name or agent the line counts; None for an agent line when the request names no agent."""
    if limit.scope == "deployment":
        return None  # counted where the request is routed, not by who sends it
    return ident.key_name if limit.scope == "key" else ident.agent


def matches(limit: LimitRule, value: str) -> bool:
    m = limit.match
    return m == "*" or m == value or fnmatch.fnmatchcase(value, m)


def counters_for(limits: Sequence[LimitRule], ident: Identity) -> tuple[LimitCounter, ...]:
    """Every counter this identity's request is counted in, in config order (rpm, tpm, max_concurrent per line)."""
    out: list[LimitCounter] = []
    for lim in limits:
        value = scope_value(lim, ident)
        if value is None or not matches(lim, value):
            continue
        key = f"{lim.id}|*" if lim.shared else f"{lim.id}|{value}"  # shared: one counter for the whole class
        if lim.rpm is not None:
            out.append(LimitCounter("rpm", key, lim.rpm, lim, value))
        if lim.tpm is not None:
            out.append(LimitCounter("tpm", key, lim.tpm, lim, value))
        if lim.max_concurrent is not None:
            out.append(LimitCounter("max_concurrent", key, lim.max_concurrent, lim, value))
    return tuple(out)


def refusal_message(c: LimitCounter, *, tokens: int = 0) -> str:
    """Why a request was refused, naming the key or agent, the limit and (for '*' or glob lines) the line."""
    if c.limit.shared:
        who, line = f"{c.limit.scope}s matching {c.limit.match} together", f" (limits line {c.limit.id})"
    else:
        who = f"{c.limit.scope} {c.value}"
        line = "" if c.limit.match == c.value else f" (limits line {c.limit.id})"
    if c.kind == "rpm":
        return f"rate limit: {who} allows {c.cap} requests per minute{line}"
    if c.kind == "tpm":
        return f"rate limit: {who} allows {c.cap} tokens per minute{line}; this request needs about {tokens}"
    return f"concurrency limit: {who} allows {c.cap} requests at once{line}"


def retry_after_s(c: LimitCounter, wait_s: float) -> int:
    """Whole seconds for Retry-After, at least 1. A concurrency slot frees when some request ends,
    which nobody can know in advance: ask to retry in 1 s."""
    if c.kind == "max_concurrent" or wait_s <= 0:
        return 1
    return max(1, math.ceil(wait_s - 1e-6))


def end_tokens(prompt_estimate: int, usage: Usage | None) -> int:
    """Tokens to add to token windows when a request ends: its completion, plus prompt tokens beyond the
    estimate counted at admission (a lower actual count is not given back: counting stays conservative)."""
    if usage is None:
        return 0
    return usage.completion_tokens + max(0, usage.prompt_tokens - prompt_estimate)


def tokens_fit(used: int, tokens: int, cap: int) -> bool:
    """A request fits when the window has room for its tokens; one larger than the cap fits an empty window only."""
    return used + tokens <= cap or used == 0
