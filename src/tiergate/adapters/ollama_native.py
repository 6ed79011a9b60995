"""The ``ollama`` protocol: an upstream that is itself an Ollama server, spoken to in its native API.

For Ollama clients (``/api/chat``, ``/api/generate``, ``/api/embed``) the
body is forwarded with the model rewritten and ``options.num_predict``
clamped to the deployment's limit (or set to a budget's output cap when the
client set none), so a real Ollama behind tiergate keeps its own tool-call
parsing, ``think``, ``format``, ``num_ctx`` and the rest. Streams are NDJSON,
read line by line with the same bounds as SSE events (line size, idle time,
total time); usage comes from the final object's ``prompt_eval_count`` and
``eval_count``, believed only when plausible, and is metered from the text
until then.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tiergate.adapters.base import (
    UpstreamReply,
    UpstreamStream,
    WatchedStream,
    classify_exception,
    error_from_response,
    post_for_json,
)
from tiergate.adapters.transport import UpstreamReplyStream, UpstreamTransport
from tiergate.adapters.upstream_http import USER_AGENT
from tiergate.adapters.usage import (
    NOTHING,
    Reported,
    billed,
    bound_of,
    doubt_note,
    stream_meter,
    text_bytes,
)
from tiergate.core.catalog import Deployment, ReadLimits
from tiergate.core.errors import AttemptError
from tiergate.core.money import believable_tokens
from tiergate.core.types import NO_HINTS, ClientHints, StreamStatus

API = "ollama"


def ollama_reported(obj: Any, bound: int, *, output: bool = True) -> Reported:
    """Ollama's counters: ``prompt_eval_count`` (0 when the prompt was cached whole, so absent reads as 0)."""
    if not isinstance(obj, dict):
        return NOTHING
    prompt = believable_tokens(obj.get("prompt_eval_count", 0), bound)
    completion = believable_tokens(obj.get("eval_count", 0), bound) if output else 0
    return Reported(prompt, completion)


def native_body(body: dict[str, Any], d: Deployment, output_cap: int | None, *, stream: bool) -> dict[str, Any]:
    """The client's body for the upstream: model rewritten, the output cap in ``options.num_predict``."""
    out = dict(body)
    out["model"] = d.model
    out["stream"] = stream
    options = dict(out["options"]) if isinstance(out.get("options"), dict) else {}
    raw = options.get("num_predict")
    predict = raw if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0 else None
    if predict is None and output_cap is not None:
        options["num_predict"] = output_cap
    elif predict is not None:  # raised to a reasoning floor, held to max_output_tokens
        options["num_predict"] = d.output_tokens(predict)
    if options:
        out["options"] = options
    return out


def _headers(d: Deployment) -> dict[str, str]:
    h = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **d.headers}
    if d.api_key:
        h["Authorization"] = f"Bearer {d.api_key}"
    return h


def _line(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise AttemptError("protocol", f"upstream sent an NDJSON line over {max_bytes // 1024} KB (max_event_kb)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AttemptError("protocol", f"upstream sent {len(raw)} bytes that are not an NDJSON object") from None
    if not isinstance(obj, dict):
        raise AttemptError("protocol", "upstream sent an NDJSON line that is not a JSON object")
    return obj


async def iter_ndjson(resp: UpstreamReplyStream, max_line_bytes: int) -> AsyncIterator[tuple[bytes, dict[str, Any]]]:
    """(line with its newline, parsed object) as they arrive; bounded like ``iter_sse_events``."""
    pending = b""
    async for chunk in resp.chunks():
        data = pending + chunk if pending else chunk
        start = 0
        while (i := data.find(b"\n", start)) >= 0:
            raw = data[start:i].strip()
            start = i + 1
            if raw:
                yield raw + b"\n", _line(raw, max_line_bytes)
        pending = data[start:]
        if len(pending) > max_line_bytes:
            raise AttemptError("protocol", f"upstream sent an NDJSON line over {max_line_bytes // 1024} KB")
    if pending.strip():
        yield pending.strip() + b"\n", _line(pending.strip(), max_line_bytes)


def _error_of(obj: dict[str, Any]) -> str | None:
    err = obj.get("error")
    return str(err)[:300] if err is not None else None


class OllamaNativeAdapter:
    """Ollama clients to an Ollama upstream: one path of its native API (``/api/chat``, ``/api/generate``...)."""

    api = API

    def __init__(self, client: UpstreamTransport, path: str = "/api/chat", *, produces_text: bool = True) -> None:
        self._client = client
        self.path = path
        self.produces_text = produces_text  # /api/embed produces no tokens to cap or count

    def _url(self, d: Deployment) -> str:
        return f"{d.base_url.rstrip('/')}{self.path}"

    async def complete(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamReply:
        payload = native_body(body, d, output_cap if self.produces_text else None, stream=False)
        if not self.produces_text:
            payload.pop("stream", None)
        data = orjson.dumps(payload)
        obj, raw, ctype, upstream_ms = await post_for_json(
            self._client, self._url(d), data, _headers(d), timeout_s=timeout_s, max_bytes=d.limits.max_response_bytes
        )
        reported = ollama_reported(obj, bound_of(d), output=self.produces_text)
        usage = billed(
            reported, sent_bytes=len(data), produced=lambda: text_bytes(obj.get("message") or obj.get("response"))
        )
        return UpstreamReply(200, raw, ctype, usage, upstream_ms, notes=doubt_note(reported, obj))

    async def stream(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamStream:
        if not self.produces_text:
            raise AttemptError("protocol", "embeddings are not streamed")
        data = orjson.dumps(native_body(body, d, output_cap, stream=True))
        t0 = time.perf_counter()
        resp = await self._client.post(self._url(d), data, _headers(d), timeout_s=timeout_s)
        try:
            if resp.status >= 400:
                raise await error_from_response(resp)
            lines = iter_ndjson(resp, d.limits.max_event_bytes)
            try:
                first, obj = await anext(lines)
            except StopAsyncIteration:
                raise AttemptError("dropped", "upstream closed the stream before the first line") from None
            if (err := _error_of(obj)) is not None:  # before anything reached the client: fail over
                raise AttemptError("status", err, status=502)
        except BaseException:
            resp.close()
            raise
        resp.idle_timeout(_idle(d.limits, timeout_s), total_s=d.limits.stream_timeout_s)
        meter, status = stream_meter(len(data), d), StreamStatus()
        watch = _NativeStream(lines, meter, status, resp)
        watch.meter(obj)
        return UpstreamStream(
            first_event=first,
            rest=watch.rest(),
            usage=meter.usage,
            content_type="application/x-ndjson",
            upstream_ms_to_first=(time.perf_counter() - t0) * 1000,
            close=resp.close,
            status=status,
        )


def _idle(limits: ReadLimits, timeout_s: float) -> float:
    return limits.stream_idle_timeout_s or timeout_s


class _NativeStream(WatchedStream):
    """Watches NDJSON lines go by: meters the text, takes the counters from the ``done`` line, notices errors."""

    missing_end = "its done line"

    def meter(self, obj: dict[str, Any]) -> None:
        if obj.get("done") is True:
            self._meter.reported(ollama_reported(obj, self._meter.bound))
            self._status.completed = True
        elif (err := _error_of(obj)) is not None:
            self._status.error = f"upstream: {err}"
        else:
            self._meter.content(text_bytes(obj.get("message") or {"text": obj.get("response")}))

    async def rest(self) -> AsyncIterator[bytes]:
        try:
            if self._status.completed:  # the first line was the last
                return
            async for raw, obj in self._events:  # (line, its object)
                self.meter(obj)
                yield raw
                if self._status.completed or self._status.error is not None:
                    break
        except Exception as exc:  # a failure mid-stream is recorded in the status, not raised into the relay
            self._status.error = classify_exception(exc).summary()
        finally:
            self._settle()
