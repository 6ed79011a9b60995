"""Spans as finished records: ids, parentage and sampling by trace id (TraceIdRatioBased's rule)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the tracing extra (make venv installs it)")

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tiergate.core.catalog import Deployment
from tiergate.core.types import Usage
from tiergate.observability.tracing import Tracing

LOCAL = Deployment(
    name="local-8b",
    provider="box",
    api="ollama",
    base_url="http://127.0.0.1:9",
    model="llama3.1:8b",
    tier=0,
    local=True,
    context_window=8192,
    max_output_tokens=2048,
    input_per_mtok=0.0,
    output_per_mtok=0.0,
)


def traced(ratio: float, n: int) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    tracing = Tracing(sample_ratio=ratio, exporter=exporter)
    for i in range(n):
        t = tracing.begin(time.perf_counter())
        t.attempt(LOCAL, time.perf_counter(), "ok")
        tracing.finish(
            t,
            request_id=f"r{i}",
            protocol="ollama-chat",
            requested_model="auto",
            deployment=LOCAL,
            usage=Usage(3, 4),
            status=200,
            cost=0.0,
            error=None,
        )
    return exporter


@pytest.mark.parametrize(("ratio", "low", "high"), [(0.0, 0, 0), (1.0, 1000, 1000), (0.5, 400, 600)])
def test_sample_ratio_keeps_that_share_of_requests_whole(ratio, low, high):
    spans = traced(ratio, 1000).get_finished_spans()
    requests = [s for s in spans if s.parent is None]
    assert low <= len(requests) <= high
    assert len(spans) == 2 * len(requests)  # a request is traced with its attempts, or not at all


def test_ids_are_unique_and_attempts_hang_under_their_request():
    spans = traced(1.0, 50).get_finished_spans()
    assert len({s.context.span_id for s in spans}) == 100
    by_id = {s.context.span_id: s for s in spans}
    for s in spans:
        if s.parent is not None:
            parent = by_id[s.parent.span_id]
            assert parent.parent is None and parent.context.trace_id == s.context.trace_id
            assert s.attributes["gen_ai.provider.name"] == "ollama"
    first = next(s for s in spans if s.parent is None)
    assert first.attributes["gen_ai.usage.output_tokens"] == 4 and first.attributes["tiergate.local"] is True
    assert first.start_time <= first.end_time


def test_without_tracing_configured_opentelemetry_is_never_imported():
    """The gateway with its app built and a request's context made: no opentelemetry module loaded."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from tiergate.app import create_app\n"
        "from tiergate.cli.serve import serve\n"
        "from tiergate.config.loading import config_from_dict\n"
        "create_app(config_from_dict({'auth': {'required': False}, 'ledger': 'sqlite:///:memory:'}))\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
