"""What budgets do while the shared state is down, per on_outage mode: a table, no server."""

from __future__ import annotations

import asyncio

import pytest

from tiergate.config.catalog import build_catalog
from tiergate.config.guardrails import OutageConfig
from tiergate.config.loading import config_from_dict
from tiergate.core.errors import StateUnavailable
from tiergate.core.types import Identity
from tiergate.guardrails.budgets import BudgetGuard, Constraints
from tiergate.guardrails.outages import GuardedState, Outages
from tiergate.observability.metrics import Metrics
from tiergate.state.memory import MemoryState

RAW = {
    "providers": {
        "box": {"api": "openai-chat", "base_url": "http://127.0.0.1:1/v1", "local": True},
        "co": {"api": "openai-chat", "base_url": "http://127.0.0.1:2/v1"},
    },
    "deployments": [
        {"name": "local", "provider": "box", "model": "m", "tier": 0, "context_window": 8192},
        {
            "name": "cloud",
            "provider": "co",
            "model": "m",
            "tier": 1,
            "context_window": 16000,
            "max_output_tokens": 2000,
            "price": {"input_per_mtok": 1000, "output_per_mtok": 1000},
        },
    ],
    "budgets": [{"scope": "global", "window": "day", "limit_usd": 1.0}],
}
CFG = config_from_dict(RAW, env={})
CAT = build_catalog(CFG)
WHO = Identity(key_name="k", agent="a", session="s")


class FlakyState(MemoryState):
    """MemoryState whose every call raises StateUnavailable while `down` is set (an outage)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def __getattribute__(self, name: str):  # type: ignore[no-untyped-def]
        attr = super().__getattribute__(name)
        if name.startswith(("budget_", "breaker_", "flag", "set_flag")) and super().__getattribute__("down"):

            def fail(*a, **k):  # type: ignore[no-untyped-def]
                raise StateUnavailable(f"shared state unavailable: Redis down during {name}")

            return fail
        return attr


def build(mode: str) -> tuple[BudgetGuard, FlakyState, Outages, Metrics]:
    inner = FlakyState()
    metrics = Metrics()
    outages = Outages(OutageConfig(budgets=mode), metrics=metrics)
    state = GuardedState(inner, outages)
    guard = BudgetGuard(CFG.budgets, catalog=CAT, state=state, tz="UTC", outages=outages)
    return guard, inner, outages, metrics


def decisions(metrics: Metrics) -> dict[str, float]:
    out = {}
    for fam in metrics.registry.collect():
        if fam.name == "tiergate_outage_decisions":
            for s in fam.samples:
                if s.name.endswith("_total"):
                    out[s.labels["decision"]] = s.value
    return out


@pytest.mark.parametrize(
    ("mode", "local_only", "cloud_reserve", "decision"),
    [
        ("fail_closed", True, "refused", "local_only"),
        ("fail_open", False, "admitted", "unchecked"),
    ],
)
def test_budget_outage_modes(mode, local_only, cloud_reserve, decision):
    async def main():
        guard, inner, outages, metrics = build(mode)
        inner.down = True
        c = await guard.constraints(WHO)
        assert (c.local_only is not None) is local_only
        if local_only:
            assert "on_outage.budgets: fail_closed" in c.local_only
        assert outages.is_down("state") and outages.health()["state"]["ok"] is False
        assert decisions(metrics).get(decision) == 1
        # local tiers cost nothing: served in both modes, without a reservation
        local_lines = guard.lines_for(WHO, CAT.deployments["local"], 100, 100)
        assert await guard.reserve(local_lines) == (None, None)
        await guard.settle(local_lines, 0.0)
        cloud_lines = guard.lines_for(WHO, CAT.deployments["cloud"], 100, 100)
        if cloud_reserve == "refused":
            # Redis died between planning and reserving: the candidate is skipped and routing turns local-only
            why, line = await guard.reserve(cloud_lines)
            assert line is None and "on_outage.budgets: fail_closed" in why
            fresh = Constraints()
            assert await guard.tighten(fresh, [(None, why, CAT.deployments["cloud"])]) is True
            assert fresh.local_only == why
        else:
            assert await guard.reserve(cloud_lines) == (None, None)
            await guard.settle(cloud_lines, 0.3)
        # nothing reaches the counters until the state is back; then everything does, in order
        inner.down = False
        assert await guard.reconcile() == guard_expected(cloud_reserve)
        spent, reserved, calls = await inner.budget_usage(local_lines[0].key)
        assert round(spent, 9) == (0.3 if cloud_reserve == "admitted" else 0.0)
        assert reserved == 0 and calls == guard_expected(cloud_reserve)
        await guard.constraints(WHO)
        assert not outages.is_down("state") and guard.pending_reconcile == 0

    asyncio.run(main())


def guard_expected(cloud_reserve: str) -> int:
    return 2 if cloud_reserve == "admitted" else 1


def test_settle_that_fails_mid_request_is_reconciled_as_a_settle():
    async def main():
        guard, inner, _, _ = build("fail_closed")
        lines = guard.lines_for(WHO, CAT.deployments["cloud"], 100, 100)
        assert await guard.reserve(lines) == (None, None)  # reserved while up
        inner.down = True
        await guard.settle(lines, 0.2)  # Redis died during the call
        assert guard.pending_reconcile == 1 and await guard.reconcile() == 0
        inner.down = False
        assert await guard.reconcile() == 1
        spent, reserved, calls = await inner.budget_usage(lines[0].key)
        assert (round(spent, 9), reserved, calls) == (0.2, 0.0, 1)  # the reservation went, the spend stayed

    asyncio.run(main())


def test_breakers_and_flags_keep_working_on_this_replica_during_an_outage():
    async def main():
        _, inner, outages, _ = build("fail_closed")
        state = GuardedState(inner, outages)
        await state.set_flag("emergency", "by hand")
        inner.down = True
        assert await state.flag("emergency") == "by hand"  # last value read: no flip during an outage
        st = await state.breaker_failure("cloud", now=1.0, threshold=1, error="boom", definitive=True)
        assert st.opened_at == 1.0
        snap = state.breaker_snapshot(now=2.0, cooldown_s=30)
        assert "this replica's view" in snap["cloud"]
        with pytest.raises(StateUnavailable):
            await state.set_flag("emergency", None)  # an operator's change must not be lost silently

    asyncio.run(main())
