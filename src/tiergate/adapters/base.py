"""What every protocol adapter returns and raises, and the HTTP plumbing they share.

An adapter turns one attempt at one deployment into an ``UpstreamReply``
(non-streaming) or an ``UpstreamStream`` whose first event has already
arrived, or raises ``AttemptError`` saying whether another try makes sense.
The executor decides what to do next; adapters never retry.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import aiohttp
import orjson

from tiergate.types import Usage

AttemptKind = Literal["refused", "connect", "timeout", "status", "dropped", "protocol"]
MAX_ERROR_BODY = 64 * 1024


class AttemptError(Exception):
    """One failed attempt; ``retryable`` says whether the same deployment may be tried again."""

    def __init__(
        self,
        kind: AttemptKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.body = body

    @property
    def retryable(self) -> bool:
        if self.kind in ("timeout", "dropped", "connect"):
            return True
        return self.kind == "status" and self.status is not None and (self.status in (408, 409, 429) or self.status >= 500)

    @property
    def client_fault(self) -> bool:
        """The upstream rejected the request itself (400, 404, 413, 422): no other deployment will like it more."""
        return self.kind == "status" and self.status in (400, 404, 413, 422)

    def summary(self) -> str:
        return f"{self.status} {self.message}" if self.status else f"{self.kind}: {self.message}"


@dataclass(frozen=True, slots=True)
class ClientHints:
    """What of the client's own request may travel upstream on a same-protocol pass-through."""

    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. anthropic-version, anthropic-beta
    query: str = ""  # e.g. "beta=true" from Claude Code


NO_HINTS = ClientHints()


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
    state: dict[str, object] = field(default_factory=dict)  # completed: bool, error: str
    notes: list[str] = field(default_factory=list)


def parse_retry_after(headers: "aiohttp.typedefs.LooseHeaders") -> float | None:
    ms = headers.get("retry-after-ms")  # type: ignore[union-attr]
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")  # type: ignore[union-attr]
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
    """Map a transport exception to an AttemptError; refused connections are definitive."""
    if isinstance(exc, AttemptError):
        return exc
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_err = getattr(exc, "os_error", None)
        if isinstance(os_err, OSError) and os_err.errno == errno.ECONNREFUSED:
            return AttemptError("refused", "connection refused")
        return AttemptError("connect", f"cannot connect: {exc.os_error if hasattr(exc, 'os_error') else exc}")
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return AttemptError("timeout", "timed out")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionResetError)):
        return AttemptError("dropped", "connection dropped by upstream")
    if isinstance(exc, aiohttp.ClientError):
        return AttemptError("dropped", f"{type(exc).__name__}: {exc}")
    return AttemptError("protocol", f"{type(exc).__name__}: {exc}")


def vendor_error_message(body: bytes) -> str | None:
    """The human message inside an OpenAI or Anthropic error envelope, if there is one."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"].replace("\n", " ")
    if isinstance(err, str):
        return err
    return None


async def error_from_response(resp: aiohttp.ClientResponse) -> AttemptError:
    body = await resp.content.read(MAX_ERROR_BODY)
    text = vendor_error_message(body) or body.decode("utf-8", "replace").strip().replace("\n", " ")
    return AttemptError(
        "status",
        text[:300] or resp.reason or "error",
        status=resp.status,
        retry_after=parse_retry_after(resp.headers),
        body=body,
    )


async def iter_sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Split an SSE body into whole events (each ending in a blank line), as they arrive."""
    buf = b""
    async for chunk in resp.content.iter_any():
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
    session: aiohttp.ClientSession, url: str, data: bytes, headers: Mapping[str, str], *,
    timeout_s: float, connect_timeout_s: float,
) -> tuple[bytes, str]:
    """POST and return (body, content type); any failure becomes an AttemptError."""
    try:
        async with session.post(
            url, data=data, headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, connect_timeout_s)),
        ) as resp:
            if resp.status >= 400:
                raise await error_from_response(resp)
            return await resp.read(), resp.headers.get("Content-Type", "application/json")
    except Exception as exc:  # noqa: BLE001 - every transport failure becomes an AttemptError
        raise classify_exception(exc) from None


async def open_event_stream(
    session: aiohttp.ClientSession, url: str, data: bytes, headers: Mapping[str, str], *,
    timeout_s: float, connect_timeout_s: float,
) -> tuple[aiohttp.ClientResponse, AsyncIterator[bytes], bytes]:
    """POST, wait for the first whole SSE event, return (response, remaining events, first event).

    Until the first event is in hand nothing has reached the client, so any
    failure here is an AttemptError and the executor may fail over.
    """
    ctx = session.post(
        url, data=data, headers=headers,
        timeout=aiohttp.ClientTimeout(total=None, connect=min(timeout_s, connect_timeout_s), sock_read=timeout_s),
    )
    resp: aiohttp.ClientResponse | None = None
    try:
        # asyncio.timeout, not wait_for: wait_for wraps each await in a new task (an extra loop turn each,
        # measurable in the added time to first token); both bound the wait for the first event to timeout_s
        async with asyncio.timeout(timeout_s):
            resp = await ctx.__aenter__()
            if resp.status >= 400:
                raise await error_from_response(resp)
            events = iter_sse_events(resp)
            first = await events.__anext__()
    except StopAsyncIteration:
        if resp is not None:
            resp.close()
        raise AttemptError("dropped", "upstream closed the stream before the first event") from None
    except Exception as exc:  # noqa: BLE001
        if resp is not None:
            resp.close()
        raise classify_exception(exc) from None
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
