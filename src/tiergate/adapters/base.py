"""What every protocol adapter returns and raises, and the HTTP plumbing they share.

An adapter turns one attempt at one deployment into an ``UpstreamReply``
(non-streaming) or an ``UpstreamStream`` whose first event has already
arrived, or raises ``AttemptError`` saying whether another try makes sense.
The executor decides what to do next; adapters never retry.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import orjson

from tiergate.adapters.transport import UpstreamReplyStream, UpstreamTransport
from tiergate.core.catalog import Deployment
from tiergate.core.errors import AttemptError
from tiergate.core.types import NO_HINTS, ClientHints, StreamStatus, Usage

MAX_ERROR_BODY = 64 * 1024


@dataclass(slots=True)
class UpstreamReply:
    status: int
    body: bytes
    content_type: str
    usage: Usage
    upstream_ms: float
    notes: list[str] = field(default_factory=list)  # e.g. fields dropped in translation


@dataclass(slots=True)
class UpstreamStream:
    """A stream whose first event is in hand, so failing over is still possible until it is sent."""

    first_event: bytes
    rest: AsyncIterator[bytes]
    usage: Usage
    content_type: str
    upstream_ms_to_first: float
    close: Callable[[], None]
    status: StreamStatus = field(default_factory=StreamStatus)
    notes: list[str] = field(default_factory=list)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the upstream asks us to wait (``retry-after-ms`` or ``Retry-After``; names lower-case)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def classify_exception(exc: BaseException) -> AttemptError:
    """An AttemptError for whatever ended an attempt (the client raises AttemptErrors already)."""
    if isinstance(exc, AttemptError):
        return exc
    if isinstance(exc, TimeoutError):
        return AttemptError("timeout", "timed out")
    if isinstance(exc, (ConnectionError, EOFError)):
        return AttemptError("dropped", "connection dropped by upstream")
    return AttemptError("protocol", f"{type(exc).__name__}: {exc}")


def vendor_error_message(body: bytes) -> str | None:
    """The human message inside an OpenAI or Anthropic error envelope, if there is one."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    err = obj.get("error") if isinstance(obj, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    if isinstance(message, str):
        return message.replace("\n", " ")
    if isinstance(err, str):
        return err
    return None


async def error_from_response(resp: UpstreamReplyStream) -> AttemptError:
    body = await resp.read(MAX_ERROR_BODY)
    text = vendor_error_message(body) or body.decode("utf-8", "replace").strip().replace("\n", " ")
    return AttemptError(
        "status",
        text[:300] or resp.reason or "error",
        status=resp.status,
        retry_after=parse_retry_after(resp.headers),
        body=body,
    )


async def iter_sse_events(resp: UpstreamReplyStream) -> AsyncIterator[bytes]:
    """Split an SSE body into whole events (each ending in a blank line), as they arrive."""
    buf = b""
    async for chunk in resp.chunks():
        buf += chunk
        if b"\r\n" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        while True:
            i = buf.find(b"\n\n")
            if i < 0:
                break
            yield buf[: i + 2]
            buf = buf[i + 2 :]
    if buf.strip():
        yield buf + b"\n\n"


async def post_for_body(
    client: UpstreamTransport,
    url: str,
    data: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
) -> tuple[bytes, str]:
    """POST and return (body, content type) within ``timeout_s``; any failure is an AttemptError."""
    resp = await client.post(url, data, headers, timeout_s=timeout_s)
    if resp.status >= 400:
        raise await error_from_response(resp)
    return await resp.read(), resp.headers.get("content-type", "application/json")


async def open_event_stream(
    client: UpstreamTransport,
    url: str,
    data: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
) -> tuple[UpstreamReplyStream, AsyncIterator[bytes], bytes]:
    """POST, wait for the first whole SSE event, return (response, remaining events, first event).

    Until the first event is in hand nothing has reached the client, so any
    failure here is an AttemptError and the executor may fail over. After it,
    a wait of over ``timeout_s`` for the next bytes ends the stream.
    """
    resp: UpstreamReplyStream | None = None
    try:
        resp = await client.post(url, data, headers, timeout_s=timeout_s)
        if resp.status >= 400:
            raise await error_from_response(resp)
        events = iter_sse_events(resp)
        first = await events.__anext__()
    except BaseException as exc:
        if resp is not None:
            resp.close()
        if isinstance(exc, StopAsyncIteration):
            raise AttemptError("dropped", "upstream closed the stream before the first event") from None
        raise
    resp.idle_timeout(timeout_s)
    return resp, events, first


def sse_data(event: bytes) -> Any:
    """The parsed JSON of an SSE event's data line, or None."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                return orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return None
    return None


class Adapter(Protocol):
    """One upstream wire protocol (or a translation onto one): what the executor calls per attempt.

    ``output_cap``: the output tokens a budget reservation assumed; the adapter writes it in the
    field its protocol and model take, and only when the client set no cap of its own.
    """

    async def complete(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamReply: ...

    async def stream(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamStream: ...
