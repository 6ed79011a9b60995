"""The ``google-generative-ai`` protocol: Gemini's own API upstream, for Gemini clients, passed through.

The client's generateContent body goes to ``{base_url}/models/{model}:{method}``
with the deployment's key in ``x-goog-api-key`` and only
``generationConfig.maxOutputTokens`` touched (clamped, or set to a budget's
output cap), so thinking, thought signatures, cached content, safety
settings and Google's own tools survive. Streams are always asked for as SSE
(``alt=sse``) and relayed as they come, re-framed as one JSON array for a
client that asked without ``alt=sse``. Usage comes from ``usageMetadata``
(cumulative on every chunk): the prompt includes cached tokens, the
completion is candidates plus thoughts.
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
    open_event_stream,
    post_for_json,
    sse_data,
)
from tiergate.adapters.transport import UpstreamReplyStream, UpstreamTransport
from tiergate.adapters.upstream_http import USER_AGENT
from tiergate.adapters.usage import (
    NOTHING,
    Reported,
    StreamMeter,
    billed,
    bound_of,
    doubt_note,
    stream_meter,
    text_bytes,
)
from tiergate.core.catalog import Deployment
from tiergate.core.errors import AttemptError
from tiergate.core.money import believable_tokens
from tiergate.core.types import NO_HINTS, ClientHints, StreamStatus

API = "google-generative-ai"


def gemini_reported(meta: Any, bound: int, *, output: bool = True) -> Reported:
    if not isinstance(meta, dict):
        return NOTHING
    prompt = believable_tokens(meta.get("promptTokenCount", 0), bound)
    cached = believable_tokens(meta.get("cachedContentTokenCount", 0), bound)
    candidates = believable_tokens(meta.get("candidatesTokenCount", 0), bound)
    thoughts = believable_tokens(meta.get("thoughtsTokenCount", 0), bound)
    completion = None if candidates is None or thoughts is None else candidates + thoughts
    if prompt is None or cached is None or cached > prompt:
        return Reported(None, completion if output else 0)
    return Reported(prompt, completion if output else 0, cache_read=cached)


def native_body(body: dict[str, Any], d: Deployment, output_cap: int | None) -> dict[str, Any]:
    """The client's body without tiergate's routing name, the output cap in generationConfig."""
    out = {k: v for k, v in body.items() if k != "model"}
    if isinstance(out.get("requests"), list):  # batchEmbedContents names the model in each request
        out["requests"] = [{**r, "model": f"models/{d.model}"} if isinstance(r, dict) else r for r in out["requests"]]
    key = "generationConfig" if "generation_config" not in out else "generation_config"
    raw = out.get(key)
    gen = dict(raw) if isinstance(raw, dict) else {}
    asked = gen.get("maxOutputTokens", gen.get("max_output_tokens"))
    given = asked if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0 else None
    if given is None and output_cap is not None:
        gen["maxOutputTokens"] = output_cap
    elif given is not None and d.max_output_tokens and given > d.max_output_tokens:
        gen.pop("max_output_tokens", None)
        gen["maxOutputTokens"] = d.max_output_tokens
    if gen:
        out[key] = gen
    return out


def _headers(d: Deployment) -> dict[str, str]:
    h = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **d.headers}
    if d.api_key:
        h["x-goog-api-key"] = d.api_key
    return h


def _finished(obj: Any) -> bool:
    cands = obj.get("candidates") if isinstance(obj, dict) else None
    return isinstance(cands, list) and any(isinstance(c, dict) and c.get("finishReason") for c in cands)


class GeminiNativeAdapter:
    """One method of Gemini's API (``generateContent``, ``embedContent``, ``batchEmbedContents``)."""

    api = API

    def __init__(self, client: UpstreamTransport, method: str = "generateContent", *, produces_text: bool = True):
        self._client = client
        self.method = method
        self.produces_text = produces_text

    def _url(self, d: Deployment, method: str) -> str:
        return f"{d.base_url.rstrip('/')}/models/{d.model}:{method}"

    async def complete(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamReply:
        data = orjson.dumps(native_body(body, d, output_cap if self.produces_text else None))
        obj, raw, ctype, upstream_ms = await post_for_json(
            self._client,
            self._url(d, self.method),
            data,
            _headers(d),
            timeout_s=timeout_s,
            max_bytes=d.limits.max_response_bytes,
        )
        meta = obj.get("usageMetadata")
        reported = gemini_reported(meta, bound_of(d), output=self.produces_text)
        if not self.produces_text and reported.prompt is None:  # embeddings report no usage: the estimate
            reported = Reported(None, 0)
        usage = billed(reported, sent_bytes=len(data), produced=lambda: text_bytes(obj.get("candidates")))
        return UpstreamReply(200, raw, ctype, usage, upstream_ms, notes=doubt_note(reported, meta))

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
        data = orjson.dumps(native_body(body, d, output_cap))
        t0 = time.perf_counter()
        url = self._url(d, "streamGenerateContent") + "?alt=sse"
        resp, events, first = await open_event_stream(
            self._client, url, data, _headers(d), timeout_s=timeout_s, limits=d.limits
        )
        obj = sse_data(first)
        if not isinstance(obj, dict) or obj.get("error") is not None:
            resp.close()
            err = obj.get("error") if isinstance(obj, dict) else None
            message = err.get("message") if isinstance(err, dict) else "the stream's first event is not a JSON object"
            raise AttemptError("status" if err is not None else "protocol", str(message)[:300], status=502)
        meter, status = stream_meter(len(data), d), StreamStatus()
        sse = "alt=sse" in (hints.query or "")
        watch = _GeminiStream(events, meter, status, resp, sse=sse)
        return UpstreamStream(
            first_event=watch.frame(first, obj),
            rest=watch.rest(),
            usage=meter.usage,
            content_type="text/event-stream" if sse else "application/json",
            upstream_ms_to_first=(time.perf_counter() - t0) * 1000,
            close=resp.close,
            status=status,
        )


class _GeminiStream(WatchedStream):
    """Watches the chunks go by: usage from usageMetadata, the end at a finishReason; frames for the client."""

    missing_end = "a finishReason"

    def __init__(
        self,
        events: AsyncIterator[bytes],
        meter: StreamMeter,
        status: StreamStatus,
        resp: UpstreamReplyStream,
        *,
        sse: bool,
    ) -> None:
        super().__init__(events, meter, status, resp)
        self._sse = sse
        self._sent = False

    def frame(self, event: bytes, obj: Any) -> bytes:
        """Meter one chunk and frame it: the SSE event as it came, or the next element of a JSON array."""
        if isinstance(obj, dict):
            if obj.get("usageMetadata") is not None:
                self._meter.reported(gemini_reported(obj["usageMetadata"], self._meter.bound))
            self._meter.content(text_bytes(obj.get("candidates")))
            if _finished(obj):
                self._status.completed = True
        first, self._sent = not self._sent, True
        if self._sse:
            return event
        return (b"[" if first else b",\r\n") + orjson.dumps(obj)

    async def rest(self) -> AsyncIterator[bytes]:
        try:
            async for ev in self._events if not self._status.completed else _nothing():
                obj = sse_data(ev)
                if not isinstance(obj, dict):
                    continue  # a comment or keep-alive
                if obj.get("error") is not None:
                    err = obj["error"]
                    self._status.error = f"upstream: {err.get('message') if isinstance(err, dict) else err}"
                    break
                yield self.frame(ev, obj)
            if self._status.completed and self._status.error is None and not self._sse:
                yield b"]"  # the JSON array's end
        except Exception as exc:
            self._status.error = classify_exception(exc).summary()
        finally:
            self._settle()


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""
