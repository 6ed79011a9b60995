"""Instructions per traced request: N requests' spans (a request span, one attempt span) made and handed to a
batch span processor with a null exporter. Count under callgrind for N=0 and N=2000 and take the difference
(docs/decisions/0009-tracing-spans.md):

  valgrind --tool=callgrind --callgrind-out-file=out.N .venv/bin/python bench/tracing_spans.py N
"""

from __future__ import annotations

import os
import sys
import time

from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from tiergate.core.catalog import Deployment
from tiergate.core.types import Usage
from tiergate.observability.tracing import Tracing

CHEAP = Deployment(
    name="cheap",
    provider="cheapco",
    api="openai-chat",
    base_url="http://127.0.0.1:9/v1",
    model="gpt-4o-mini",
    tier=1,
    local=False,
    context_window=128000,
    max_output_tokens=4096,
    input_per_mtok=0.15,
    output_per_mtok=0.6,
)


class NullExporter(SpanExporter):
    def export(self, spans):  # type: ignore[no-untyped-def]
        return SpanExportResult.SUCCESS


def main() -> None:
    tracing = Tracing()
    tracing._processors.append(BatchSpanProcessor(NullExporter(), schedule_delay_millis=3_600_000))

    def one() -> None:
        t = tracing.begin(time.perf_counter())
        t.attempt(CHEAP, time.perf_counter(), "ok")
        tracing.finish(
            t,
            request_id="r1",
            protocol="openai-chat",
            requested_model="auto",
            deployment=CHEAP,
            usage=Usage(10, 5),
            status=200,
            cost=0.001,
            error=None,
        )

    for _ in range(200):  # warm
        one()
    for _ in range(int(sys.argv[1])):
        one()
    os._exit(0)  # not the processor's shutdown: its export is not what is counted


if __name__ == "__main__":
    main()
