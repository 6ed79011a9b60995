"""Series computed at scrape time from state the gateway already holds: no work per request.

``/metrics`` gathers a ``ScrapeSnapshot`` (budgets, sessions, deployments, local
models, queues, GPUs; api/metrics_scrape.py) and ``ScrapeCollector`` renders the
last one. A series whose source is gone (a budget window that rolled over, a GPU
that vanished) simply is not in the next scrape: no stale labels to clear.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tiergate.observability.gpu import GpuReading

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BudgetReading:
    budget: str
    target: str  # "*" for a global budget, else the deployment or provider it counts
    window: str
    spent_usd: float
    reserved_usd: float
    limit_usd: float | None


@dataclass(frozen=True, slots=True)
class DeploymentReading:
    deployment: str
    tier: str
    provider: str
    local: bool
    up: bool  # breaker closed and, for a managed local model, its file present and the model not failed


@dataclass(frozen=True, slots=True)
class LocalModelReading:
    model: str
    state: str
    memory_bytes: int  # what it holds while loaded (estimated from the GGUF when not configured)
    loaded: bool


@dataclass(frozen=True, slots=True)
class ScrapeSnapshot:
    budgets: tuple[BudgetReading, ...] = ()
    sessions_live: int = 0
    sessions_killed: int = 0
    deployments: tuple[DeploymentReading, ...] = ()
    local_models: tuple[LocalModelReading, ...] = ()
    local_memory_budget_bytes: int | None = None
    queues: Mapping[str, int] = field(default_factory=dict)
    gpus: tuple[GpuReading, ...] = ()
    local_tokens_per_second: Mapping[str, float] = field(default_factory=dict)


class LocalThroughput:
    """Output tokens per second of generation time per local deployment, between two scrapes.

    From the per-request counters (tokens out, request seconds) already kept: the
    ratio of their growth since the last scrape. No request since then: the last figure stays.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, float]] = {}
        self._rate: dict[str, float] = {}

    def update(self, totals: Mapping[str, tuple[int, float]]) -> dict[str, float]:
        """``totals``: deployment -> (tokens out so far, request seconds so far)."""
        for name, (tokens, seconds) in totals.items():
            t0, s0 = self._last.get(name, (0, 0.0))
            if seconds > s0:
                self._rate[name] = (tokens - t0) / (seconds - s0)
            self._last[name] = (tokens, seconds)
        return dict(self._rate)


class ScrapeCollector(Collector):
    def __init__(self) -> None:
        self.snapshot = ScrapeSnapshot()
        self.throughput = LocalThroughput()

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        remaining = GaugeMetricFamily(
            "tiergate_budget_remaining_usd",
            "USD left in a budget's current window (limit less spent and reserved); budgets with limit_usd",
            labels=["budget", "target"],
        )
        limit = GaugeMetricFamily(
            "tiergate_budget_limit_usd", "A budget's limit_usd per window", labels=["budget", "target"]
        )
        spent = GaugeMetricFamily(
            "tiergate_budget_spent_usd", "USD spent in a budget's current window", labels=["budget", "target"]
        )
        for b in s.budgets:
            labels = [b.budget, b.target]
            spent.add_metric(labels, b.spent_usd)
            if b.limit_usd is not None:
                limit.add_metric(labels, b.limit_usd)
                remaining.add_metric(labels, max(0.0, b.limit_usd - b.spent_usd - b.reserved_usd))
        yield from (remaining, limit, spent)
        sessions = GaugeMetricFamily(
            "tiergate_sessions", "Sessions the guardian holds, by state (live, killed)", labels=["state"]
        )
        sessions.add_metric(["live"], s.sessions_live)
        sessions.add_metric(["killed"], s.sessions_killed)
        yield sessions
        info = GaugeMetricFamily(
            "tiergate_deployment_info",
            "1 per deployment: its tier, provider and locality",
            labels=["deployment", "tier", "provider", "local"],
        )
        up = GaugeMetricFamily(
            "tiergate_deployment_up",
            "1 while a deployment can be routed to (breaker closed; a local model's file present, not failed)",
            labels=["deployment", "tier", "local"],
        )
        for d in s.deployments:
            local = "true" if d.local else "false"
            info.add_metric([d.deployment, d.tier, d.provider, local], 1)
            up.add_metric([d.deployment, d.tier, local], 1 if d.up else 0)
        yield from (info, up)
        memory = GaugeMetricFamily(
            "tiergate_local_model_memory_bytes",
            "Memory a local model holds while loaded (0 when not)",
            labels=["model"],
        )
        for m in s.local_models:
            memory.add_metric([m.model], m.memory_bytes if m.loaded else 0)
        yield memory
        if s.local_memory_budget_bytes is not None:
            yield GaugeMetricFamily(
                "tiergate_local_memory_budget_bytes",
                "Memory the local models may use together (local_models.budget_mb)",
                value=s.local_memory_budget_bytes,
            )
        tps = GaugeMetricFamily(
            "tiergate_local_tokens_per_second",
            "Output tokens per second of request time on a local deployment, since the previous scrape",
            labels=["deployment"],
        )
        for name, rate in s.local_tokens_per_second.items():
            tps.add_metric([name], rate)
        yield tps
        queue = GaugeMetricFamily(
            "tiergate_queue_depth",
            "Requests waiting: for a max_concurrent slot (concurrency_limit), for a local model to load (local_model)",
            labels=["queue"],
        )
        for name, n in s.queues.items():
            queue.add_metric([name], n)
        yield queue
        if s.gpus:  # no GPU, no nvidia-smi: these series are absent
            yield from self._gpu_families(s.gpus)

    @staticmethod
    def _gpu_families(gpus: tuple[GpuReading, ...]) -> Iterator[Metric]:
        used = GaugeMetricFamily("tiergate_gpu_memory_used_bytes", "GPU memory in use (nvidia-smi)", labels=["gpu"])
        total = GaugeMetricFamily("tiergate_gpu_memory_total_bytes", "GPU memory (nvidia-smi)", labels=["gpu"])
        util = GaugeMetricFamily(
            "tiergate_gpu_utilization_ratio", "GPU busy share, 0 to 1 (nvidia-smi utilization.gpu)", labels=["gpu"]
        )
        for g in gpus:
            if g.memory_used_bytes is not None:
                used.add_metric([g.gpu], g.memory_used_bytes)
            if g.memory_total_bytes is not None:
                total.add_metric([g.gpu], g.memory_total_bytes)
            if g.utilization_ratio is not None:
                util.add_metric([g.gpu], g.utilization_ratio)
        yield from (used, total, util)
