"""The ``anthropic-messages`` protocol: Anthropic's Messages API (and compatible upstreams).

For an Anthropic client this is a faithful pass-through: the body is
forwarded with only the model rewritten (and max_tokens clamped), so
thinking blocks and their signatures, cache_control and unknown fields
survive; the client's anthropic-version / anthropic-beta headers and query
string travel with it. Replies are parsed only for usage.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tiergate.adapters.base import (
    UpstreamReply,
    UpstreamStream,
    classify_exception,
    open_event_stream,
    post_for_body,
    sse_data,
)
from tiergate.adapters.transport import UpstreamReplyStream, UpstreamTransport
from tiergate.adapters.upstream_http import USER_AGENT
from tiergate.core.catalog import Deployment
from tiergate.core.errors import AttemptError
from tiergate.core.money import estimate_tokens_from_bytes
from tiergate.core.types import NO_HINTS, ClientHints, StreamStatus, Usage

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


def usage_from_anthropic(u: Any) -> Usage | None:
    """Input counts cache reads and writes too: they are prompt tokens the upstream processed."""
    if not isinstance(u, dict):
        return None
    read, write = int(u.get("cache_read_input_tokens") or 0), int(u.get("cache_creation_input_tokens") or 0)
    prompt = int(u.get("input_tokens") or 0) + read + write
    return Usage(prompt, int(u.get("output_tokens") or 0), cache_read_tokens=read, cache_write_tokens=write)


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
        t0 = time.perf_counter()
        raw, ctype = await post_for_body(
            self._client, self._url(d, hints), data, headers_for(d, hints), timeout_s=timeout_s
        )
        upstream_ms = (time.perf_counter() - t0) * 1000
        try:
            usage = usage_from_anthropic(orjson.loads(raw).get("usage"))
        except (orjson.JSONDecodeError, AttributeError):
            raise AttemptError("protocol", "upstream sent a body that is not a JSON object") from None
        if usage is None:
            usage = Usage(estimate_tokens_from_bytes(len(data)), estimate_tokens_from_bytes(len(raw)), estimated=True)
        return UpstreamReply(200, raw, ctype, usage, upstream_ms)

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
            self._client, self._url(d, hints), data, headers_for(d, hints), timeout_s=timeout_s
        )
        usage = Usage(estimate_tokens_from_bytes(len(data)), 0, estimated=True)
        status = StreamStatus()
        watcher = _AnthropicStream(events, usage, status, resp=resp)
        watcher.inspect(first)
        if status.error is not None:
            resp.close()
            raise AttemptError("status", status.error, status=529)
        return UpstreamStream(
            first_event=first,
            rest=watcher.rest(),
            usage=usage,
            content_type="text/event-stream",
            upstream_ms_to_first=(time.perf_counter() - t0) * 1000,
            close=resp.close,
            status=status,
        )


class _AnthropicStream:
    """Watches Anthropic SSE events go by: usage from message_start / message_delta, the end, errors."""

    def __init__(
        self, events: AsyncIterator[bytes], usage: Usage, status: StreamStatus, *, resp: UpstreamReplyStream
    ) -> None:
        self._events = events
        self._usage = usage
        self._status = status
        self._resp = resp
        self._deltas = 0

    def inspect(self, ev: bytes) -> None:
        if b"content_block_delta" in ev[:40]:
            self._deltas += 1
            return
        obj = sse_data(ev)
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "message_start":
            u = usage_from_anthropic((obj.get("message") or {}).get("usage"))
            if u is not None:
                self._usage.prompt_tokens, self._usage.estimated = u.prompt_tokens, False
                self._usage.cache_read_tokens = u.cache_read_tokens
                self._usage.cache_write_tokens = u.cache_write_tokens
        elif kind == "message_delta":
            delta_usage = obj.get("usage")
            if isinstance(delta_usage, dict) and "output_tokens" in delta_usage:
                self._usage.completion_tokens = int(delta_usage["output_tokens"] or 0)
        elif kind == "message_stop":
            self._status.completed = True
        elif kind == "error":
            err = obj.get("error") or {}
            self._status.error = f"{err.get('type', 'error')}: {err.get('message', '')}"

    async def rest(self) -> AsyncIterator[bytes]:
        try:
            async for ev in self._events:
                self.inspect(ev)
                yield ev
        except Exception as exc:  # a failure mid-stream is recorded in the status, not raised into the relay
            self._status.error = classify_exception(exc).summary()
        finally:
            if self._status.completed:
                self._resp.release()
            else:
                self._resp.close()
                if not self._usage.completion_tokens:
                    self._usage.completion_tokens = self._deltas
                self._status.fail("upstream ended the stream without message_stop")
