"""OpenTelemetry traces of real requests: the gateway app served over real HTTP in this process, so the
SDK's in-memory exporter sees its spans; stand-in upstreams in their own processes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import openai
import pytest
from aiohttp import web

from procs import CHEAP_KEY, MASTER_KEY, cli_env, tiered_config

pytest.importorskip("opentelemetry.sdk", reason="the tracing extra (make venv installs it)")

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tiergate.app import create_app
from tiergate.config.loading import config_from_dict

MSG = [{"role": "user", "content": "classify this: the invoice is overdue"}]


@contextmanager
def served(config: dict, tmp_path, exporter: InMemorySpanExporter | None) -> Iterator[str]:
    """``create_app`` on a real socket in a thread of its own (what ``tiergate serve`` runs, minus the signals)."""
    config = {"ledger": f"sqlite:///{tmp_path / 'ledger.db'}", **config}
    cfg = config_from_dict(config, env=cli_env({"CHEAP_KEY": CHEAP_KEY}))
    loop = asyncio.new_event_loop()
    started: dict[str, object] = {}
    ready = threading.Event()

    async def start() -> web.AppRunner:
        runner = web.AppRunner(create_app(cfg, span_exporter=exporter))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        started["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            started["runner"] = loop.run_until_complete(start())
        except BaseException as exc:  # reported to the test
            started["error"] = exc
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(60), "the gateway did not start within 60 s"
    if "error" in started:
        raise started["error"]  # type: ignore[misc]
    try:
        yield f"http://127.0.0.1:{started['port']}"
    finally:
        runner = started["runner"]
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)  # type: ignore[attr-defined]
        loop.call_soon_threadsafe(loop.stop)
        thread.join(60)
        loop.close()


def traced(config: dict) -> dict:
    return {**config, "observability": {"tracing": {"service_name": "tiergate-test"}}}


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)


def test_a_failover_is_one_request_span_over_two_attempt_spans(standins, tmp_path):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    local.faults({"mode": "status", "status": 500, "times": 5})
    exporter = InMemorySpanExporter()
    with served(traced(tiered_config(local, cheap, num_retries=0)), tmp_path, exporter) as url:
        raw = client(url).chat.completions.with_raw_response.create(
            model="auto", messages=MSG, extra_headers={"X-Request-ID": "trace-me-1"}
        )
        reply = raw.parse()
        assert raw.headers["x-tiergate-deployment"] == "cheap"
    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if s.kind == SpanKind.SERVER]
    attempts = sorted((s for s in spans if s.kind == SpanKind.CLIENT), key=lambda s: s.start_time)
    assert len(spans) == 3 and len(attempts) == 2
    assert request.name == "chat auto"
    a = request.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "auto"
    assert a["gen_ai.response.model"] == "gpt-4o-mini"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens > 0
    assert a["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens > 0
    assert a["tiergate.tier"] == 1 and a["tiergate.deployment"] == "cheap"
    assert a["tiergate.cost_usd"] == pytest.approx(float(raw.headers["x-tiergate-cost-usd"]), rel=1e-6)
    assert a["http.response.status_code"] == 200
    assert a["tiergate.request_id"] == "trace-me-1"
    assert request.resource.attributes["service.name"] == "tiergate-test"
    failed, served_by = attempts
    for s in attempts:
        assert s.parent is not None and s.parent.span_id == request.context.span_id
        assert s.context.trace_id == request.context.trace_id
        assert request.start_time <= s.start_time <= s.end_time <= request.end_time
    assert failed.attributes["tiergate.deployment"] == "local-8b"
    assert failed.attributes["tiergate.attempt.outcome"] == "failed"
    assert failed.attributes["error.type"] == "500"
    assert failed.status.status_code == StatusCode.ERROR
    assert served_by.attributes["tiergate.deployment"] == "cheap"
    assert served_by.attributes["tiergate.attempt.outcome"] == "ok"
    assert served_by.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert served_by.end_time <= request.end_time


def test_a_request_no_deployment_answered_is_an_error_span(standins, tmp_path):
    local = standins(name="local", models=["llama-8b"])
    local.faults({"mode": "status", "status": 500, "times": 5})
    exporter = InMemorySpanExporter()
    with served(traced(tiered_config(local, None, num_retries=0)), tmp_path, exporter) as url:
        with pytest.raises(openai.APIStatusError) as err:
            client(url).chat.completions.create(model="auto", messages=MSG, stream=True)
        assert err.value.status_code >= 500
    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert request.status.status_code == StatusCode.ERROR
    assert request.attributes["http.response.status_code"] == err.value.status_code
    assert "gen_ai.response.model" not in request.attributes
    assert [s.attributes["tiergate.attempt.outcome"] for s in spans if s.kind == SpanKind.CLIENT] == ["failed"]


def test_no_tracing_config_no_spans_and_no_tracer(standins, tmp_path):
    local = standins(name="local", models=["llama-8b"])
    exporter = InMemorySpanExporter()
    with served(tiered_config(local, None), tmp_path, exporter) as url:
        client(url).chat.completions.create(model="auto", messages=MSG)
    assert exporter.get_finished_spans() == ()


def test_tiergate_serve_exports_spans_over_otlp_http_when_an_endpoint_is_set(standins, gateway):
    """The real exporter, from a real ``tiergate serve``, to an OTLP/HTTP receiver: protobuf spans arrive."""
    import http.server

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from procs import http as call

    received: list[tuple[str, str, str | None, bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(
                (self.path, self.headers.get("Content-Type", ""), self.headers.get("x-collector-key"), body)
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        local = standins(name="local", models=["llama-8b"])
        cfg = tiered_config(local, None)
        cfg["observability"] = {"tracing": {"endpoint": "env:OTLP_URL", "headers": {"x-collector-key": "k1"}}}
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
        gw = gateway(cfg, env_extra={"CHEAP_KEY": CHEAP_KEY, "OTLP_URL": url})
        status, headers, _ = call(
            "POST",
            f"{gw.base_url}/v1/chat/completions",
            body=b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}',
            headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
        )
        assert status == 200
        assert gw.stop() == 0  # a graceful stop exports what is queued
    finally:
        server.shutdown()
    assert received, gw.log[-20:]
    spans = []
    for path, content_type, key, body in received:
        assert path == "/v1/traces" and content_type == "application/x-protobuf" and key == "k1"
        export = ExportTraceServiceRequest.FromString(body)
        for rs in export.resource_spans:
            service = {a.key: a.value.string_value for a in rs.resource.attributes}["service.name"]
            assert service == "tiergate"
            spans += [s for ss in rs.scope_spans for s in ss.spans]
    names = sorted(s.name for s in spans)
    assert names == ["chat auto", "chat llama-8b"], names
    request = next(s for s in spans if s.name == "chat auto")
    attrs = {a.key: a.value for a in request.attributes}
    assert attrs["tiergate.request_id"].string_value == headers["X-Request-ID"]
    assert attrs["gen_ai.usage.output_tokens"].int_value > 0
