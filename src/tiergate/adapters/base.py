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
from tiergate.adapters.usage import StreamMeter
from tiergate.core.catalog import DEFAULT_READ_LIMITS, Deployment, ReadLimits
from tiergate.core.errors import AttemptError
from tiergate.core.types import NO_HINTS, ClientHints, StreamStatus, Usage

MAX_ERROR_BODY = 64 * 1024
SSE_FIELDS = (b"data:", b"event:", b"id:", b"retry:", b":")  # the field lines an event may hold, and comments
SSE_BARE_FIELDS = frozenset({b"data", b"event", b"id", b"retry", b""})  # a field line without a colon


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


def is_sse_event(ev: bytes) -> bool:
    """Whether one whole event (ending in a blank line) is Server-Sent Events: UTF-8 field lines and comments.

    The spec tells a browser to ignore unknown fields; a gateway seeing them is being sent something else
    (an HTML page, a binary body, a proxy's garbage), and none of it may reach a client.
    """
    if not ev.isascii():
        try:
            ev.decode()
        except UnicodeDecodeError:
            return False
    end = len(ev) - 2
    if ev.find(b"\n") == end and ev.startswith(SSE_FIELDS):  # one field line: nearly every event
        return True
    return all(line.startswith(SSE_FIELDS) or line in SSE_BARE_FIELDS for line in ev[:end].split(b"\n"))


def is_comment(ev: bytes) -> bool:
    """An event of comment lines only (``: OPENROUTER PROCESSING``, keep-alives): nothing for a client."""
    return all(line.startswith(b":") or not line for line in ev[:-2].split(b"\n"))


def _checked(ev: bytes, max_event_bytes: int) -> bytes:
    if len(ev) > max_event_bytes:
        raise _event_too_big(max_event_bytes)
    if not is_sse_event(ev):
        raise AttemptError("protocol", f"upstream sent {len(ev)} bytes that are not an SSE event")
    return ev


def _event_too_big(max_event_bytes: int) -> AttemptError:
    return AttemptError("protocol", f"upstream sent an SSE event over {max_event_bytes // 1024} KB (max_event_kb)")


async def iter_sse_events(
    resp: UpstreamReplyStream, max_event_bytes: int = DEFAULT_READ_LIMITS.max_event_bytes
) -> AsyncIterator[bytes]:
    """Split an SSE body into whole events (each ending in a blank line), as they arrive.

    Bounded: an event over ``max_event_bytes``, or as many bytes without an event's end, and bytes
    that are not SSE are an AttemptError("protocol") and are never yielded. Each chunk is searched
    once, from where the last search stopped.
    """
    pending = b""
    async for chunk in resp.chunks():
        if pending:
            search, data = len(pending) - 1, pending + chunk
        else:
            search, data = 0, chunk
        if b"\r" in chunk or pending.endswith(b"\r"):
            data, search = data.replace(b"\r\n", b"\n"), 0
        start = 0
        while (i := data.find(b"\n\n", search)) >= 0:
            end = i + 2
            if i > start:
                yield _checked(data[start:end], max_event_bytes)
            start = search = end
        pending = data[start:] if start else data
        if len(pending) > max_event_bytes:
            raise _event_too_big(max_event_bytes)
    if pending.strip():  # the body ended inside an event: what came of it is the last event
        yield _checked(pending.rstrip(b"\n") + b"\n\n", max_event_bytes)


def _over_cap(max_bytes: int) -> AttemptError:
    return AttemptError(
        "protocol", f"upstream reply is over {max_bytes / 1048576:g} MB (max_response_mb); not read further"
    )


async def read_bounded(resp: UpstreamReplyStream, max_bytes: int) -> bytes:
    """The whole body, or an AttemptError once it passes ``max_bytes`` (the connection is then closed).

    A length the upstream declares over the cap fails unread; an undeclared one is read as it comes
    and dropped at the cap, so a 2 GB reply costs at most ``max_bytes`` of memory.
    """
    declared = resp.headers.get("content-length", "").strip()
    if declared.isdigit():
        if int(declared) > max_bytes:
            resp.close()
            raise _over_cap(max_bytes)
        body = await resp.read(max_bytes + 1)  # +1: a gzip body may inflate past what it declared
        if len(body) > max_bytes:
            raise _over_cap(max_bytes)
        return body
    parts: list[bytes] = []
    n = 0
    try:
        async for chunk in resp.chunks():
            n += len(chunk)
            if n > max_bytes:
                raise _over_cap(max_bytes)
            parts.append(chunk)
    except BaseException:
        resp.close()
        raise
    return b"".join(parts)


async def post_for_body(
    client: UpstreamTransport,
    url: str,
    data: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    max_bytes: int = DEFAULT_READ_LIMITS.max_response_bytes,
) -> tuple[bytes, str]:
    """POST and return (body, content type) within ``timeout_s``; any failure is an AttemptError."""
    resp = await client.post(url, data, headers, timeout_s=timeout_s)
    if resp.status >= 400:
        raise await error_from_response(resp)
    return await read_bounded(resp, max_bytes), resp.headers.get("content-type", "application/json")


async def post_for_json(
    client: UpstreamTransport,
    url: str,
    data: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    max_bytes: int,
    want_object: bool = True,
) -> tuple[Any, bytes, str, float]:
    """POST for a JSON reply: (parsed, raw body, content type, upstream ms). A body that is not JSON (or,
    with ``want_object``, not an object) is a protocol AttemptError, so the executor fails over."""
    t0 = time.perf_counter()
    resp = await client.post(url, data, headers, timeout_s=timeout_s)  # post_for_body's steps: one coroutine less
    if resp.status >= 400:
        raise await error_from_response(resp)
    raw, ctype = await read_bounded(resp, max_bytes), resp.headers.get("content-type", "application/json")
    upstream_ms = (time.perf_counter() - t0) * 1000
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AttemptError("protocol", "upstream sent a body that is not JSON") from None
    if want_object and not isinstance(obj, dict):
        raise AttemptError("protocol", "upstream sent a body that is not a JSON object")
    return obj, raw, ctype, upstream_ms


async def _not_a_stream(resp: UpstreamReplyStream, ctype: str) -> AttemptError:
    try:
        body = await resp.read(MAX_ERROR_BODY)
    except AttemptError:  # cut, or quiet: what it is not says enough
        body = b""
    said = vendor_error_message(body)
    shown = ctype.encode("ascii", "replace").decode()[:60]
    detail = f": {said[:200]}" if said else ""
    return AttemptError("protocol", f"upstream answered a stream request with {shown}{detail}")


async def open_event_stream(
    client: UpstreamTransport,
    url: str,
    data: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    limits: ReadLimits = DEFAULT_READ_LIMITS,
) -> tuple[UpstreamReplyStream, AsyncIterator[bytes], bytes]:
    """POST, wait for the first whole SSE event, return (response, remaining events, first event).

    Until the first event is in hand nothing has reached the client, so any
    failure here is an AttemptError and the executor may fail over: an error
    status, a 200 that is not an event stream, bytes that are not SSE, an
    event that never ends. Comments before it are skipped: they are not an
    answer (OpenRouter sends ``: OPENROUTER PROCESSING`` while it waits).
    After it, a wait of over the idle timeout (``timeout_s`` unless the
    provider sets one) for the next bytes, or a stream lasting past
    ``limits.stream_timeout_s``, ends the stream.
    """
    resp: UpstreamReplyStream | None = None
    try:
        resp = await client.post(url, data, headers, timeout_s=timeout_s)
        if resp.status >= 400:
            raise await error_from_response(resp)
        ctype = resp.headers.get("content-type", "")
        if ctype and not ctype.lstrip().lower().startswith("text/event-stream"):
            raise await _not_a_stream(resp, ctype)
        events = iter_sse_events(resp, limits.max_event_bytes)
        first = await events.__anext__()
        while is_comment(first):
            first = await events.__anext__()
    except BaseException as exc:
        if resp is not None:
            resp.close()
        if isinstance(exc, StopAsyncIteration):
            raise AttemptError("dropped", "upstream closed the stream before the first event") from None
        raise
    resp.idle_timeout(limits.stream_idle_timeout_s or timeout_s, total_s=limits.stream_timeout_s)
    return resp, events, first


def sse_data(event: bytes) -> Any:
    """The parsed JSON of an SSE event's data line, or None."""
    if event.startswith(b"data:") and event.find(b"\n") == len(event) - 2:  # one line: nearly every event
        try:
            return orjson.loads(event[5:])
        except orjson.JSONDecodeError:
            return None
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


class WatchedStream:
    """An upstream's remaining events relayed as they arrive, each seen by ``inspect`` first.

    However the relay ends (complete, cut, failed, or the client gone) the connection is settled
    once: handed back to the pool when the stream completed, else closed, with what was missing
    recorded in the status. Each protocol says how its events are metered and how it ends.
    """

    missing_end = "its end"  # what a complete stream of this protocol ends with

    def __init__(
        self, events: AsyncIterator[Any], meter: StreamMeter, status: StreamStatus, resp: UpstreamReplyStream
    ) -> None:
        self._events = events
        self._meter = meter
        self._status = status
        self._resp = resp

    def inspect(self, ev: bytes) -> bytes | None:
        """The event to forward (None drops it), after metering it and noticing the end."""
        return ev

    async def rest(self) -> AsyncIterator[bytes]:
        try:
            async for ev in self._events:
                out = self.inspect(ev)
                if out is not None:
                    yield out
        except Exception as exc:  # a failure mid-stream is recorded in the status, not raised into the relay
            if not self._status.completed:  # after the final event (the body's end may lag) the answer is whole
                self._status.error = classify_exception(exc).summary()
        finally:
            self._settle()

    def _settle(self) -> None:
        if self._status.completed:
            self._resp.release()
        else:
            self._resp.close()
            self._status.fail(f"upstream ended the stream without {self.missing_end}")  # unless it said why
