"""Canonical types the router, executor and ledger share.

They are small slotted dataclasses rather than validation models: request
bodies are never round-tripped through them. They are built per request and
never changed once built, but not ``frozen``: a frozen dataclass sets each
field through ``object.__setattr__``, 2.5x the cost of a plain one, and six of
them are built per request (docs/decisions/0003-hot-path.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from tiergate.core.tokens import NO_PROMPT, PromptCount

Protocol = Literal["openai-chat", "anthropic-messages", "openai-responses"]
CHAT: frozenset[str] = frozenset({"chat"})
EMBEDDINGS: frozenset[str] = frozenset({"embeddings"})


@dataclass(frozen=True, slots=True)
class ClientHints:
    """What of the client's own request may travel upstream on a same-protocol pass-through, and what a
    surface already made of it for the bridges (one translation per request, not one per attempt)."""

    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. anthropic-version, anthropic-beta
    query: str = ""  # e.g. "beta=true" from Claude Code
    translated: Any = None  # the body as a surface already translated it once (Responses -> chat), for bridges


NO_HINTS = ClientHints()


@dataclass(slots=True)
class StreamStatus:
    """How an upstream stream is going: the adapter watching its events writes it, the relay reads it."""

    completed: bool = False  # the protocol's own end marker arrived ([DONE], message_stop)
    error: str | None = None  # why the stream failed, when it did

    def fail(self, error: str) -> None:
        """Record ``error`` unless an earlier, more specific one is already there."""
        if self.error is None:
            self.error = error


@dataclass(slots=True)
class Identity:
    """Who is calling: resolved from the key and the X-Tiergate-* headers."""

    key_name: str
    agent: str | None = None
    session: str | None = None  # None until the guardian names the implicit one (no session header)
    task: str | None = None
    local_only: bool = False
    tags: tuple[str, ...] = ()
    session_implicit: bool = False  # the session was named by the gateway, not by the client


@dataclass(slots=True)
class RequestFeatures:
    """What routing needs to know about one request; nothing more."""

    model: str
    task: str | None = None
    prompt_tokens_est: int = 0
    prompt: PromptCount = NO_PROMPT  # what the estimate was made of (core.tokens): budgets size reservations on it
    max_tokens: int | None = None
    local_only: bool = False
    stream: bool = False
    needs: frozenset[str] = CHAT  # capabilities the body uses (core.capabilities)

    @property
    def embeddings(self) -> bool:
        return "embeddings" in self.needs


@dataclass(slots=True)
class Candidate:
    deployment: str
    tier: int
    reason: str


@dataclass(slots=True)
class Skipped:
    deployment: str
    reason: str
    rank: int = 0  # how many candidates were ahead of it: it was preferred over candidate #rank


@dataclass(slots=True)
class RoutePlan:
    """Ordered candidates, each with why it is there, plus what was left out and why."""

    target: str
    summary: str
    candidates: tuple[Candidate, ...]
    skipped: tuple[Skipped, ...] = ()
    warning: str | None = None  # for the client, in X-Tiergate-Warning (an unknown task)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0  # every input token, cache reads and writes included
    completion_tokens: int = 0
    estimated: bool = False
    cache_read_tokens: int = 0  # of prompt_tokens: read from the provider's prompt cache (billed at its price)
    cache_write_tokens: int = 0  # of prompt_tokens: written to it

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class UsageRecord(NamedTuple):
    """One row of the ledger: a request's outcome or one failed attempt.

    A named tuple in column order: built per request, and the SQLite writer binds it as it is
    (no per-row conversion while holding the GIL, docs/decisions/0003-hot-path.md).
    """

    ts: float
    request_id: str
    kind: Literal["request", "attempt", "shadow"]
    key_name: str
    agent: str | None
    session: str | None
    task: str | None
    requested_model: str
    deployment: str | None
    provider: str | None
    tier: int | None
    local: bool
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool
    cost_usd: float
    latency_ms: float
    ttft_ms: float | None
    status: int
    stream: bool
    fallbacks: int
    reason: str
    error: str | None = None
    protocol: str = "openai-chat"
    extra: dict[str, str] | None = None
