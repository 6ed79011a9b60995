"""What the gateway does while Redis or PostgreSQL is unreachable: explicit, per concern, visible.

Two shared dependencies can fail: ``state`` (Redis: budgets, limits,
breakers, flags) and ``ledger`` (PostgreSQL). Each concern has a mode from
``on_outage`` in config:

- ``fail_closed``: cloud spend that cannot be checked is refused; local
  tiers keep serving (they cost nothing, so no budget can be overspent);
- ``fail_open``: serve as usual and reconcile later (budget spend settled
  while Redis was down is added to the shared counters when it returns;
  usage records are spooled to disk and replayed by the ledger).

Never a silent switch to per-replica limits: every transition is logged,
shown in /health under ``dependencies`` and in the metrics
``tiergate_dependency_up`` and ``tiergate_outage_decisions``. Breakers are
not limits: while Redis is down each replica keeps its own breakers (and
says so) rather than failing requests to healthy local tiers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tiergate.core import breaker as br
from tiergate.core.errors import StateUnavailable
from tiergate.core.money import BudgetLine
from tiergate.state.base import SessionTotals, SharedState
from tiergate.state.memory import MemoryState

if TYPE_CHECKING:
    from tiergate.config.guardrails import OutageConfig
    from tiergate.observability.metrics import Metrics

log = logging.getLogger("tiergate.guardrails.outages")

T = TypeVar("T")

CONCERN_DEPENDENCY = {"budgets": "state", "limits": "state", "ledger": "ledger"}


@dataclass(slots=True)
class DependencyStatus:
    ok: bool = True
    since: float | None = None  # wall time of the last transition
    error: str | None = None


class Outages:
    """Tracks which dependency is down and counts what each concern decided meanwhile."""

    def __init__(
        self,
        modes: OutageConfig,
        *,
        metrics: Metrics | None = None,
        dependencies: Sequence[str] = ("state", "ledger"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.modes = modes
        self.metrics = metrics
        self.clock = clock
        self.status = {d: DependencyStatus() for d in dependencies}
        for d in dependencies:
            self._gauge(d, 1)

    def mode(self, concern: str) -> str:
        return str(getattr(self.modes, concern))

    def is_down(self, dependency: str) -> bool:
        s = self.status.get(dependency)
        return s is not None and not s.ok

    def down(self, dependency: str, error: str) -> None:
        s = self.status.setdefault(dependency, DependencyStatus())
        if s.ok:
            s.ok, s.since = False, self.clock()
            modes = ", ".join(f"{c}: {self.mode(c)}" for c, d in CONCERN_DEPENDENCY.items() if d == dependency)
            log.error("%s unavailable (%s); on_outage %s", dependency, error, modes)
            self._gauge(dependency, 0)
        s.error = error

    def up(self, dependency: str) -> None:
        s = self.status.get(dependency)
        if s is not None and not s.ok:
            log.warning("%s reachable again after %.1fs", dependency, self.clock() - (s.since or self.clock()))
            s.ok, s.since, s.error = True, self.clock(), None
            self._gauge(dependency, 1)

    def decided(self, concern: str, decision: str) -> None:
        """Count a request handled under an outage (decision: refused, local_only, unchecked, reconciled)."""
        if self.metrics is not None:
            self.metrics.outage_decisions.labels(concern, self.mode(concern), decision).inc()

    def health(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for name, s in self.status.items():
            concerns = {c: self.mode(c) for c, d in CONCERN_DEPENDENCY.items() if d == name}
            out[name] = {"ok": s.ok, "since": s.since, "error": s.error, "on_outage": concerns}
        return out

    def _gauge(self, dependency: str, value: int) -> None:
        if self.metrics is not None:
            self.metrics.dependency_up.labels(dependency).set(value)


class GuardedState:
    """A ``SharedState`` that reports Redis outages to ``Outages`` and keeps breakers and flags usable.

    Budget methods still raise ``StateUnavailable`` (the budget guard applies
    its mode); breakers fall back to this replica's own view; ``flag`` serves
    the last value it read (emergency mode does not flip during an outage).
    """

    def __init__(self, inner: SharedState, outages: Outages) -> None:
        self.inner = inner
        self.outages = outages
        self._local = MemoryState()
        self._flags: dict[str, str | None] = {}

    def _failed(self, exc: StateUnavailable) -> None:
        self.outages.down("state", exc.message)

    def _ok(self) -> None:
        if self.outages.is_down("state"):
            self.outages.up("state")

    # ------------------------------------------------------------------ breakers
    async def breaker_admit(self, deployment: str, *, now: float, cooldown_s: float) -> bool:
        try:
            ok = await self.inner.breaker_admit(deployment, now=now, cooldown_s=cooldown_s)
        except StateUnavailable as exc:
            self._failed(exc)
            return await self._local.breaker_admit(deployment, now=now, cooldown_s=cooldown_s)
        self._ok()
        return ok

    async def breaker_success(self, deployment: str) -> None:
        await self._local.breaker_success(deployment)
        try:
            await self.inner.breaker_success(deployment)
        except StateUnavailable as exc:
            self._failed(exc)

    async def breaker_failure(
        self, deployment: str, *, now: float, threshold: int, error: str, definitive: bool = False
    ) -> br.BreakerState:
        local = await self._local.breaker_failure(
            deployment, now=now, threshold=threshold, error=error, definitive=definitive
        )
        try:
            return await self.inner.breaker_failure(
                deployment, now=now, threshold=threshold, error=error, definitive=definitive
            )
        except StateUnavailable as exc:
            self._failed(exc)
            return local

    def breaker_snapshot(self, *, now: float, cooldown_s: float) -> dict[str, str]:
        try:
            return self.inner.breaker_snapshot(now=now, cooldown_s=cooldown_s)
        except StateUnavailable as exc:
            self._failed(exc)
            snap = self._local.breaker_snapshot(now=now, cooldown_s=cooldown_s)
            return {name: f"{why} (this replica's view: shared state unavailable)" for name, why in snap.items()}

    def breaker_states(self) -> dict[str, br.BreakerState]:
        try:
            return self.inner.breaker_states()
        except StateUnavailable:
            return self._local.breaker_states()

    # ------------------------------------------------------------------ budgets (modes applied by BudgetGuard)
    async def _call(self, aw: Awaitable[T]) -> T:
        try:
            res = await aw
        except StateUnavailable as exc:
            self._failed(exc)
            raise
        self._ok()
        return res

    async def budget_reserve(self, lines: Sequence[BudgetLine]) -> str | None:
        return await self._call(self.inner.budget_reserve(lines))

    async def budget_settle(self, lines: Sequence[BudgetLine], actual_usd: float) -> list[tuple[float, float]]:
        return await self._call(self.inner.budget_settle(lines, actual_usd))

    async def budget_release(self, lines: Sequence[BudgetLine]) -> None:
        await self._call(self.inner.budget_release(lines))

    async def budget_add(self, lines: Sequence[BudgetLine], actual_usd: float) -> None:
        await self._call(self.inner.budget_add(lines, actual_usd))

    async def budget_usage(self, key: str) -> tuple[float, float, int]:
        return await self._call(self.inner.budget_usage(key))

    def budget_seed(self, key: str, spent: float, calls: int) -> None:
        self.inner.budget_seed(key, spent, calls)

    async def budget_prune(self, current: Callable[[str], bool]) -> int:
        return await self._call(self.inner.budget_prune(current))

    async def session_add(self, session: str, **kw: Any) -> SessionTotals:
        return await self._call(self.inner.session_add(session, **kw))

    async def session_get(self, session: str) -> SessionTotals | None:
        return await self._call(self.inner.session_get(session))

    async def session_kill(self, session: str, reason: str, *, ttl_s: float, at: float | None = None) -> None:
        await self._call(self.inner.session_kill(session, reason, ttl_s=ttl_s, at=at))

    async def session_reset(self, session: str, *, before: float) -> bool:
        return await self._call(self.inner.session_reset(session, before=before))

    # ------------------------------------------------------------------ limits (modes applied by LimitGuard)
    async def limit_admit(self, counters: Sequence[Any], **kw: Any) -> tuple[int, float] | None:
        return await self._call(self.inner.limit_admit(counters, **kw))

    async def limit_release(self, counters: Sequence[Any], **kw: Any) -> None:
        await self._call(self.inner.limit_release(counters, **kw))

    async def limit_renew(self, held: Sequence[Any], **kw: Any) -> None:
        await self._call(self.inner.limit_renew(held, **kw))

    async def limit_usage(self, c: Any, **kw: Any) -> int:
        return await self._call(self.inner.limit_usage(c, **kw))

    # ------------------------------------------------------------------ flags
    async def flag(self, name: str) -> str | None:
        try:
            value = await self.inner.flag(name)
        except StateUnavailable as exc:
            self._failed(exc)
            return self._flags.get(name)
        self._ok()
        self._flags[name] = value
        return value

    async def set_flag(self, name: str, value: str | None) -> None:
        await self._call(self.inner.set_flag(name, value))
        self._flags[name] = value

    # ------------------------------------------------------------------ lifecycle
    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        """Anything else (start, refresh) goes to the wrapped state unchanged."""
        return getattr(self.inner, name)
