"""Pure cost and budget math: prices are USD per million tokens.

A budget line is one (budget, window, scope value) counter. Reservations
are worst cases so that the sum of settled spend can never pass a limit:
the prompt is counted conservatively (about three bytes a token rather
than four) and the output at the request's max_tokens, clamped to what the
deployment can produce.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

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


def conservative_tokens(prompt_estimate: int) -> int:
    """The same estimate seen as ~3 bytes a token: reservations err on the side of not overspending."""
    return prompt_estimate * 4 // 3 + 16


def reserved_output(d: Deployment, max_tokens: int | None, prompt_tokens: int) -> int:
    out = max_tokens or DEFAULT_RESERVED_OUTPUT
    if d.max_output_tokens:
        out = min(out, d.max_output_tokens)
    return max(1, min(out, max(1, d.context_window - prompt_tokens)))


def worst_case_cost(d: Deployment, prompt_estimate: int, max_tokens: int | None) -> float:
    prompt = conservative_tokens(prompt_estimate)
    return d.cost(prompt, reserved_output(d, max_tokens, prompt))


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


def over_limit(line: BudgetLine, *, spent: float, reserved: float, calls: int) -> str | None:
    """Why reserving ``line`` now would pass its limit, or None when it fits."""
    b = line.budget
    if b.max_calls is not None and calls + 1 > b.max_calls:
        return f"budget {b.id} ({line.value}): {calls} of {b.max_calls} calls used this {b.window}"
    if b.limit_usd is not None and line.amount_usd > 0 and spent + reserved + line.amount_usd > b.limit_usd + 1e-12:
        return (
            f"budget {b.id} ({line.value}): ${spent + reserved:.4f} of ${b.limit_usd:g} used this {b.window}, "
            f"request needs up to ${line.amount_usd:.4f}"
        )
    return None


def exhausted(b: BudgetRule, *, spent: float, reserved: float, calls: int) -> str | None:
    """Is the budget used up for any paid request (before looking at a particular one)?"""
    if b.max_calls is not None and calls >= b.max_calls:
        return f"budget {b.id}: {calls} of {b.max_calls} calls used this {b.window}"
    if b.limit_usd is not None and spent + reserved >= b.limit_usd - 1e-12:
        return f"budget {b.id}: ${spent + reserved:.4f} of ${b.limit_usd:g} used this {b.window}"
    return None


def thresholds_crossed(b: BudgetRule, spent: float) -> list[float]:
    """Alert thresholds at or below the settled spend."""
    if b.limit_usd is None:
        return []
    return [t for t in b.alert_at if spent >= t * b.limit_usd - 1e-12]
