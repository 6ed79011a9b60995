"""Budgets that cannot be overspent: constraints before routing, atomic reservations per attempt.

Before a request is planned, exhausted budgets become routing constraints
(reject, local-only, a tier cap, blocked deployments) that the pure policy
sees in its snapshot. Then, for each candidate, the worst-case cost is
reserved atomically in SharedState against every budget line it touches;
a candidate that does not fit takes its budget's action instead of
running. Settling turns the reservation into the real cost, teaches the
deployment's bytes-per-token ratio (so later reservations are sized by its
own tokenizer, ``core.tokens``) and fires threshold alerts once per window.
A reject budget's refusal says when to retry (``core.money.budget_retry_after``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tiergate.config.guardrails import IDENTITY_SCOPES, BudgetConfig
from tiergate.core.catalog import Catalog, Deployment
from tiergate.core.errors import StateUnavailable
from tiergate.core.money import (
    BudgetLine,
    BudgetRule,
    applies,
    budget_retry_after,
    counter_key,
    exhausted,
    reserved_prompt,
    thresholds_crossed,
    worst_case_cost,
)
from tiergate.core.tokens import Ratio
from tiergate.core.tokens import learn as learn_ratio
from tiergate.core.types import Identity, RequestFeatures
from tiergate.core.windows import window_bounds, window_key
from tiergate.state.base import SharedState

if TYPE_CHECKING:
    from tiergate.guardrails.alerts import AlertDispatcher
    from tiergate.guardrails.outages import Outages
    from tiergate.ledger.base import Ledger

log = logging.getLogger("tiergate.guardrails.budgets")

EMERGENCY_FLAG = "emergency"
MAX_PENDING = 1_000_000  # counter updates held for reconciliation during a long outage (~200 bytes each)
LATCH = "latched:"  # flag prefix: a local-only budget that refused stays in emergency mode for its window


@dataclass(slots=True)
class Constraints:
    """What budgets (and emergency mode) allow for this request, each with the reason."""

    reject: str | None = None
    local_only: str | None = None
    tier_cap: int | None = None
    tier_cap_reason: str = ""
    blocked: dict[str, str] = field(default_factory=dict)
    rejecting_blocks: bool = False
    retry_after: int | None = None  # for ``reject``: when every rejecting budget may have room again
    blocks_retry_after: int | None = None  # for rejecting blocks: when the first blocked deployment may


NO_CONSTRAINTS = Constraints()  # without a guard: nothing constrains (never mutated: tighten needs a guard)


class BudgetGuard:
    def __init__(
        self,
        budgets: Sequence[BudgetConfig],
        *,
        catalog: Catalog,
        state: SharedState,
        tz: str,
        alerts: AlertDispatcher | None = None,
        clock: Callable[[], float] = time.time,
        outages: Outages | None = None,
    ) -> None:
        self.budgets = list(budgets)
        self.catalog = catalog
        self.state = state
        self.tz = tz
        self.alerts = alerts
        self.clock = clock
        self.outages = outages
        self._unchecked: set[int] = set()  # id() of line lists admitted while the state was unreachable
        self.ratios: dict[str, Ratio] = {}  # deployment -> bytes per prompt token, learned from settled calls
        self._pending: list[tuple[str, Sequence[BudgetLine], float]] = []  # (op, lines, usd) to reconcile

    # ------------------------------------------------------------------ outages (see tiergate.guardrails.outages)
    def _outage_mode(self, concern: str) -> str | None:
        return self.outages.mode(concern) if self.outages is not None else None

    def _reconcile_later(self, op: str, lines: Sequence[BudgetLine], usd: float) -> None:
        if len(self._pending) >= MAX_PENDING:
            log.error(
                "dropping a budget update to reconcile (%d pending); the ledger still has the record", MAX_PENDING
            )
            return
        self._pending.append((op, lines, usd))

    @property
    def pending_reconcile(self) -> int:
        return len(self._pending)

    async def reconcile(self) -> int:
        """Apply, in order, the counter updates that could not reach the shared state; returns how many."""
        done = 0
        while self._pending:
            op, lines, usd = self._pending[0]
            try:
                if op == "add":
                    await self.state.budget_add(lines, usd)
                elif op == "settle":
                    await self.state.budget_settle(lines, usd)
                else:
                    await self.state.budget_release(lines)
            except StateUnavailable:
                break
            self._pending.pop(0)
            done += 1
        if done and self.outages is not None:
            self.outages.decided("budgets", "reconciled")
            log.warning("reconciled %d budget updates made while the shared state was unavailable", done)
        return done

    # ------------------------------------------------------------------ before planning
    async def constraints(self, ident: Identity) -> Constraints:
        manual = await self.state.flag(EMERGENCY_FLAG)
        ledger_down = self.outages is not None and self.outages.is_down("ledger")
        if not (manual or ledger_down or self.budgets):
            return NO_CONSTRAINTS  # the usual request with no budget configured: nothing to build
        c = Constraints()
        if manual:
            c.local_only = f"emergency mode on ({manual})"
        if ledger_down and self._outage_mode("ledger") == "fail_closed":
            assert self.outages is not None
            c.local_only = (
                c.local_only or "ledger database unavailable (on_outage.ledger: fail_closed): local tiers only"
            )
            self.outages.decided("ledger", "local_only")
        if not self.budgets:
            return c
        try:
            await self._budget_constraints(c, ident)
        except StateUnavailable as exc:
            mode = self._outage_mode("budgets")
            if mode is None:
                raise
            assert self.outages is not None
            if mode == "fail_closed":
                c.local_only = c.local_only or (
                    f"budgets cannot be checked ({exc.message}; on_outage.budgets: fail_closed): local tiers only"
                )
                self.outages.decided("budgets", "local_only")
            else:
                self.outages.decided("budgets", "unchecked")
        return c

    async def _budget_constraints(self, c: Constraints, ident: Identity) -> None:
        now = self.clock()
        for b in self.budgets:
            wk = window_key(b.window, now, self.tz)
            if b.scope in IDENTITY_SCOPES:
                value = applies(b, ident, None, self.catalog.aliases)
                if value is None:
                    continue
                key = counter_key(b, wk, value)
                usage = await self.state.budget_usage(key)
                why = self._exhausted(b, usage)
                if why is None and b.action == "local-only":
                    why = await self.state.flag(f"{LATCH}{key}")
                if why:
                    self._apply(c, b, why, wk, value)
                    if b.action == "reject":
                        wait = self._retry_after(b, usage, 0.0, now)
                        c.retry_after = max(c.retry_after or 0, wait)
                continue
            for d in self.catalog.deployments.values():
                value = applies(b, ident, d, self.catalog.aliases)
                if value is None:
                    continue
                usage = await self.state.budget_usage(counter_key(b, wk, value))
                why = self._exhausted(b, usage)
                if why and b.action == "local-only":
                    self._apply(c, b, why, wk, value)
                elif why and not d.local:
                    c.blocked[d.name] = why
                    c.rejecting_blocks |= b.action == "reject"
                    if b.action == "reject":
                        wait = self._retry_after(b, usage, 0.0, now)
                        c.blocks_retry_after = min(c.blocks_retry_after or wait, wait)
                    if b.action == "downgrade":  # by default, cap just below the capped deployment's tier
                        self._cap(c, b.max_tier if b.max_tier is not None else max(0, d.tier - 1), why)

    @staticmethod
    def _exhausted(b: BudgetConfig, usage: tuple[float, float, int]) -> str | None:
        spent, reserved, calls = usage
        return exhausted(b, spent=spent, reserved=reserved, calls=calls)

    def _retry_after(self, b: BudgetRule, usage: tuple[float, float, int], amount_usd: float, now: float) -> int:
        spent, reserved, calls = usage
        _, end = window_bounds(b.window, now, self.tz)
        return budget_retry_after(
            b, spent=spent, reserved=reserved, calls=calls, amount_usd=amount_usd, now=now, window_end=end
        )

    async def retry_after(self, line: BudgetLine) -> int:
        """Seconds until ``line`` may hold its amount again, for the Retry-After of a refusal."""
        try:
            usage = await self.state.budget_usage(line.key)
        except StateUnavailable:
            usage = (0.0, 0.0, 0)  # the refusal stands; the window's end is still a true upper bound
        return self._retry_after(line.budget, usage, line.amount_usd, self.clock())

    def _apply(self, c: Constraints, b: BudgetConfig, why: str, wk: str, value: str) -> None:
        if b.action == "reject":
            c.reject = c.reject or why
        elif b.action == "local-only":
            if c.local_only is None:
                c.local_only = f"emergency local-only: {why}"
            self.alert(
                "emergency_on",
                f"tiergate emergency local-only mode: {why}",
                f"emergency:{counter_key(b, wk, value)}",
                severity="critical",
                budget=b.id,
            )
        else:
            self._cap(c, b.max_tier or 0, why)

    @staticmethod
    def _cap(c: Constraints, tier: int, why: str) -> None:
        if c.tier_cap is None or tier < c.tier_cap:
            c.tier_cap, c.tier_cap_reason = tier, f"downgraded to tier<={tier}: {why}"

    async def tighten(self, c: Constraints, refusals: Sequence[tuple[BudgetLine | None, str, Deployment]]) -> bool:
        """Apply the actions of budgets that refused a reservation; True when routing should try again.

        A local-only budget that refused latches emergency mode for the rest of its window.
        """
        changed = False
        for line, why, d in refusals:
            if line is None:  # the budgets could not be checked (fail_closed): local tiers only
                if c.local_only is None:
                    c.local_only, changed = why, True
                    if self.outages is not None:
                        self.outages.decided("budgets", "local_only")
                continue
            b = line.budget
            if b.action == "local-only" and c.local_only is None:
                c.local_only, changed = f"emergency local-only: {why}", True
                await self.state.set_flag(f"{LATCH}{line.key}", why)
                self.alert(
                    "emergency_on",
                    f"tiergate emergency local-only mode: {why}",
                    f"emergency:{line.key}",
                    severity="critical",
                    budget=b.id,
                )
            elif b.action == "downgrade":
                tier = b.max_tier if b.max_tier is not None else max(0, d.tier - 1)
                if c.tier_cap is None or tier < c.tier_cap:
                    self._cap(c, tier, why)
                    changed = True
        return changed

    # ------------------------------------------------------------------ per attempt
    def prompt_tokens(self, d: Deployment, f: RequestFeatures) -> int:
        """The prompt tokens to reserve on ``d``: by its learned ratio once it has one, else the estimate
        plus its margin (``core.money.reserved_prompt``)."""
        return reserved_prompt(f.prompt_tokens_est, f.prompt, self.ratios.get(d.name))

    def learn(self, d: Deployment, f: RequestFeatures, reported_prompt_tokens: int) -> None:
        """Fold a settled call's reported prompt tokens into ``d``'s bytes-per-token ratio."""
        ratio = learn_ratio(self.ratios.get(d.name), f.prompt, reported_prompt_tokens)
        if ratio is not None:
            self.ratios[d.name] = ratio

    def lines_for(
        self,
        ident: Identity,
        d: Deployment,
        prompt_estimate: int,
        max_tokens: int | None,
        *,
        prompt_tokens: int | None = None,
        cache_writes: bool = False,
    ) -> list[BudgetLine]:
        now = self.clock()
        amount = worst_case_cost(d, prompt_estimate, max_tokens, prompt_tokens=prompt_tokens, cache_writes=cache_writes)
        lines = []
        for b in self.budgets:
            value = applies(b, ident, d, self.catalog.aliases)
            if value is not None:
                lines.append(BudgetLine(b, counter_key(b, window_key(b.window, now, self.tz), value), value, amount))
        return lines

    async def reserve(self, lines: Sequence[BudgetLine]) -> tuple[str | None, BudgetLine | None]:
        """(why not, the line that refused) or (None, None) once reserved.

        The refusing line is None when the shared state is down and on_outage.budgets is fail_closed.
        """
        if not lines:
            return None, None
        try:
            why = await self.state.budget_reserve(lines)
        except StateUnavailable as exc:
            mode = self._outage_mode("budgets")
            if mode is None:
                raise
            if mode == "fail_closed" and any(ln.amount_usd > 0 for ln in lines):
                # Redis went away between planning and this reservation: skip the candidate, and the
                # caller's tighten() re-routes to local tiers (fail_closed still serves what costs nothing)
                return (
                    f"budgets cannot be checked ({exc.message}; on_outage.budgets: fail_closed): local tiers only"
                ), None
            self._unchecked.add(id(lines))
            return None, None
        if why is None:
            return None, None
        refusing = next((ln for ln in lines if why.startswith(f"budget {ln.budget.id} ")), lines[0])
        return why, refusing

    async def release(self, lines: Sequence[BudgetLine]) -> None:
        if not lines:
            return
        if id(lines) in self._unchecked:
            self._unchecked.discard(id(lines))
            return
        try:
            await self.state.budget_release(lines)
        except StateUnavailable:
            if self.outages is None:
                raise
            self._reconcile_later("release", lines, 0.0)

    async def settle(self, lines: Sequence[BudgetLine], actual_usd: float) -> None:
        if not lines:
            return
        if id(lines) in self._unchecked:
            self._unchecked.discard(id(lines))
            self._reconcile_later("add", lines, actual_usd)
            return
        try:
            settled = await self.state.budget_settle(lines, actual_usd)
        except StateUnavailable:
            if self.outages is None:
                raise
            self._reconcile_later("settle", lines, actual_usd)
            return
        for line, (before, after) in zip(lines, settled, strict=True):  # one (before, after) per line
            b = line.budget
            for t in set(thresholds_crossed(b, after)) - set(thresholds_crossed(b, before)):
                self.alert(
                    "budget_threshold",
                    f"budget {b.id} ({line.value}) reached {t:.0%} of ${b.limit_usd:g} this {b.window}: "
                    f"${after:.4f} spent",
                    f"budget:{line.key}:{t}",
                    budget=b.id,
                    threshold=t,
                    spent=after,
                )

    def alert(self, event: str, message: str, key: str, *, severity: str = "warning", **details: object) -> None:
        if self.alerts is None:
            return
        from tiergate.guardrails.alerts import Alert

        self.alerts.emit(Alert(event=event, message=message, dedupe_key=key, severity=severity, details=details))

    async def prune(self) -> int:
        """Drop counters of past windows (keys are "budget-id|window-key|value")."""
        now = self.clock()
        live = {(b.id, window_key(b.window, now, self.tz)) for b in self.budgets}
        return await self.state.budget_prune(lambda key: tuple(key.split("|", 2)[:2]) in live)

    # ------------------------------------------------------------------ restart
    def seed_from_ledger(self, ledger: Ledger) -> None:
        """Settled spend and calls of the current windows, so a restart does not reset budgets.

        Every answered request counts, whatever its status: each one settled its cost (a stream the
        client left, 499, was billed for what it used) and kept its call. Only requests that never
        reached a deployment (no row deployment, nothing settled) are left out. Reading only
        ``status < 400`` forgot every billed 499 and 5xx at each restart. An answer that failed a quality
        gate settled its cost and call too (a billed attempt row).
        """
        now = self.clock()
        for b in self.budgets:
            start, end = window_bounds(b.window, now, self.tz)
            wk = window_key(b.window, now, self.tz)
            rows = ledger.query(
                "SELECT key_name, agent, session, task, deployment, cost_usd FROM usage "
                "WHERE kind IN ('request', 'attempt') AND deployment IS NOT NULL AND ts >= ? AND ts < ? "
                "AND (kind = 'request' OR reason = 'gate failed')",  # answers that failed a gate were paid, a call each
                (start, end),
            )
            totals: dict[str, list[float]] = {}
            for r in rows:
                d = self.catalog.deployments.get(r["deployment"])
                ident = Identity(key_name=r["key_name"], agent=r["agent"], session=r["session"], task=r["task"])
                value = applies(b, ident, d, self.catalog.aliases)
                if value is not None:
                    t = totals.setdefault(value, [0.0, 0])
                    t[0] += r["cost_usd"]
                    t[1] += 1
            for value, (spent, calls) in totals.items():
                self.state.budget_seed(counter_key(b, wk, value), spent, int(calls))
