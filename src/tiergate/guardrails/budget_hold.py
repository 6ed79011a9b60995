"""One request's whole conversation with the budgets, as one object.

constraints (before planning) → reserve(candidate) → settle(cost) | release().

The pipeline creates a hold per request and the executor asks it before
each candidate. Whatever happens next — an answer, every candidate
failing, a client hang-up, a timeout, a cancellation — ``release`` or
``settle`` leaves nothing reserved; both are idempotent, so the pipeline
may call ``release`` on every way out without counting. Settling with the
call's usage teaches the guard the deployment's bytes-per-token ratio, which
sizes the next requests' reservations.
"""

from __future__ import annotations

from dataclasses import dataclass

from tiergate.core.catalog import Deployment
from tiergate.core.errors import BudgetExceeded
from tiergate.core.money import BudgetLine, reserved_output
from tiergate.core.types import Identity, RequestFeatures, Usage
from tiergate.guardrails.budgets import NO_CONSTRAINTS, BudgetGuard, Constraints


@dataclass(slots=True)
class Refusal:
    """A candidate a budget refused: the line that refused (None: budgets unreachable, fail_closed) and why."""

    line: BudgetLine | None
    why: str
    deployment: Deployment


class BudgetHold:
    """One request's reservations. A plain slotted class, not a dataclass: one is built per request, and
    ``budgeted`` is decided once here so that the executor skips reserve/release/output_cap without a
    call when no budget is configured."""

    __slots__ = (
        "guard",
        "identity",
        "features",
        "constraints",
        "refusals",
        "_held",
        "_deployment",
        "_prompt",
        "budgeted",
    )

    def __init__(self, guard: BudgetGuard | None, identity: Identity, features: RequestFeatures) -> None:
        self.guard = guard
        self.identity = identity
        self.features = features
        self.constraints = NO_CONSTRAINTS  # replaced by check() whenever there is a guard
        self.refusals: list[Refusal] = []
        self._held: list[BudgetLine] = []  # the lines the current candidate holds
        self._deployment: Deployment | None = None  # the candidate reserved for (its usage teaches its ratio)
        self._prompt = 0  # the prompt tokens its reservation assumed
        self.budgeted = guard is not None and bool(guard.budgets)  # else reserve/settle have nothing to do

    @property
    def held(self) -> tuple[BudgetLine, ...]:
        return tuple(self._held)

    async def check(self) -> Constraints:
        """Exhausted budgets and emergency mode as routing constraints; a reject budget refuses here."""
        if self.guard is None:
            return self.constraints
        self.constraints = await self.guard.constraints(self.identity)
        if self.constraints.reject:
            raise BudgetExceeded(
                f"{self.constraints.reject}; the budget's action is reject", retry_after=self.constraints.retry_after
            )
        return self.constraints

    async def reserve(self, d: Deployment) -> str | None:
        """Hold ``d``'s worst-case cost against every budget line; None once held, else why ``d`` is skipped.

        A budget whose action is reject raises BudgetExceeded instead of skipping.
        """
        if not self.budgeted:
            return None
        assert self.guard is not None and not self._held, "release the last candidate's hold first"
        f = self.features
        prompt = self.guard.prompt_tokens(d, f)
        lines = self.guard.lines_for(
            self.identity,
            d,
            f.prompt_tokens_est,
            f.max_tokens,
            prompt_tokens=prompt,
            cache_writes=f.prompt.cache_writes,
        )
        why, refusing = await self.guard.reserve(lines)
        if why is not None:
            if refusing is not None and refusing.budget.action == "reject":
                raise BudgetExceeded(why, retry_after=await self.guard.retry_after(refusing))
            self.refusals.append(Refusal(refusing, why, d))
            return why
        self._held, self._deployment, self._prompt = lines, d, prompt
        return None

    def output_cap(self, d: Deployment) -> int | None:
        """The output tokens the reservation assumed when the client set no cap and a USD limit applies.

        The adapter sends it in the field its protocol and model need, so the
        upstream cannot produce more than was reserved.
        """
        if self.features.max_tokens is not None or not any(ln.limit_usd and ln.amount_usd > 0 for ln in self._held):
            return None
        return reserved_output(d, None, self._prompt)

    async def release(self) -> None:
        """Give back whatever is held (a failed candidate, or a request that ends unanswered)."""
        self._deployment = None
        if self._held and self.guard is not None:
            lines, self._held = self._held, []
            await self.guard.release(lines)

    async def settle(self, cost_usd: float, usage: Usage | None = None) -> None:
        """Turn the held reservation into the real cost; the upstream's own prompt count teaches the
        deployment's ratio (an estimated count would only teach the estimate back)."""
        d, self._deployment = self._deployment, None
        if d is not None and self.guard is not None and usage is not None and not usage.estimated:
            self.guard.learn(d, self.features, usage.prompt_tokens)
        if self._held and self.guard is not None:
            lines, self._held = self._held, []
            await self.guard.settle(lines, cost_usd)

    async def tighten(self) -> bool:
        """Take the actions of the budgets that refused (local-only, downgrade); True to route again."""
        if self.guard is None or not self.refusals:
            return False
        refusals = [(r.line, r.why, r.deployment) for r in self.refusals]
        self.refusals.clear()
        return await self.guard.tighten(self.constraints, refusals)
