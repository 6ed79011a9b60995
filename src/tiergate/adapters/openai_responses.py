"""The ``openai-responses`` protocol: upstreams that speak OpenAI's Responses API (``POST {base_url}/responses``).

A Responses client's body goes through as it came, with only the model
rewritten, ``max_output_tokens`` clamped to the deployment's limit (or a
budget's output cap written when the client set none) and
``previous_response_id`` taken out: tiergate answered it already by putting
the stored conversation in ``input`` (api/responses_state.py), and the
upstream does not know tiergate's ids. Reasoning items, their encrypted
content and the upstream's own tools survive, so a reasoning model's
thinking carries over from turn to turn. The reply bytes come back
untouched, parsed only for usage: from the reply's ``usage``, or from the
final ``response.completed`` / ``response.incomplete`` event of a stream
(Responses streams have no ``[DONE]``; that event is their end).
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
    billed,
    bound_of,
    doubt_note,
    responses_reported,
    stream_meter,
    text_bytes,
)
from tiergate.core.catalog import Deployment
from tiergate.core.errors import AttemptError
from tiergate.core.types import NO_HINTS, ClientHints, StreamStatus

FINAL = (b'"type":"response.completed"', b'"type":"response.incomplete"')
FAILED = b'"type":"response.failed"'
DELTA_TYPES = (b'"type":"response.output_text.delta"', b'"type":"response.function_call_arguments.delta"')


def upstream_body(body: dict[str, Any], d: Deployment, output_cap: int | None = None) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if k != "previous_response_id"}
    out["model"] = d.model
    cap = out.get("max_output_tokens")
    if cap is None and output_cap is not None:
        out["max_output_tokens"] = output_cap
    elif isinstance(cap, int) and d.max_output_tokens and cap > d.max_output_tokens:
        out["max_output_tokens"] = d.max_output_tokens
    return out


def _headers(d: Deployment) -> dict[str, str]:
    h = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **d.headers}
    if d.api_key:
        h["Authorization"] = f"Bearer {d.api_key}"
    return h


def output_bytes(response: Any) -> int:
    """Model-written text in a response object's output (for the estimate when usage is not believed)."""
    return text_bytes(response.get("output")) if isinstance(response, dict) else 0


class OpenAIResponsesAdapter:
    """Sends Responses requests to one Responses-speaking upstream per call."""

    api = "openai-responses"

    def __init__(self, client: UpstreamTransport) -> None:
        self._client = client

    async def complete(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamReply:
        payload = {**upstream_body(body, d, output_cap), "stream": False}
        data = orjson.dumps(payload)
        obj, raw, ctype, upstream_ms = await post_for_json(
            self._client,
            f"{d.base_url}/responses",
            data,
            _headers(d),
            timeout_s=timeout_s,
            max_bytes=d.limits.max_response_bytes,
            want_object=False,
        )
        if not isinstance(obj, dict) or obj.get("object") != "response":
            raise AttemptError("protocol", "upstream sent a body that is not a Responses response object")
        u = obj.get("usage")
        reported = responses_reported(u, bound_of(d))
        usage = billed(reported, sent_bytes=len(data), produced=lambda: output_bytes(obj))
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
        payload = {**upstream_body(body, d, output_cap), "stream": True}
        data = orjson.dumps(payload)
        t0 = time.perf_counter()
        resp, events, first = await open_event_stream(
            self._client, f"{d.base_url}/responses", data, _headers(d), timeout_s=timeout_s, limits=d.limits
        )
        obj = sse_data(first)
        if not isinstance(obj, dict) or obj.get("type") == "error" or FAILED in first:
            resp.close()
            why = obj.get("message") if isinstance(obj, dict) else None
            raise AttemptError(
                "status", str(why or "the stream's first event is not a Responses event")[:300], status=502
            )
        meter, status = stream_meter(len(data), d), StreamStatus()
        watch = _ResponsesStream(events, meter, status, resp)
        watch.inspect(first)
        return UpstreamStream(
            first_event=first,
            rest=watch.rest(),
            usage=meter.usage,
            content_type="text/event-stream",
            upstream_ms_to_first=(time.perf_counter() - t0) * 1000,
            close=resp.close,
            status=status,
        )


class _ResponsesStream(WatchedStream):
    """Watches Responses events go by: counts generated text, takes the final event's usage, notices the end."""

    missing_end = "response.completed"

    def inspect(self, ev: bytes) -> bytes:
        if any(t in ev for t in DELTA_TYPES):
            obj = sse_data(ev)
            delta = obj.get("delta") if isinstance(obj, dict) else None
            if isinstance(delta, str):
                self._meter.content(len(delta.encode("utf-8", "replace")))
        elif any(t in ev for t in FINAL) or FAILED in ev:
            obj = sse_data(ev)
            response = obj.get("response") if isinstance(obj, dict) else None
            if isinstance(response, dict):
                self._meter.reported(responses_reported(response.get("usage"), self._meter.bound))
            if FAILED in ev:
                self._status.fail("upstream reported response.failed")
            else:
                self._status.completed = True
        return ev
