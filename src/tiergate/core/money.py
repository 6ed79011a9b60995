"""Pure cost and budget math: prices are USD per million tokens.

A budget line is one (budget, window, scope value) counter. Reservations
are worst cases so that the sum of settled spend can never pass a limit:
the output at the request's max_tokens (clamped to what the deployment can
produce, and sent upstream as the cap when the client set none), the prompt
by the deployment's learned bytes-per-token ratio once it has one
(``core.tokens``), else the text estimate plus a quarter. A refused client
is told when to come back (``budget_retry_after``).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from tiergate.core.tokens import NO_PROMPT, PromptCount, Ratio, learned_tokens
from tiergate.core.types import Identity

if TYPE_CHECKING:
    from tiergate.core.catalog import Deployment


class BudgetRule(Protocol):
    """A ``budgets[]`` line as config gives it (``tiergate.config.guardrails.BudgetRule``), read-only."""

    @property
    def id(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def match(self) -> str | None: ...
    @property
    def window(self) -> Literal["hour", "day", "week", "month"]: ...
    @property
    def limit_usd(self) -> float | None: ...
    @property
    def max_calls(self) -> int | None: ...
    @property
    def alert_at(self) -> Sequence[float]: ...
    @property
    def action(self) -> Literal["reject", "local-only", "downgrade"]: ...
    @property
    def max_tier(self) -> int | None: ...


DEFAULT_RESERVED_OUTPUT = 4096  # reserved output when a request sets no max_tokens (and is then capped to it)


def cost_usd(input_per_mtok: float, output_per_mtok: float, prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * input_per_mtok + completion_tokens * output_per_mtok) / 1_000_000


def estimate_tokens_from_bytes(n_bytes: int) -> int:
    """About four bytes a token: cheap and good enough for routing."""
    return max(1, n_bytes // 4)


def estimate_output_tokens(text_bytes: int, content_events: int = 0) -> int:
    """Output tokens from the text an upstream sent: about four bytes a token, and at least one per
    content event (streams send one or more tokens per delta), so short tokens are not under-counted."""
    return max(content_events, (max(0, text_bytes) + 3) // 4)


def usage_bound(context_window: int, max_output_tokens: int | None) -> int:
    """The most tokens one call's usage figure may claim and still be believed.

    4 x the context window plus the output limit (or one more window): generous for cache writes and
    a context window configured a little small, yet far from what could overflow a float or a budget.
    """
    return 4 * context_window + (max_output_tokens or context_window)


def believable_tokens(value: object, bound: int) -> int | None:
    """An upstream's token count when it can be believed (an integer, not a bool, in 0..bound), else None.

    Usage comes from the upstream's own bytes: 1e300, -100000, "abc", null or an object must never reach
    a cost, a budget or the ledger (issue 14).
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= bound:
        return value
    return None


PROMPT_MARGIN = 4  # an unlearned prompt is reserved at its estimate plus 1/PROMPT_MARGIN (3.2 bytes a token)
SETTLE_RETRY_S = 2  # Retry-After when settling the reservations in flight could make room


def conservative_tokens(prompt_estimate: int) -> int:
    """The estimate plus a quarter, rounded up: four bytes a token read as 3.2 (code, Claude's tokenizer)."""
    return prompt_estimate + -(-prompt_estimate // PROMPT_MARGIN)


def reserved_prompt(prompt_estimate: int, prompt: PromptCount = NO_PROMPT, ratio: Ratio | None = None) -> int:
    """Prompt tokens a reservation holds: by the deployment's learned ratio when it has one, else the
    estimate plus its margin. The learned count may be lower or higher than the estimate: it is the
    deployment's own tokenizer speaking."""
    learned = learned_tokens(ratio, prompt)
    return conservative_tokens(prompt_estimate) if learned is None else learned


def reserved_output(d: Deployment, max_tokens: int | None, prompt_tokens: int) -> int:
    # what the upstream is sent: a reasoning floor raises the client's cap, and the reservation with it
    out = d.output_tokens(max_tokens) or DEFAULT_RESERVED_OUTPUT
    if d.max_output_tokens:
        out = min(out, d.max_output_tokens)
    return max(1, min(out, max(1, d.context_window - prompt_tokens)))


def worst_case_cost(
    d: Deployment,
    prompt_estimate: int,
    max_tokens: int | None,
    *,
    prompt_tokens: int | None = None,
    cache_writes: bool = False,
) -> float:
    """The most a call can bill: ``prompt_tokens`` (default: the conservative estimate) and the reserved
    output; with cache breakpoints in the body, the whole prompt possibly written at the cache-write price."""
    prompt = conservative_tokens(prompt_estimate) if prompt_tokens is None else prompt_tokens
    out = reserved_output(d, max_tokens, prompt)
    cost = d.cost(prompt, out)
    if cache_writes:
        cost = max(cost, d.cost(prompt, out, 0, prompt))
    return cost


def scope_value(b: BudgetRule, ident: Identity, d: Deployment | None) -> str | None:
    """What the budget counts by for this request (None: the budget does not apply)."""
    if b.scope == "global":
        return "*"
    if b.scope in ("provider", "deployment"):
        if d is None:
            return None
        return d.provider if b.scope == "provider" else d.name
    return {"key": ident.key_name, "agent": ident.agent, "session": ident.session, "task": ident.task}[b.scope]


def applies(b: BudgetRule, ident: Identity, d: Deployment | None, aliases: Mapping[str, tuple[str, ...]]) -> str | None:
    """The scope value when budget ``b`` covers this request (and deployment), else None."""
    value = scope_value(b, ident, d)
    if value is None or b.match is None:
        return value
    if fnmatch.fnmatchcase(value, b.match):
        return value
    if b.scope == "deployment" and value in aliases.get(b.match, ()):
        return value
    return None


def counter_key(b: BudgetRule, window_key: str, value: str) -> str:
    return f"{b.id}|{window_key}|{value}"


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One counter a request touches, and how much it wants from it."""

    budget: BudgetRule
    key: str
    value: str
    amount_usd: float

    @property
    def limit_usd(self) -> float | None:
        return self.budget.limit_usd

    @property
    def max_calls(self) -> int | None:
        return self.budget.max_calls


def usd_text(x: float) -> str:
    """Dollars for a message: four decimals, or three significant digits below a cent, so that a small budget's
    $0.000459 of $0.0005 does not read as $0.0005 of $0.0005."""
    if x <= 0 or x >= 0.01:
        return f"{x:.4f}"
    return f"{x:.{3 - math.floor(math.log10(x)) - 1}f}"


def over_limit(line: BudgetLine, *, spent: float, reserved: float, calls: int) -> str | None:
    """Why reserving ``line`` now would pass its limit, or None when it fits."""
    b = line.budget
    if b.max_calls is not None and calls + 1 > b.max_calls:
        return f"budget {b.id} ({line.value}): {calls} of {b.max_calls} calls used this {b.window}"
    if b.limit_usd is not None and line.amount_usd > 0 and spent + reserved + line.amount_usd > b.limit_usd + 1e-12:
        return (
            f"budget {b.id} ({line.value}): ${usd_text(spent + reserved)} of ${b.limit_usd:g} used this {b.window}, "
            f"request needs up to ${usd_text(line.amount_usd)}"
        )
    return None


def exhausted(b: BudgetRule, *, spent: float, reserved: float, calls: int) -> str | None:
    """Is the budget used up for any paid request (before looking at a particular one)?"""
    if b.max_calls is not None and calls >= b.max_calls:
        return f"budget {b.id}: {calls} of {b.max_calls} calls used this {b.window}"
    if b.limit_usd is not None and spent + reserved >= b.limit_usd - 1e-12:
        return f"budget {b.id}: ${usd_text(spent + reserved)} of ${b.limit_usd:g} used this {b.window}"
    return None


def budget_retry_after(
    b: BudgetRule, *, spent: float, reserved: float, calls: int, amount_usd: float, now: float, window_end: float
) -> int:
    """Whole seconds a refused client should wait before asking again (Retry-After), at least 1.

    Settling the reservations in flight gives back what they held beyond their real cost, so when the
    settled spend alone leaves room for this request (``amount_usd``; 0: any paid request), that is a
    matter of seconds. Otherwise nothing frees before the window ends, and a call cap never frees early:
    calls in flight stay counted unless they fail.
    """
    to_reset = max(1, math.ceil(window_end - now - 1e-9))
    if (b.max_calls is not None and calls + 1 > b.max_calls) or b.limit_usd is None or reserved <= 0:
        return to_reset
    room = b.limit_usd - spent
    fits = room >= amount_usd - 1e-12 if amount_usd > 0 else room > 1e-12
    return min(SETTLE_RETRY_S, to_reset) if fits else to_reset


def thresholds_crossed(b: BudgetRule, spent: float) -> list[float]:
    """Alert thresholds at or below the settled spend."""
    if b.limit_usd is None:
        return []
    return [t for t in b.alert_at if spent >= t * b.limit_usd - 1e-12]
