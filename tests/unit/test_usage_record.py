"""usage_record builds the ledger row positionally (cheaper than 25 keywords): every field must land in
its own column, which a row of distinct values per field shows."""

from __future__ import annotations

from tiergate.core.catalog import Deployment
from tiergate.core.types import Identity, RequestFeatures, Usage
from tiergate.guardrails.budget_hold import BudgetHold
from tiergate.router.context import CallContext, usage_record


def test_every_field_of_the_row_comes_from_its_own_source():
    ident = Identity(key_name="key-1", agent="agent-2", session="session-3", task="task-4")
    f = RequestFeatures(model="model-5")
    ctx = CallContext(
        request_id="req-6",
        identity=ident,
        requested_model="model-5",
        protocol="anthropic-messages",
        stream=True,
        started=0.0,
        wall_start=1234.5,
        deadline=99.0,
        features=f,
        hold=BudgetHold(None, ident, f),
    )
    d = Deployment(
        name="dep-7",
        provider="prov-8",
        api="openai-chat",
        base_url="http://x",
        model="m",
        tier=2,
        local=True,
        context_window=1000,
        max_output_tokens=None,
        input_per_mtok=1.0,
        output_per_mtok=2.0,
    )
    usage = Usage(11, 22, estimated=True, cache_read_tokens=3, cache_write_tokens=4)
    rec = usage_record(
        ctx, d, kind="attempt", usage=usage, status=503, ttft_ms=7.5, reason="why-9", error="err-10",
        fallbacks=-3, cost=0.25, latency_ms=42.0,
    )  # fmt: skip
    assert rec._asdict() == {
        "ts": 1234.5,
        "request_id": "req-6",
        "kind": "attempt",
        "key_name": "key-1",
        "agent": "agent-2",
        "session": "session-3",
        "task": "task-4",
        "requested_model": "model-5",
        "deployment": "dep-7",
        "provider": "prov-8",
        "tier": 2,
        "local": True,
        "prompt_tokens": 11,
        "completion_tokens": 22,
        "usage_estimated": True,
        "cost_usd": 0.25,
        "latency_ms": 42.0,
        "ttft_ms": 7.5,
        "status": 503,
        "stream": True,
        "fallbacks": 0,
        "reason": "why-9",
        "error": "err-10",
        "protocol": "anthropic-messages",
        "extra": {"cache_read_tokens": "3", "cache_write_tokens": "4"},
    }


def test_a_request_that_reached_no_deployment_has_no_deployment_columns():
    ident = Identity(key_name="k")
    f = RequestFeatures(model="auto")
    ctx = CallContext("r", ident, "auto", "openai-chat", False, 0.0, 1.0, 9.0, f, BudgetHold(None, ident, f))
    rec = usage_record(
        ctx, None, kind="request", usage=Usage(), status=429, ttft_ms=None, reason="rate limited", error="e",
        fallbacks=0,
    )  # fmt: skip
    assert (rec.deployment, rec.provider, rec.tier, rec.local, rec.extra) == (None, None, None, False, None)
    assert rec.latency_ms >= 0
