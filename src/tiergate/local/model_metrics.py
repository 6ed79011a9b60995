"""Prometheus metrics of the local model manager, on the app's registry (see metrics.py)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
STATES = ("stopped", "queued", "loading", "ready", "busy", "unloading", "failed")


class LocalModelMetrics:
    def __init__(self, registry: CollectorRegistry, models: Iterable[str]) -> None:
        r = registry
        self.loads = Counter("tiergate_local_model_loads", "Local model loads that became ready", ["model"], registry=r)
        self.load_failures = Counter(
            "tiergate_local_model_load_failures", "Local model loads that failed", ["model"], registry=r
        )
        self.unloads = Counter(
            "tiergate_local_model_unloads",
            "Local model unloads, by reason (evicted, idle, crashed, stopped)",
            ["model", "reason"],
            registry=r,
        )
        self.swaps = Counter(
            "tiergate_local_model_swaps", "Models evicted to make room for another", ["evicted", "loaded"], registry=r
        )
        self.load_seconds = Histogram(
            "tiergate_local_model_load_seconds",
            "Time from load start to ready",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.state = Gauge(
            "tiergate_local_model_state", "1 for the state each local model is in", ["model", "state"], registry=r
        )
        self.in_flight = Gauge(
            "tiergate_local_model_in_flight", "Requests a local model is serving", ["model"], registry=r
        )
        self.gpu_busy = Gauge("tiergate_local_gpu_busy", "1 while other work holds the accelerator", registry=r)
        for name in models:
            self.set_state(name, "stopped")
            self.in_flight.labels(name).set(0)

    def set_state(self, model: str, state: str) -> None:
        for s in STATES:
            self.state.labels(model, s).set(1 if s == state else 0)
