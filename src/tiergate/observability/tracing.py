"""OpenTelemetry traces of requests with the GenAI semantic conventions; built only when configured.

One server span per request and one client span per upstream attempt under it.
They are written once the request is settled, from what it noted on the way
(``RequestTrace``: when it began, each attempt's deployment, times and outcome),
with explicit start and end times: the request path holds no span open, and a
request that is not traced (tracing off) carries ``None`` instead, checked at
three places (docs/observability.md). opentelemetry is imported only here, and
this module only when ``observability.tracing`` is set.

An attempt's span ends when its answer's head (a stream's first event) was in;
the request's span when the answer was settled (a stream relayed to its end).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tiergate.core.catalog import Deployment
from tiergate.core.types import Usage

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

# gen_ai.operation.name by the client's protocol (embeddings surfaces say so; every chat-like one is chat)
OPERATIONS = {
    "openai-embeddings": "embeddings",
    "ollama-embed": "embeddings",
    "ollama-embeddings": "embeddings",
    "gemini-embed": "embeddings",
    "gemini-batch-embed": "embeddings",
    "ollama-generate": "text_completion",
    "google-generative-ai": "generate_content",
}
# gen_ai.provider.name by the upstream protocol a deployment speaks (the semantic conventions' well-known values)
PROVIDERS = {
    "openai-chat": "openai",
    "openai-responses": "openai",
    "anthropic-messages": "anthropic",
    "google-generative-ai": "gcp.gemini",
    "bedrock-converse": "aws.bedrock",
    "ollama": "ollama",
}


class RequestTrace:
    """What one traced request noted for its spans: when it began, and each upstream attempt."""

    __slots__ = ("attempts", "start_ns")

    def __init__(self, started: float) -> None:
        self.start_ns = time.time_ns() - int((time.perf_counter() - started) * 1e9)  # arrival (perf_counter)
        self.attempts: list[tuple[Deployment, int, int, str, str | None]] = []

    def attempt(self, d: Deployment, started: float, outcome: str, error_type: str | None = None) -> None:
        """An attempt on ``d`` that began at ``started`` (perf_counter) ended now: ok, gate_failed or failed."""
        now_ns = time.time_ns()
        took_ns = int((time.perf_counter() - started) * 1e9)
        self.attempts.append((d, now_ns - took_ns, now_ns, outcome, error_type))


class Tracing:
    """The tracer provider: OTLP/HTTP export when an endpoint is set; ``exporter`` adds one (tests)."""

    def __init__(
        self,
        *,
        service_name: str = "tiergate",
        endpoint: str | None = None,
        headers: dict[str, str] | None = None,
        sample_ratio: float = 1.0,
        exporter: SpanExporter | None = None,
    ) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        self._provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}),
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        )
        if endpoint is not None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            otlp = OTLPSpanExporter(endpoint=endpoint, headers=dict(headers or {}), timeout=10)
            self._provider.add_span_processor(BatchSpanProcessor(otlp))  # exported off the event loop
        if exporter is not None:
            self._provider.add_span_processor(SimpleSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("tiergate")
        self._in_context = trace.set_span_in_context
        self._server, self._client = trace.SpanKind.SERVER, trace.SpanKind.CLIENT
        self._error = trace.Status(trace.StatusCode.ERROR)

    def begin(self, started: float) -> RequestTrace:
        return RequestTrace(started)

    def finish(
        self,
        t: RequestTrace,
        *,
        request_id: str,
        protocol: str,
        requested_model: str,
        deployment: Deployment | None,
        usage: Usage,
        status: int,
        cost: float,
        error: str | None,
    ) -> None:
        """The request's span and its attempts' spans, written now with the times they noted."""
        op = OPERATIONS.get(protocol, "chat")
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": op,
            "gen_ai.request.model": requested_model,
            "http.response.status_code": status,
            "tiergate.request_id": request_id,
            "tiergate.protocol": protocol,
            "tiergate.cost_usd": cost,
            "tiergate.attempts": len(t.attempts),
        }
        if deployment is not None:
            attrs.update(
                {
                    "gen_ai.response.model": deployment.model,
                    "gen_ai.provider.name": PROVIDERS.get(deployment.api, deployment.provider),
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.completion_tokens,
                    "tiergate.deployment": deployment.name,
                    "tiergate.tier": deployment.tier,
                    "tiergate.local": deployment.local,
                }
            )
        span = self._tracer.start_span(
            f"{op} {requested_model}", kind=self._server, start_time=t.start_ns, attributes=attrs
        )
        parent = self._in_context(span)
        for d, start_ns, end_ns, outcome, error_type in t.attempts:
            a: dict[str, Any] = {
                "gen_ai.operation.name": op,
                "gen_ai.request.model": d.model,
                "gen_ai.provider.name": PROVIDERS.get(d.api, d.provider),
                "tiergate.deployment": d.name,
                "tiergate.tier": d.tier,
                "tiergate.attempt.outcome": outcome,
            }
            if error_type is not None:
                a["error.type"] = error_type
            child = self._tracer.start_span(
                f"{op} {d.model}", context=parent, kind=self._client, start_time=start_ns, attributes=a
            )
            if outcome == "failed":
                child.set_status(self._error)
            child.end(end_time=end_ns)
        if status >= 500 or error is not None and deployment is None:
            span.set_attribute("error.type", str(status))
            span.set_status(self._error)
        span.end()

    def shutdown(self) -> None:
        """Export what is left (blocking: call it off the event loop)."""
        self._provider.shutdown()
