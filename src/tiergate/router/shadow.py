"""Shadow comparisons at work: a sample of local answers also asked of a reference tier, in the background;
with ``lower``, a sample of the answers tiers above that deployment gave also asked of it.

``offer`` is called once a request is settled. It never delays or changes the client's answer. An
offered answer is compared only when it was a plain (not streamed) answer from a local deployment (asked
of the reference) or from a tier above the lower deployment (asked of it) to a
request that may leave the machine (not local-only by privacy or emergency mode: those fail closed), its
task is listed (or none are), the sample draw says so, and the comparison's worst case still fits the
day's shadow budget (reserved before the call, trued up after). At most ``MAX_IN_FLIGHT`` comparisons
run at once; beyond that an answer is not compared. Each comparison is a ledger row of kind ``shadow``
(the deployment asked, its tokens and cost, ``extra``: served_by, served_tier, agree, compare). Budgets and
request totals leave these rows out; ``tiergate report`` shows them apart.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping

from tiergate.adapters.base import Adapter
from tiergate.adapters.gate_views import reply_view
from tiergate.background import stop
from tiergate.config.gates import ShadowConfig
from tiergate.core.catalog import Catalog, Deployment
from tiergate.core.money import worst_case_cost
from tiergate.core.shadow import ShadowBudget, agree
from tiergate.core.types import Usage
from tiergate.router.context import CallContext, Outcome, usage_record
from tiergate.router.gating import LedgerSink

log = logging.getLogger("tiergate.shadow")
MAX_IN_FLIGHT = 2


class ShadowRunner:
    def __init__(
        self,
        cfg: ShadowConfig,
        *,
        catalog: Catalog,
        adapters: Mapping[tuple[str, str], Adapter],
        ledger: LedgerSink,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.adapters = adapters
        self.ledger = ledger
        self.timeout_s = timeout_s
        self.clock = clock
        self.rng = rng or random.Random()
        self.budget = ShadowBudget(cfg.budget_usd_per_day)
        self.reference = _resolve(catalog, cfg.reference)
        self.lower = _resolve(catalog, cfg.lower)
        self._tasks: set[asyncio.Task[None]] = set()

    def _asked(self, served: Deployment) -> Deployment | None:
        """Who is asked for comparison: the reference, for a local answer; the lower deployment, for an
        answer from a tier above it."""
        ref = self.reference if served.local else None
        if ref is None and self.lower is not None and self.lower.tier < served.tier:
            ref = self.lower
        return None if ref is None or ref.name == served.name else ref

    def offer(self, ctx: CallContext, outcome: Outcome) -> None:
        d, gate = outcome.deployment, ctx.gate
        if outcome.reply is None or gate is None:
            return
        ref = self._asked(d)
        if ref is None:
            return
        if ctx.features.local_only or ctx.hold.constraints.local_only:  # privacy, emergency: never sent out
            return
        if self.cfg.tasks and ctx.identity.task not in self.cfg.tasks:
            return
        if len(self._tasks) >= MAX_IN_FLIGHT or self.rng.random() >= self.cfg.sample:
            return
        adapter = self.adapters.get((ctx.protocol, ref.api))
        if adapter is None:
            return
        worst = worst_case_cost(ref, ctx.features.prompt_tokens_est, ctx.features.max_tokens)
        if not self.budget.fits(worst, self.clock()):
            return
        self.budget.spend(worst, self.clock())  # held while it runs, so two at once cannot overspend
        task = asyncio.create_task(self._compare(ctx, d, outcome.reply.body, adapter, ref, worst))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(
        self, ctx: CallContext, served: Deployment, served_body: bytes, adapter: Adapter, ref: Deployment, held: float
    ) -> None:
        assert ctx.gate is not None
        mode = self.cfg.compare if self.cfg.compare != "auto" else ("json" if ctx.gate.expect.json else "exact")
        t0 = time.perf_counter()
        try:
            reply = await adapter.complete(ref, ctx.gate.body, timeout_s=self.timeout_s, hints=ctx.hints)
        except asyncio.CancelledError:
            self.budget.spend(-held, self.clock())
            raise
        except Exception as exc:
            self.budget.spend(-held, self.clock())
            self._record(ctx, ref, Usage(), 0.0, t0, served, mode, None, error=f"{type(exc).__name__}: {exc}")
            return
        cost = ref.usage_cost(reply.usage)
        self.budget.spend(cost - held, self.clock())
        mine, theirs = reply_view(ctx.protocol, served_body), reply_view(ctx.protocol, reply.body)
        agreed = mine is not None and theirs is not None and agree(mine, theirs, mode)
        self._record(ctx, ref, reply.usage, cost, t0, served, mode, agreed)

    def _record(
        self,
        ctx: CallContext,
        ref: Deployment,
        usage: Usage,
        cost: float,
        t0: float,
        served: Deployment,
        mode: str,
        agreed: bool | None,
        error: str | None = None,
    ) -> None:
        rec = usage_record(
            ctx,
            ref,
            kind="shadow",
            usage=usage,
            status=200 if error is None else 502,
            ttft_ms=None,
            reason=f"shadow of {served.name}",
            error=error,
            fallbacks=0,
            cost=cost,
            latency_ms=(time.perf_counter() - t0) * 1000,
        )
        extra = {**(rec.extra or {}), "served_by": served.name, "served_tier": str(served.tier), "compare": mode}
        if agreed is not None:
            extra["agree"] = "1" if agreed else "0"
        self.ledger.record(rec._replace(extra=extra))

    async def close(self) -> None:
        """Comparisons in flight are stopped (their held budget given back); nothing is left running."""
        for task in list(self._tasks):
            await stop(task)


def _resolve(catalog: Catalog, name: str | None) -> Deployment | None:
    """A deployment, or an alias's first member."""
    if name is None:
        return None
    members = catalog.aliases.get(name) or (name,)
    return catalog.deployments.get(members[0])
