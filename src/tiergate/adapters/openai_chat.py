"""The ``openai-chat`` protocol: every OpenAI-compatible upstream, one module.

llama.cpp, Ollama /v1, vLLM, LM Studio, OpenAI, OpenRouter, DeepSeek, Groq,
Kimi and Gemini's compatible endpoint differ only in config rows. An OpenAI
client's body is forwarded with just the model rewritten (and max_tokens
clamped to the deployment's limit); the reply bytes come back untouched and
are parsed only for usage.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tiergate.adapters.base import (
    UpstreamReply,
    UpstreamStream,
    WatchedStream,
    open_event_stream,
    post_for_json,
    sse_data,
)
from tiergate.adapters.transport import UpstreamReplyStream, UpstreamTransport
from tiergate.adapters.upstream_http import USER_AGENT
from tiergate.adapters.usage import (
    StreamMeter,
    billed,
    bound_of,
    doubt_note,
    openai_chunk_bytes,
    openai_reported,
    plain_content_bytes,
    stream_meter,
    text_bytes,
)
from tiergate.core.catalog import Deployment
from tiergate.core.errors import AttemptError
from tiergate.core.types import NO_HINTS, ClientHints, StreamStatus

DONE = b"data: [DONE]"


# OpenAI models that take only max_completion_tokens (o1, o3, o4-mini, gpt-5, ...): max_tokens is a 400 there
REASONING_FAMILIES = re.compile(r"^(?:openai/)?(?:o\d|gpt-5)")


def output_cap_field(model: str) -> str:
    """The output-cap field a model accepts: OpenAI's reasoning families refuse ``max_tokens``."""
    return "max_completion_tokens" if REASONING_FAMILIES.match(model) else "max_tokens"


def upstream_body(body: dict[str, Any], d: Deployment, output_cap: int | None = None) -> tuple[dict[str, Any], bool]:
    """The body to send: model rewritten, max_tokens clamped, usage requested on streams.

    ``output_cap``: the output tokens a budget reservation assumed, sent only when the client set no cap.

    Returns (body, injected_usage): when the client did not ask for the usage
    chunk we ask for it anyway (the ledger needs it) and drop it on the way back.
    """
    out = dict(body)
    out["model"] = d.model
    if output_cap is not None and out.get("max_tokens") is None and out.get("max_completion_tokens") is None:
        out[output_cap_field(d.model)] = output_cap
    if d.max_output_tokens or d.reasoning_floor:
        for key in ("max_tokens", "max_completion_tokens"):
            v = out.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                out[key] = d.output_tokens(v)  # raised to a reasoning floor, held to max_output_tokens
    injected = False
    if out.get("stream"):
        opts = out.get("stream_options")
        if not (isinstance(opts, dict) and opts.get("include_usage")):
            out["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
            injected = True
    return out, injected


def _headers(d: Deployment) -> dict[str, str]:
    h = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **d.headers}
    if d.api_key:
        h["Authorization"] = f"Bearer {d.api_key}"
    return h


class OpenAIChatAdapter:
    """Sends OpenAI Chat Completions requests to one OpenAI-compatible upstream per call."""

    api = "openai-chat"
    path = "/chat/completions"
    caps_output = True  # a budget's output cap is sent in the field the model accepts

    def __init__(self, client: UpstreamTransport) -> None:
        self._client = client
        self._targets: dict[str, tuple[Deployment, str, dict[str, str], int]] = {}

    def _target(self, d: Deployment) -> tuple[str, dict[str, str], int]:
        """The URL, headers and usage bound of a deployment, built once: they never change while the app runs."""
        t = self._targets.get(d.name)
        if t is None or t[0] is not d:
            t = self._targets[d.name] = (d, self.url_of(d), self.headers_of(d), bound_of(d))
        return t[1], t[2], t[3]

    def url_of(self, d: Deployment) -> str:
        """Where the deployment's requests go (a protocol variant such as Azure's builds its own)."""
        return f"{d.base_url}{self.path}"

    def headers_of(self, d: Deployment) -> dict[str, str]:
        return _headers(d)

    async def complete(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamReply:
        payload, _ = upstream_body(body, d, output_cap if self.caps_output else None)
        data = orjson.dumps(payload)
        url, headers, bound = self._target(d)
        obj, raw, ctype, upstream_ms = await post_for_json(
            self._client,
            url,
            data,
            headers,
            timeout_s=timeout_s,
            max_bytes=d.limits.max_response_bytes,
        )
        u = obj.get("usage")
        reported = openai_reported(u, bound, output=self.caps_output)
        choices = obj.get("choices") if self.caps_output else None
        usage = billed(reported, sent_bytes=len(data), produced=lambda: text_bytes(choices))
        return UpstreamReply(200, raw, ctype, usage, upstream_ms, doubt_note(reported, u))

    async def stream(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamStream:
        payload, injected = upstream_body(body, d, output_cap)
        data = orjson.dumps(payload)
        t0 = time.perf_counter()
        url, headers, _ = self._target(d)
        resp, events, first = await open_event_stream(
            self._client, url, data, headers, timeout_s=timeout_s, limits=d.limits
        )
        try:
            check_first_event(first)
        except AttemptError:
            resp.close()
            raise
        meter, status = stream_meter(len(data), d), StreamStatus()
        stream = _OpenAIStream(events, meter, status, injected=injected, resp=resp)
        first_out = stream.inspect(first)
        return UpstreamStream(
            first_event=first_out or b"",
            rest=stream.rest(),
            usage=meter.usage,
            content_type="text/event-stream",
            upstream_ms_to_first=(time.perf_counter() - t0) * 1000,
            close=resp.close,
            status=status,
        )


def check_first_event(ev: bytes) -> None:
    """The first event decides whether to fail over: it must be a chunk (or [DONE]), not an error or garbage."""
    if ev.startswith(DONE):
        return
    obj = sse_data(ev)
    if not isinstance(obj, dict):
        raise AttemptError("protocol", "the stream's first event is not a JSON object")
    err = obj.get("error")
    if err is not None and not obj.get("choices"):  # OpenRouter and others report failures in-band
        message = err.get("message") if isinstance(err, dict) else err
        raise AttemptError("status", str(message or "error event")[:300], status=502)


class _OpenAIStream(WatchedStream):
    """Watches OpenAI SSE events go by: counts usage, notices the end, hides an injected usage chunk."""

    missing_end = "[DONE]"

    def __init__(
        self,
        events: AsyncIterator[bytes],
        meter: StreamMeter,
        status: StreamStatus,
        *,
        injected: bool,
        resp: UpstreamReplyStream,
    ) -> None:
        super().__init__(events, meter, status, resp)
        self._injected = injected

    def inspect(self, ev: bytes) -> bytes | None:
        """The event to forward (None to drop it); the usage is current after every event."""
        if ev.startswith(DONE):
            self._status.completed = True
            return ev
        if b'"usage"' in ev and b'"usage":null' not in ev:
            obj = sse_data(ev)
            u = obj.get("usage") if isinstance(obj, dict) else None
            if isinstance(u, dict):
                self._meter.reported(openai_reported(u, self._meter.bound))
                if obj.get("choices"):  # usage on a content chunk (vLLM's continuous usage stats)
                    self._meter.content(openai_chunk_bytes(obj))
                elif self._injected:
                    return None
                return ev
        if b'"delta"' in ev:
            n = plain_content_bytes(ev)
            self._meter.content(openai_chunk_bytes(sse_data(ev)) if n is None else n)
        return ev


class OpenAIEmbeddingsAdapter(OpenAIChatAdapter):
    """``/embeddings`` on the same upstreams: the same pass-through, never streamed."""

    path = "/embeddings"
    caps_output = False  # embeddings produce no tokens to cap

    async def stream(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamStream:
        raise AttemptError("protocol", "embeddings are not streamed")
