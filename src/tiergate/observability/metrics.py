"""Every Prometheus metric, defined in one place, on a registry owned by the app."""

from __future__ import annotations

from typing import TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from tiergate.observability.gpu import GpuProbe
from tiergate.observability.request_metrics import DEFAULT_MAX_LABEL_VALUES, RequestMetrics
from tiergate.observability.scrape import ScrapeCollector

M = TypeVar("M", bound=MetricWrapperBase)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
        gpu: GpuProbe | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}
        r = self.registry
        # requests, latency, time to first token, overhead, tokens and spend: written per request, so kept
        # without prometheus_client's locks (tiergate.observability.request_metrics)
        self.per_request = RequestMetrics(LATENCY_BUCKETS, OVERHEAD_BUCKETS, max_label_values=max_label_values)
        r.register(self.per_request)
        # budgets, sessions, deployments, local memory, queues, GPUs: read at scrape time (api/metrics_scrape.py)
        self.scraped = ScrapeCollector()
        r.register(self.scraped)
        self.gpu = gpu or GpuProbe()
        self.attempt_failures = Counter(
            "tiergate_attempt_failures",
            "Failed upstream attempts, by deployment and kind",
            ["deployment", "kind"],
            registry=r,
        )
        self.gate_failures = Counter(
            "tiergate_gate_failures",
            "Answers that failed a quality gate (paid for; the request escalated or was served anyway)",
            ["deployment", "gate"],
            registry=r,
        )
        self.fallbacks = Counter(
            "tiergate_fallbacks", "Requests served by a later candidate", ["deployment"], registry=r
        )
        self.breaker_open = Gauge(
            "tiergate_breaker_open", "1 while a deployment's breaker is open", ["deployment"], registry=r
        )
        self.dependency_up = Gauge(
            "tiergate_dependency_up",
            "1 while a shared dependency (state: Redis, ledger: database) is reachable",
            ["dependency"],
            registry=r,
        )
        self.outage_decisions = Counter(
            "tiergate_outage_decisions",
            "Requests handled while a dependency was down, by concern, mode and decision",
            ["concern", "mode", "decision"],
            registry=r,
        )
        self.rate_limited = Counter(
            "tiergate_rate_limited",
            "Requests refused by a limits[] line, by scope (key, agent) and limit (rpm, tpm, max_concurrent)",
            ["scope", "limit"],
            registry=r,
        )
        self.limits_unchecked = Counter(
            "tiergate_limits_unchecked",
            "Requests admitted without a limit check: shared state unreachable and on_outage.limits is fail_open",
            registry=r,
        )
        self.unknown_tasks = Counter(
            "tiergate_unknown_tasks",
            "Requests naming a task the config does not define (routed as tier>=0, told in X-Tiergate-Warning)",
            registry=r,
        )
        self.auth_failures = Counter(
            "tiergate_auth_failures",
            "Missing or wrong API keys, by outcome: refused (401) or throttled (429, auth.max_failures_per_minute)",
            ["outcome"],
            registry=r,
        )
        self.ledger_pending = Gauge(
            "tiergate_ledger_pending_records", "Usage records queued for the ledger", registry=r
        )
        # the serving layer (tiergate.client_protocol): client sockets it closed or refused, and why
        self.client_connections = Gauge("tiergate_client_connections", "Open client connections", registry=r)
        self.client_timeouts = Counter(
            "tiergate_client_timeouts",
            "Client connections closed by a server.*_timeout_s deadline, by phase (header, body, idle)",
            ["phase"],
            registry=r,
        )
        self.connections_shed = Counter(
            "tiergate_connections_shed",
            "Connections at server.max_connections: an idle one closed for a new one (evicted), "
            "a new one answered 503 (refused) or closed unread (dropped)",
            ["action"],
            registry=r,
        )
        self.malformed_requests = Counter(
            "tiergate_malformed_requests",
            "Requests the HTTP parser refused (answered 400), by kind",
            ["kind"],
            registry=r,
        )
        # the ledger writer thread (tiergate.guardrails.ledger_watch): failing, behind, records kept aside
        self.ledger_writer_ok = Gauge(
            "tiergate_ledger_writer_ok",
            "1 while the ledger writer thread runs, its last batch was written and it is not behind",
            registry=r,
        )
        self.ledger_writer_lag = Gauge(
            "tiergate_ledger_writer_lag_seconds",
            "How long queued ledger records have waited without a batch written (0 when idle)",
            registry=r,
        )
        self.ledger_write_failures = Counter(
            "tiergate_ledger_write_failures", "Ledger batches whose write failed (their records were kept)", registry=r
        )
        self.ledger_quarantined = Counter(
            "tiergate_ledger_quarantined",
            "Ledger records the database refused, kept in the quarantine table or file with the reason",
            registry=r,
        )
        self.sessions_tracked = Gauge("tiergate_sessions_tracked", "Sessions the guardian holds in memory", registry=r)
        self.sessions_evicted = Counter(
            "tiergate_sessions_evicted",
            "Sessions dropped from memory past guardian.max_tracked_sessions (least recently used; kept in the ledger)",
            registry=r,
        )

    def child(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, memoised: the per-request path skips prometheus's validation and lock."""
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return cast(M, c)  # memoised under this metric's id: a child of the same type

    def render(self) -> bytes:
        return generate_latest(self.registry)
