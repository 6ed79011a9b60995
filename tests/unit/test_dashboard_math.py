"""The dashboard's arithmetic (core/dashboard.py): budget forecasts, percentiles, rates, per-minute series."""

from __future__ import annotations

import pytest

from tiergate.core.dashboard import (
    Forecast,
    TrafficRow,
    bucket_quantile,
    by_deployment,
    context_level,
    forecast,
    percentile,
    rates,
    series,
    shares,
)

H = 3600.0
DAY_START, DAY_END = 0.0, 24 * H


@pytest.mark.parametrize(
    ("spent", "limit", "now", "expected"),
    [
        # $2 spent in the first 10 h of a $5 day: $0.2/h, the last $3 last 15 h -> runs out at 25 h: lasts the day
        (2.0, 5.0, 10 * H, Forecast("lasts", 0.2, None, 0.4)),
        # $4 in the first 8 h of a $5 day: $0.5/h, the last $1 in 2 h -> runs out at 10:00
        (4.0, 5.0, 8 * H, Forecast("runs out", 0.5, 10 * H, 0.8)),
        # at or over the limit: exhausted now
        (5.0, 5.0, 8 * H, Forecast("exhausted", 5.0 / 8, 8 * H, 1.0)),
        (6.0, 5.0, 8 * H, Forecast("exhausted", 0.75, 8 * H, 1.2)),
        # nothing spent: idle, no forecast
        (0.0, 5.0, 8 * H, Forecast("idle", 0.0, None, 0.0)),
        # no dollar limit (a calls-only budget): the rate, no forecast
        (1.0, None, 2 * H, Forecast("no limit", 0.5, None, None)),
        # the first seconds of a window count as a minute: $0.01 in 5 s is $0.6/h, not $7.2/h
        (0.01, 50.0, 5.0, Forecast("lasts", 0.6, None, 0.0002)),
        # the same rate against a $5 limit: $4.99 left at $0.6/h runs out 8.32 h later, inside the day
        (0.01, 5.0, 5.0, Forecast("runs out", 0.6, 5.0 + 4.99 / 0.6 * H, 0.002)),
    ],
)
def test_forecast(spent, limit, now, expected):
    got = forecast(spent, limit, window_start=DAY_START, window_end=DAY_END, now=now)
    assert got.status == expected.status
    assert got.rate_usd_per_hour == pytest.approx(expected.rate_usd_per_hour)
    assert got.runs_out_at == (pytest.approx(expected.runs_out_at) if expected.runs_out_at is not None else None)
    assert got.used_share == (pytest.approx(expected.used_share) if expected.used_share is not None else None)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([7.0], 95, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),  # nearest rank: ceil(0.5 * 4) = 2nd
        ([4.0, 1.0, 3.0, 2.0], 95, 4.0),  # unordered input
        ([float(i) for i in range(1, 101)], 95, 95.0),
        ([float(i) for i in range(1, 101)], 50, 50.0),
    ],
)
def test_percentile(values, q, expected):
    assert percentile(values, q) == expected


def row(ts, kind="request", dep="a", tier=0, cost=0.0, lat=10.0, status=200, reason="r"):
    return TrafficRow(ts, kind, dep, tier, cost, lat, status, reason)


def test_rates_count_only_the_window_and_split_errors_and_gate_escalations():
    rows = [
        row(1000.0, lat=10),
        row(1100.0, lat=30),
        row(1200.0, status=503, lat=9999),  # an error: counted, its latency left out
        row(1250.0, kind="attempt", reason="gate failed"),  # a gate escalation, not a request
        row(1260.0, kind="attempt", reason="upstream 500"),  # a retry: neither
        row(500.0, lat=1),  # before the window
    ]
    r = rates(rows, now=1300.0, window_s=600.0)
    assert (r.requests, r.errors, r.gate_escalations) == (3, 1, 1)
    assert r.requests_per_minute == pytest.approx(0.3)
    assert r.error_rate == pytest.approx(1 / 3)
    assert (r.latency_p50_ms, r.latency_p95_ms) == (10, 30)
    empty = rates([], now=1300.0, window_s=600.0)
    assert (empty.requests, empty.error_rate, empty.latency_p50_ms) == (0, 0.0, None)


def test_per_deployment_traffic():
    rows = [
        row(1.0, dep="a", cost=0.1, lat=5),
        row(2.0, dep="a", cost=0.2, status=502, lat=100),
        row(3.0, dep="a", kind="attempt", cost=0.05),
        row(4.0, dep="b", lat=7),
        row(5.0, dep=None, status=503),  # no deployment reached: not any deployment's
    ]
    got = by_deployment(rows)
    assert set(got) == {"a", "b"}
    a = got["a"]
    assert (a.requests, a.errors, a.failed_attempts) == (2, 1, 1)
    assert a.cost_usd == pytest.approx(0.35) and a.error_rate == 0.5 and a.latency_p50_ms == 5
    assert (got["b"].requests, got["b"].latency_p95_ms) == (1, 7)


def test_series_buckets_per_minute_per_tier():
    now = 10 * 60.0 + 30  # inside the minute starting at 600
    rows = [
        row(600.0, tier=0, lat=10),
        row(610.0, tier=1, cost=0.5, lat=20),
        row(545.0, tier=1, cost=0.25, lat=40),  # the minute before
        row(550.0, tier=1, kind="attempt", cost=0.1, reason="gate failed"),  # billed, not a request
        row(100.0, tier=0),  # older than the span
    ]
    s = series(rows, now=now, span_s=180.0, bucket_s=60.0)
    assert s.t == [480.0, 540.0, 600.0]
    assert s.requests_by_tier == {"tier 0": [0, 0, 1], "tier 1": [0, 1, 1]}
    assert s.cost_by_tier["tier 1"] == pytest.approx([0.0, 0.35, 0.5])
    assert s.cost_by_tier["tier 0"] == [0.0, 0.0, 0.0]
    assert s.latency_p50_ms == [None, 40, 10]


@pytest.mark.parametrize(
    ("ratio", "level"), [(0.0, "ok"), (0.79, "ok"), (0.8, "warn"), (0.949, "warn"), (0.95, "high"), (1.2, "high")]
)
def test_context_level(ratio, level):
    assert context_level(ratio, (0.8, 0.95)) == level


def test_shares():
    assert shares({"a": 1.0, "b": 3.0}) == {"a": 0.25, "b": 0.75}
    assert shares({"a": 0.0}) == {"a": 0.0}


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        ([0, 0, 0, 0], 50, None),  # nothing observed
        ([5, 0, 0, 0], 95, 0.001),  # all in the first bucket
        ([1, 1, 1, 1], 50, 0.002),  # the 2nd of 4 lies in the 2nd bucket
        ([1, 1, 1, 1], 95, float("inf")),  # past the last bound
        ([90, 5, 5, 0], 95, 0.002),
    ],
)
def test_bucket_quantile(counts, q, expected):
    assert bucket_quantile((0.001, 0.002, 0.005), counts, q) == expected
