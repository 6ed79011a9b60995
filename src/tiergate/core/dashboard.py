"""The dashboard's arithmetic, pure: budget forecasts, percentiles, and traffic folded into minutes and tiers.

Everything here takes plain numbers and rows and returns plain values, so the
figures the dashboard shows are table-tested (tests/unit/test_dashboard_math.py)
apart from the ledger reads and HTTP that feed them (ledger/dashboard.py, api/ui_data.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

ForecastStatus = Literal["no limit", "exhausted", "runs out", "lasts", "idle"]

MIN_ELAPSED_S = 60.0  # the first minute of a window: a rate over a few seconds would forecast nonsense


@dataclass(frozen=True, slots=True)
class Forecast:
    """When a budget runs out at the rate spent so far in its window.

    ``runs_out_at`` is set only for "runs out" (before the window ends) and "exhausted" (now).
    """

    status: ForecastStatus
    rate_usd_per_hour: float
    runs_out_at: float | None = None
    used_share: float | None = None  # spent / limit


def forecast(
    spent_usd: float, limit_usd: float | None, *, window_start: float, window_end: float, now: float
) -> Forecast:
    """The window's average rate (spent since it began) carried forward to the limit.

    The average of the whole window, not of the last minutes: one burst must not
    announce that the month's budget is gone by tonight.
    """
    elapsed = max(now - window_start, MIN_ELAPSED_S)
    rate = max(spent_usd, 0.0) / elapsed
    per_hour = rate * 3600.0
    if limit_usd is None:
        return Forecast("no limit", per_hour)
    share = spent_usd / limit_usd if limit_usd > 0 else 1.0
    if spent_usd >= limit_usd:
        return Forecast("exhausted", per_hour, now, share)
    if rate <= 0:
        return Forecast("idle", 0.0, None, share)
    at = now + (limit_usd - spent_usd) / rate
    if at >= window_end:
        return Forecast("lasts", per_hour, None, share)
    return Forecast("runs out", per_hour, at, share)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values``; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class TrafficRow:
    """One ledger row as the dashboard reads it: a request, or an attempt that failed."""

    ts: float
    kind: str  # "request" or "attempt"
    deployment: str | None
    tier: int | None
    cost_usd: float
    latency_ms: float
    status: int
    reason: str


@dataclass
class Rates:
    """The recent window's figures: what the Overview's tiles show."""

    window_s: float
    requests: int = 0
    errors: int = 0
    gate_escalations: int = 0
    requests_per_minute: float = 0.0
    error_rate: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None


@dataclass
class DeploymentTraffic:
    requests: int = 0
    errors: int = 0
    failed_attempts: int = 0
    cost_usd: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    error_rate: float = 0.0


@dataclass
class Series:
    """Per-minute buckets: ``t`` the bucket starts, the rest one list per tier (or overall) aligned on ``t``."""

    t: list[float] = field(default_factory=list)
    cost_by_tier: dict[str, list[float]] = field(default_factory=dict)
    requests_by_tier: dict[str, list[int]] = field(default_factory=dict)
    latency_p50_ms: list[float | None] = field(default_factory=list)
    latency_p95_ms: list[float | None] = field(default_factory=list)


def tier_label(tier: int | None) -> str:
    return "-" if tier is None else f"tier {tier}"


def rates(rows: Iterable[TrafficRow], *, now: float, window_s: float) -> Rates:
    """Requests per minute, error rate, gate escalations and latency of the rows in the last ``window_s``.

    An error is a request answered with status >= 400; a gate escalation is an attempt whose
    answer failed a quality gate (the request then went up a tier).
    """
    out = Rates(window_s=window_s)
    latencies: list[float] = []
    for r in rows:
        if r.ts < now - window_s or r.ts > now:
            continue
        if r.kind == "attempt":
            out.gate_escalations += r.reason == "gate failed"
            continue
        out.requests += 1
        if r.status >= 400:
            out.errors += 1
        else:
            latencies.append(r.latency_ms)
    out.requests_per_minute = out.requests / (window_s / 60.0) if window_s > 0 else 0.0
    out.error_rate = out.errors / out.requests if out.requests else 0.0
    out.latency_p50_ms, out.latency_p95_ms = percentile(latencies, 50), percentile(latencies, 95)
    return out


def by_deployment(rows: Iterable[TrafficRow]) -> dict[str, DeploymentTraffic]:
    """Requests, errors, failed attempts, cost and answered latency per deployment."""
    out: dict[str, DeploymentTraffic] = {}
    latencies: dict[str, list[float]] = {}
    for r in rows:
        if r.deployment is None:
            continue
        d = out.setdefault(r.deployment, DeploymentTraffic())
        d.cost_usd += r.cost_usd
        if r.kind == "attempt":
            d.failed_attempts += 1
            continue
        d.requests += 1
        if r.status >= 400:
            d.errors += 1
        else:
            latencies.setdefault(r.deployment, []).append(r.latency_ms)
    for name, d in out.items():
        lat = latencies.get(name, [])
        d.latency_p50_ms, d.latency_p95_ms = percentile(lat, 50), percentile(lat, 95)
        d.error_rate = d.errors / d.requests if d.requests else 0.0
    return out


def series(rows: Iterable[TrafficRow], *, now: float, span_s: float, bucket_s: float = 60.0) -> Series:
    """Spend and requests per tier, and answered latency p50/p95, in ``bucket_s`` buckets over the last ``span_s``.

    Buckets are aligned on multiples of ``bucket_s`` (epoch), the last one holding ``now``.
    Cost counts every row that was billed (failed attempts included); requests count requests only.
    """
    last = math.floor(now / bucket_s) * bucket_s
    n = max(1, int(span_s // bucket_s))
    first = last - (n - 1) * bucket_s
    out = Series(t=[first + i * bucket_s for i in range(n)])
    lat: list[list[float]] = [[] for _ in range(n)]
    for r in rows:
        i = int((r.ts - first) // bucket_s)
        if not 0 <= i < n:
            continue
        label = tier_label(r.tier)
        if r.cost_usd:
            out.cost_by_tier.setdefault(label, [0.0] * n)[i] += r.cost_usd
        if r.kind == "request":
            out.requests_by_tier.setdefault(label, [0] * n)[i] += 1
            if r.status < 400:
                lat[i].append(r.latency_ms)
    for label in out.requests_by_tier:
        out.cost_by_tier.setdefault(label, [0.0] * n)
    out.latency_p50_ms = [percentile(v, 50) for v in lat]
    out.latency_p95_ms = [percentile(v, 95) for v in lat]
    return out


def shares(values: dict[str, float]) -> dict[str, float]:
    """Each key's share of the total (0..1); all zero when the total is zero."""
    total = sum(values.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in values.items()}


def context_level(ratio: float, thresholds: Sequence[float] = (0.8, 0.95)) -> str:
    """ "ok", "warn" (at or past the first threshold) or "high" (at or past the last): the session page's colours."""
    ordered = sorted(thresholds)
    if ordered and ratio >= ordered[-1]:
        return "high"
    if ordered and ratio >= ordered[0]:
        return "warn"
    return "ok"


def bucket_quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The upper bound of the histogram bucket holding the ``q`` percentile (``counts`` has one more entry
    than ``bounds``: the +Inf bucket, reported as infinity); None for an empty histogram."""
    total = sum(counts)
    if total == 0:
        return None
    rank = max(1, math.ceil(q / 100.0 * total))
    running = 0
    for bound, n in zip((*bounds, math.inf), counts, strict=True):
        running += n
        if running >= rank:
            return bound
    return math.inf
