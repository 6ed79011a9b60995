"""A plain usage row for ledger tests: one builder, each test overriding what it is about."""

from __future__ import annotations

import time
from typing import Any

from tiergate.core.types import UsageRecord


def usage_row(i: int, **overrides: Any) -> UsageRecord:
    """Request ``r{i}`` with ``i`` prompt tokens, answered locally for free."""
    rec = UsageRecord(
        ts=time.time(),
        request_id=f"r{i}",
        kind="request",
        key_name="k",
        agent="a",
        session="s",
        task=None,
        requested_model="auto",
        deployment="d",
        provider="p",
        tier=0,
        local=True,
        prompt_tokens=i,
        completion_tokens=1,
        usage_estimated=False,
        cost_usd=0.0,
        latency_ms=1.0,
        ttft_ms=None,
        status=200,
        stream=False,
        fallbacks=0,
        reason="r",
    )
    return rec._replace(**overrides) if overrides else rec
