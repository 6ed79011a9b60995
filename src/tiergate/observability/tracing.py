"""OpenTelemetry traces of requests with the GenAI semantic conventions; built only when configured.

One server span per request and one client span per upstream attempt under it.
They are written once the request is settled, from what it noted on the way
(``RequestTrace``: when it began, each attempt's deployment, times and outcome),
as finished span records: the request path holds no span open, and a
request that is not traced (tracing off) carries ``None`` instead, checked at
a few places (docs/observability.md). opentelemetry is imported only here, and
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
    """Finished spans handed to span processors: OTLP/HTTP export when an endpoint is set; ``exporter`` adds
    one (tests).

    The spans are ``ReadableSpan`` records built here, not made through the SDK's tracer: their times and
    attributes are all known when the request settles, and the tracer's live-span machinery (a lock and
    attribute checks per attribute, the context, the sampler) cost ~400k instructions per request with one
    attempt, against ~860k for the whole request (docs/decisions/0009-tracing-spans.md). Attribute values
    here are str, int, float or bool by construction. Sampling is by trace id, as TraceIdRatioBased does.
    """

    def __init__(
        self,
        *,
        service_name: str = "tiergate",
        endpoint: str | None = None,
        headers: dict[str, str] | None = None,
        sample_ratio: float = 1.0,
        exporter: SpanExporter | None = None,
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        self._processors: list[SpanProcessor] = []
        if endpoint is not None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            otlp = OTLPSpanExporter(endpoint=endpoint, headers=dict(headers or {}), timeout=10)
            self._processors.append(BatchSpanProcessor(otlp))  # exported in its own thread, in batches
        if exporter is not None:
            self._processors.append(SimpleSpanProcessor(exporter))
        self._resource = Resource.create({"service.name": service_name})
        self._scope = InstrumentationScope("tiergate")
        ids = RandomIdGenerator()
        self._trace_id, self._span_id = ids.generate_trace_id, ids.generate_span_id
        self._bound = round(sample_ratio * (1 << 64))  # TraceIdRatioBased: the trace id's low 64 bits below it
        self._span, self._context, self._sampled = ReadableSpan, SpanContext, TraceFlags(TraceFlags.SAMPLED)
        self._server, self._client = SpanKind.SERVER, SpanKind.CLIENT
        self._error, self._unset = Status(StatusCode.ERROR), Status(StatusCode.UNSET)

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
        """The request's span and its attempts' spans, from the times they noted, to every processor."""
        trace_id = self._trace_id()
        if (trace_id & 0xFFFFFFFFFFFFFFFF) >= self._bound:
            return  # not sampled
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
        failed = status >= 500 or (error is not None and deployment is None)
        if failed:
            attrs["error.type"] = str(status)
        ctx = self._context(trace_id, self._span_id(), False, self._sampled)
        spans = [
            self._span(
                f"{op} {requested_model}",
                context=ctx,
                resource=self._resource,
                attributes=attrs,
                kind=self._server,
                status=self._error if failed else self._unset,
                start_time=t.start_ns,
                end_time=time.time_ns(),
                instrumentation_scope=self._scope,
            )
        ]
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
            spans.append(
                self._span(
                    f"{op} {d.model}",
                    context=self._context(trace_id, self._span_id(), False, self._sampled),
                    parent=ctx,
                    resource=self._resource,
                    attributes=a,
                    kind=self._client,
                    status=self._error if outcome == "failed" else self._unset,
                    start_time=start_ns,
                    end_time=end_ns,
                    instrumentation_scope=self._scope,
                )
            )
        for p in self._processors:
            for span in spans:
                p.on_end(span)

    def shutdown(self) -> None:
        """Export what is left (blocking: call it off the event loop)."""
        for p in self._processors:
            p.shutdown()
