"""The per-request Prometheus series, kept in plain dicts and rendered at scrape time.

Every answered request updates requests, latency, tokens in and out, spend
(per deployment and tier, per agent, per task), time to first token and
gateway overhead. Through prometheus_client's metric
objects that was ~4.5 µs of lock-protected calls per request (measured,
docs/decisions/0003-hot-path.md); these series are written only from the event
loop's thread, so counters in dicts and bucket counts in lists do, and this
collector renders them with the same names, labels and buckets.

Agent and task names come from client headers, so their series are capped:
past ``max_label_values`` distinct names, new ones are counted as ``other``
(a scrape must not grow with whatever clients send).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_go_float: Callable[[float], str] = floatToGoString  # unannotated in prometheus_client; "+Inf", "0.5", "1.0"

OTHER = "other"  # the label value of agents and tasks past the cap
NONE = "none"  # no agent or task named by the request
DEFAULT_MAX_LABEL_VALUES = 50


def _no_tier(deployment: str) -> str:
    return ""


class Buckets:
    """One histogram series: counts per bucket (the last is +Inf) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self, n_bounds: int) -> None:
        self.counts = [0] * (n_bounds + 1)
        self.total = 0.0

    def observe(self, bounds: Sequence[float], value: float) -> None:
        self.counts[bisect_left(bounds, value)] += 1  # bisect_left: a value equal to a bound is in that bucket
        self.total += value

    def cumulative(self, bounds: Sequence[float]) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*bounds, float("inf")), list(self.counts), strict=True):
            running += n
            out.append((_go_float(bound), running))
        return out


class RequestMetrics(Collector):
    def __init__(
        self,
        latency_buckets: Sequence[float],
        overhead_buckets: Sequence[float],
        *,
        max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
    ) -> None:
        self.latency_bounds = tuple(latency_buckets)
        self.overhead_bounds = tuple(overhead_buckets)
        self.requests: dict[tuple[str, str, str], int] = {}  # (deployment, tier, status) -> count
        self.tokens: dict[tuple[str, str], int] = {}  # (deployment, "in" | "out") -> tokens
        self.cost: dict[str, float] = {}  # deployment -> USD; its tier label is looked up at scrape time
        self.tier_of: Callable[[str], str] = _no_tier  # deployment -> tier (the app sets it from the catalog)
        self.agent_cost: dict[str, float] = {}  # agent (capped) -> USD
        self.task_cost: dict[str, float] = {}  # task (capped) -> USD
        self.max_label_values = max(1, max_label_values)  # "other" makes one more
        self.latency: dict[str, Buckets] = {}
        self.ttft: dict[str, Buckets] = {}
        self.overhead = Buckets(len(self.overhead_bounds))

    def count(self, deployment: str, tier: str, status: str) -> None:
        key = (deployment, tier, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def answered(
        self,
        deployment: str,
        tier: str,
        status: str,
        *,
        seconds: float,
        tokens_in: int,
        tokens_out: int,
        cost: float,
        ttft_s: float | None,
        agent: str | None = None,
        task: str | None = None,
    ) -> None:
        """One finished request that reached a deployment."""
        self.count(deployment, tier, status)
        self._hist(self.latency, deployment).observe(self.latency_bounds, seconds)
        tokens = self.tokens
        tokens[(deployment, "in")] = tokens.get((deployment, "in"), 0) + tokens_in
        tokens[(deployment, "out")] = tokens.get((deployment, "out"), 0) + tokens_out
        if cost:
            self.spend(deployment, agent, task, cost)
        if ttft_s is not None:
            self._hist(self.ttft, deployment).observe(self.latency_bounds, ttft_s)

    def spend(self, deployment: str, agent: str | None, task: str | None, usd: float) -> None:
        """Money paid to a deployment: an answered request, or an answer paid for and not served (a gate).

        A name seen before costs one ``+=`` per series; a new one goes through ``_first``."""
        try:
            self.cost[deployment] += usd
        except KeyError:
            self.cost[deployment] = usd
        a, t = agent or NONE, task or NONE
        try:
            self.agent_cost[a] += usd
        except KeyError:
            self._first(self.agent_cost, a, usd)
        try:
            self.task_cost[t] += usd
        except KeyError:
            self._first(self.task_cost, t, usd)

    def _first(self, series: dict[str, float], name: str, usd: float) -> None:
        """A name without a series yet: its own while the cap leaves room, else counted as other."""
        if len(series) >= self.max_label_values:
            name = OTHER
        series[name] = series.get(name, 0.0) + usd

    def observe_overhead(self, seconds: float) -> None:
        self.overhead.observe(self.overhead_bounds, seconds)

    def _hist(self, series: dict[str, Buckets], deployment: str) -> Buckets:
        h = series.get(deployment)
        if h is None:
            h = series[deployment] = Buckets(len(self.latency_bounds))
        return h

    # ------------------------------------------------------------------ scrape
    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "tiergate_requests",
            "Requests finished, by deployment, tier and HTTP status",
            labels=["deployment", "tier", "status"],
        )
        for labels, n in dict(self.requests).items():
            requests.add_metric(list(labels), n)
        yield requests
        yield self._histograms("tiergate_request_seconds", "Total request time", self.latency)
        yield self._histograms("tiergate_time_to_first_token_seconds", "Time to first streamed event", self.ttft)
        overhead = HistogramMetricFamily("tiergate_overhead_seconds", "Gateway time: total minus upstream time")
        overhead.add_metric([], self.overhead.cumulative(self.overhead_bounds), sum_value=self.overhead.total)
        yield overhead
        tokens = CounterMetricFamily(
            "tiergate_tokens", "Tokens, by deployment and direction", labels=["deployment", "direction"]
        )
        for direction_labels, n in dict(self.tokens).items():
            tokens.add_metric(list(direction_labels), n)
        yield tokens
        cost = CounterMetricFamily(
            "tiergate_cost_usd", "Spend in USD, by deployment and tier", labels=["deployment", "tier"]
        )
        tier_of = self.tier_of
        for deployment, usd in dict(self.cost).items():
            cost.add_metric([deployment, tier_of(deployment)], usd)
        yield cost
        yield self._spend_by("tiergate_agent_cost_usd", "agent", self.agent_cost)
        yield self._spend_by("tiergate_task_cost_usd", "task", self.task_cost)

    def _spend_by(self, name: str, label: str, series: dict[str, float]) -> CounterMetricFamily:
        family = CounterMetricFamily(
            name,
            f"Spend in USD, by {label} (X-Tiergate-{label.title()}; past {self.max_label_values} names: {OTHER})",
            labels=[label],
        )
        for value, usd in dict(series).items():
            family.add_metric([value], usd)
        return family

    def _histograms(self, name: str, doc: str, series: dict[str, Buckets]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc, labels=["deployment"])
        for deployment, h in dict(series).items():
            family.add_metric([deployment], h.cumulative(self.latency_bounds), sum_value=h.total)
        return family
