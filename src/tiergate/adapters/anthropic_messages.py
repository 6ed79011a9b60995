"""The ``anthropic-messages`` protocol: Anthropic's Messages API (and compatible upstreams).

For an Anthropic client this is a faithful pass-through: the body is
forwarded with only the model rewritten (and max_tokens clamped), so
thinking blocks and their signatures, cache_control and unknown fields
survive; the client's anthropic-version / anthropic-beta headers and query
string travel with it. Replies are parsed only for usage.
"""

from __future__ import annotations

import time
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
from tiergate.adapters.transport import UpstreamTransport
from tiergate.adapters.upstream_http import USER_AGENT
from tiergate.adapters.usage import (
    Reported,
    anthropic_event_bytes,
    anthropic_reported,
    billed,
    bound_of,
    doubt_note,
    stream_meter,
    text_bytes,
)
from tiergate.core.catalog import Deployment
from tiergate.core.errors import AttemptError
from tiergate.core.types import NO_HINTS, ClientHints, StreamStatus

DEFAULT_VERSION = "2023-06-01"
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


def upstream_body(body: dict[str, Any], d: Deployment, output_cap: int | None = None) -> dict[str, Any]:
    out = dict(body)
    out["model"] = d.model
    if output_cap is not None and out.get("max_tokens") is None:
        out["max_tokens"] = output_cap
    v = out.get("max_tokens")
    if d.max_output_tokens and isinstance(v, int) and v > d.max_output_tokens:
        out["max_tokens"] = d.max_output_tokens
    return out


def headers_for(d: Deployment, hints: ClientHints) -> dict[str, str]:
    h = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "anthropic-version": DEFAULT_VERSION,
        **d.headers,
    }
    for name in FORWARDED_HEADERS:
        value = hints.headers.get(name)
        if value:
            h[name] = value
    if d.api_key:
        h["x-api-key"] = d.api_key
    return h


class AnthropicMessagesAdapter:
    """Sends Anthropic Messages requests to one Anthropic-protocol upstream per call."""

    api = "anthropic-messages"

    def __init__(self, client: UpstreamTransport) -> None:
        self._client = client

    def _url(self, d: Deployment, hints: ClientHints) -> str:
        base = d.base_url.removesuffix("/v1")
        return f"{base}/v1/messages" + (f"?{hints.query}" if hints.query else "")

    async def complete(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamReply:
        data = orjson.dumps(upstream_body(body, d, output_cap))
        obj, raw, ctype, upstream_ms = await post_for_json(
            self._client,
            self._url(d, hints),
            data,
            headers_for(d, hints),
            timeout_s=timeout_s,
            max_bytes=d.limits.max_response_bytes,
        )
        u = obj.get("usage")
        reported = anthropic_reported(u, bound_of(d))
        usage = billed(reported, sent_bytes=len(data), produced=lambda: text_bytes(obj.get("content")))
        return UpstreamReply(200, raw, ctype, usage, upstream_ms, notes=doubt_note(reported, u))

    async def stream(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamStream:
        data = orjson.dumps(upstream_body(body, d, output_cap))
        t0 = time.perf_counter()
        resp, events, first = await open_event_stream(
            self._client, self._url(d, hints), data, headers_for(d, hints), timeout_s=timeout_s, limits=d.limits
        )
        meter, status = stream_meter(len(data), d), StreamStatus()
        watcher = _AnthropicStream(events, meter, status, resp=resp)
        try:
            check_first_event(first)
        except AttemptError:
            resp.close()
            raise
        watcher.inspect(first)
        return UpstreamStream(
            first_event=first,
            rest=watcher.rest(),
            usage=meter.usage,
            content_type="text/event-stream",
            upstream_ms_to_first=(time.perf_counter() - t0) * 1000,
            close=resp.close,
            status=status,
        )


def check_first_event(ev: bytes) -> None:
    """The first event decides whether to fail over: an error event, or a start that is not one, is a
    failed attempt (nothing has reached the client yet)."""
    obj = sse_data(ev)
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise AttemptError("protocol", "the stream's first event is not an Anthropic event")
    if obj["type"] == "error":
        raise AttemptError("status", error_text(obj.get("error")), status=529)
    if obj["type"] == "message_start" and not isinstance(obj.get("message"), dict):
        raise AttemptError("protocol", "the stream's message_start has no message object")


def error_text(err: Any) -> str:
    """An Anthropic error event's words, whatever shape the upstream gave them."""
    if isinstance(err, dict):
        return f"{err.get('type') or 'error'}: {err.get('message') or ''}"[:300]
    return f"error: {err}"[:300]


class _AnthropicStream(WatchedStream):
    """Watches Anthropic SSE events go by: usage from message_start / message_delta, the end, errors.

    Never raises on an event's shape: a first event with ``"message": [...]`` or ``"error": "Overloaded"``
    once escaped the adapter as an AttributeError instead of a failed attempt.
    """

    missing_end = "message_stop"

    def inspect(self, ev: bytes) -> bytes:
        obj = sse_data(ev)
        if not isinstance(obj, dict):
            return ev
        kind = obj.get("type")
        if kind in ("content_block_delta", "content_block_start"):
            self._meter.content(anthropic_event_bytes(obj))
        elif kind == "message_start":
            message = obj.get("message")
            u = message.get("usage") if isinstance(message, dict) else None
            # its output_tokens is a placeholder (1 or so): the count comes with message_delta
            self._meter.reported(anthropic_reported(u, self._meter.bound, output=False))
        elif kind == "message_delta":
            u = obj.get("usage")
            if isinstance(u, dict) and "output_tokens" in u:
                out = anthropic_reported(u, self._meter.bound).completion
                self._meter.reported(Reported(None, out))
        elif kind == "message_stop":
            self._status.completed = True
        elif kind == "error":
            self._status.error = error_text(obj.get("error"))
        return ev
