"""The lock-free per-request series render exactly what prometheus_client's own metrics would."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram

from tiergate.observability.metrics import LATENCY_BUCKETS, OVERHEAD_BUCKETS, Metrics


def samples(registry: CollectorRegistry, prefix: str) -> dict[tuple, float]:
    """(sample name, labels) -> value for every sample of the families named prefix*; _created samples dropped."""
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.startswith(prefix) and not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_same_samples_as_prometheus_client_metrics():
    rng = random.Random(7)
    ours = Metrics()
    ours.per_request.tier_of = lambda name: "1"  # the app reads it from the catalog
    ref = CollectorRegistry()
    requests = Counter("tiergate_requests", "r", ["deployment", "tier", "status"], registry=ref)
    latency = Histogram("tiergate_request_seconds", "l", ["deployment"], buckets=LATENCY_BUCKETS, registry=ref)
    ttft = Histogram("tiergate_time_to_first_token_seconds", "t", ["deployment"], buckets=LATENCY_BUCKETS, registry=ref)
    overhead = Histogram("tiergate_overhead_seconds", "o", buckets=OVERHEAD_BUCKETS, registry=ref)
    tokens = Counter("tiergate_tokens", "k", ["deployment", "direction"], registry=ref)
    cost = Counter("tiergate_cost_usd", "c", ["deployment", "tier"], registry=ref)
    # values on the bucket bounds themselves, and random ones around them
    values = (
        list(LATENCY_BUCKETS) + [rng.uniform(0, 150) for _ in range(300)] + [rng.uniform(0, 0.02) for _ in range(300)]
    )
    for i, seconds in enumerate(values):
        d, status = rng.choice(["local-8b", "cloud"]), rng.choice(["200", "502"])
        t_in, t_out, usd = rng.randint(0, 5000), rng.randint(0, 500), rng.choice([0.0, rng.uniform(0, 0.01)])
        ttft_s = None if i % 3 else seconds / 10
        ours.per_request.answered(
            d, "1", status, seconds=seconds, tokens_in=t_in, tokens_out=t_out, cost=usd, ttft_s=ttft_s
        )
        requests.labels(d, "1", status).inc()
        latency.labels(d).observe(seconds)
        tokens.labels(d, "in").inc(t_in)
        tokens.labels(d, "out").inc(t_out)
        if usd:
            cost.labels(d, "1").inc(usd)
        if ttft_s is not None:
            ttft.labels(d).observe(ttft_s)
        oh = OVERHEAD_BUCKETS[i % len(OVERHEAD_BUCKETS)] if i % 2 else seconds / 1000
        ours.per_request.observe_overhead(oh)
        overhead.observe(oh)
    ours.per_request.count("none", "", "503")
    requests.labels("none", "", "503").inc()
    for prefix in (
        "tiergate_requests",
        "tiergate_request_seconds",
        "tiergate_time_to_first_token_seconds",
        "tiergate_overhead_seconds",
        "tiergate_tokens",
        "tiergate_cost_usd",
    ):
        got, want = samples(ours.registry, prefix), samples(ref, prefix)
        assert got.keys() == want.keys(), prefix
        for k, v in want.items():
            assert abs(got[k] - v) <= 1e-9 * max(1.0, abs(v)), (k, got[k], v)


def test_agent_and_task_labels_are_capped_and_the_rest_is_other():
    """Agent and task names come from client headers: past the cap they are one "other" series, spend intact."""
    m = Metrics(max_label_values=3)
    m.per_request.tier_of = {"cloud": "2"}.__getitem__
    for i in range(10):
        m.per_request.answered(
            "cloud", "2", "200", seconds=0.1, tokens_in=1, tokens_out=1, cost=0.5, ttft_s=None, agent=f"a{i}", task="t"
        )
    m.per_request.answered("cloud", "2", "200", seconds=0.1, tokens_in=1, tokens_out=1, cost=0.25, ttft_s=None)
    m.per_request.answered(
        "cloud", "2", "200", seconds=0.1, tokens_in=1, tokens_out=1, cost=1.0, ttft_s=None, agent="a1", task="t"
    )
    agents = {dict(k[1])["agent"]: v for k, v in samples(m.registry, "tiergate_agent_cost_usd").items()}
    assert agents == {"a0": 0.5, "a1": 1.5, "a2": 0.5, "other": 3.75}  # a known name keeps its series past the cap
    tasks = {dict(k[1])["task"]: v for k, v in samples(m.registry, "tiergate_task_cost_usd").items()}
    assert tasks == {"t": 6.0, "none": 0.25}
    assert samples(m.registry, "tiergate_cost_usd_total") == {
        ("tiergate_cost_usd_total", (("deployment", "cloud"), ("tier", "2"))): 6.25
    }
