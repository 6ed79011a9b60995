"""``MemoryTransport``: an ``UpstreamTransport`` that answers in memory, for tests (as httpx's MockTransport).

A handler gets each request (URL, headers, body) and returns a scripted
answer: a ``Reply`` (status, headers, a JSON body or an SSE stream given as
a list of events or an async iterator), an ``AttemptError`` to raise
(refused, connect, timeout, dropped, protocol: the kinds and words of
``UpstreamHTTP``), or ``HANG`` for an upstream that never answers. So the
adapters and the pipeline above them meet every upstream behaviour with
no sockets and no stand-in processes.

The fake keeps the real client's contract: the same checks of the URL and
headers, the answer and its whole body due within ``timeout_s``, then an
idle timeout once a stream asks for one, released or closed responses. A
body is produced as it is read, so no task runs per response and a slow
reader is never taken for a quiet upstream.

Example::

    transport = MemoryTransport(in_order(
        Reply.json({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "7"}),
        Reply.sse([chunk, usage_chunk, "[DONE]"]),
    ))
    adapter = OpenAIChatAdapter(transport)
    ...
    assert transport.requests[0].json["model"] == "gpt-4o-mini"
    assert not transport.open_responses
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, Literal

import orjson

from tiergate.adapters.upstream_http import header_block, parse_origin
from tiergate.core.errors import AttemptError


class _Hang:
    """Never answers: as a handler's answer, no head comes; as a body part, no more data comes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "HANG"


HANG: Final = _Hang()

# A body part: raw bytes as they are; a str or a dict is one SSE event (see sse_event);
# an exception is raised where it stands (the stream is cut there); HANG stalls for good.
Part = bytes | str | dict[str, Any] | BaseException | _Hang


def sse_event(data: Any, *, event: str | None = None) -> bytes:
    """One SSE event: a str is sent as its data line (``"[DONE]"``), anything else as JSON.

    A dict with a string ``type`` gets an ``event:`` line of that name, as
    Anthropic sends every event; pass bytes to a ``Reply`` for anything else.
    """
    if event is None and isinstance(data, dict) and isinstance(data.get("type"), str):
        event = data["type"]
    line = data.encode() if isinstance(data, str) else orjson.dumps(data)
    return (f"event: {event}\n".encode() if event else b"") + b"data: " + line + b"\n\n"


@dataclass(frozen=True, slots=True)
class Reply:
    """A scripted answer. ``body``: bytes, or parts (a list, or an async iterator for timed ones).

    An async iterator serves one response: build the Reply in the handler, per request.
    Header names are matched case-insensitively, as on the wire.
    """

    status: int = 200
    body: bytes | Sequence[Part] | AsyncIterable[Part] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""

    @classmethod
    def json(cls, obj: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
        """A JSON body (bytes are sent as they are, e.g. a fixture file or something malformed)."""
        body = obj if isinstance(obj, bytes) else orjson.dumps(obj)
        return cls(status, body, {"content-type": "application/json", **(headers or {})})

    @classmethod
    def sse(
        cls,
        events: bytes | Sequence[Part] | AsyncIterable[Part],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An event stream: a whole transcript as bytes, or its events / chunks one by one."""
        return cls(status, events, {"content-type": "text/event-stream", **(headers or {})})


@dataclass(frozen=True, slots=True)
class SentRequest:
    """One request as the transport received it."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    timeout_s: float

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    def header(self, name: str) -> str | None:
        """A header's value, whatever the case of its name."""
        name = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == name), None)


Answer = Reply | BaseException | _Hang  # an exception is raised by ``post``; HANG: no answer ever
Handler = Callable[[SentRequest], Answer | Awaitable[Answer]]


def in_order(*answers: Answer) -> Handler:
    """A handler giving each answer in turn, one per request; one request too many fails the test."""
    it: Iterator[Answer] = iter(answers)

    def handler(request: SentRequest) -> Answer:
        try:
            return next(it)
        except StopIteration:
            raise AssertionError(f"MemoryTransport: no answer scripted for a request to {request.url}") from None

    return handler


# The failures UpstreamHTTP raises, worded as it words them (a fresh exception each: they carry tracebacks).
def refused() -> AttemptError:
    return AttemptError("refused", "connection refused")


def connect_failed(url: str = "http://upstream.test/v1", detail: str = "Name or service not known") -> AttemptError:
    o = parse_origin(url)
    return AttemptError("connect", f"cannot connect to {o.host}:{o.port}: {detail}")


def connect_timeout(url: str = "http://upstream.test/v1", seconds: float = 5.0) -> AttemptError:
    o = parse_origin(url)
    return AttemptError("timeout", f"connecting to {o.host}:{o.port} took over {seconds:g} s")


def dropped() -> AttemptError:
    return AttemptError("dropped", "connection dropped by upstream")


def malformed(detail: str = "Invalid constant string") -> AttemptError:
    return AttemptError("protocol", f"upstream sent malformed HTTP: {detail}")


async def _parts(body: bytes | str | Sequence[Part] | AsyncIterable[Part]) -> AsyncIterator[bytes]:
    if isinstance(body, (bytes, str)):  # a whole body (a str one is text, not a list of events)
        if body:
            yield body.encode() if isinstance(body, str) else body
        return
    if isinstance(body, AsyncIterable):
        async for part in body:
            yield await _part(part)
    else:
        for part in body:
            yield await _part(part)


async def _part(part: Part) -> bytes:
    if isinstance(part, bytes):
        return part
    if isinstance(part, BaseException):
        raise part
    if isinstance(part, _Hang):
        await asyncio.get_running_loop().create_future()  # only a timeout (or a cancel) ends this
    return sse_event(part)


class MemoryResponse:
    """One scripted response, with UpstreamResponse's interface; ``outcome`` says how it ended."""

    def __init__(self, request: SentRequest, reply: Reply, deadline: float, timeout_s: float) -> None:
        self.request = request
        self.status = reply.status
        try:
            self.reason = reply.reason or HTTPStatus(reply.status).phrase
        except ValueError:
            self.reason = reply.reason
        self.headers = {k.lower(): v for k, v in reply.headers.items()}
        # "reused": released after the whole body (a real connection would go back to the pool); "closed": not
        self.outcome: Literal["open", "reused", "closed"] = "open"
        self._body = _parts(reply.body)
        self._deadline = deadline
        self._timeout_s = timeout_s
        self._idle_s: float | None = None
        self._sent_at = deadline - timeout_s
        self._total_s = 0.0
        self._hard_at = float("inf")
        self._complete = False
        self._error: BaseException | None = None
        self._reader: asyncio.Task[Any] | None = None  # the task waiting for the next part, which close() wakes
        self._closing = False

    def idle_timeout(self, seconds: float, *, total_s: float | None = None) -> None:
        self._idle_s = seconds
        if total_s is not None:
            self._total_s, self._hard_at = total_s, self._sent_at + total_s

    async def _next(self) -> bytes | None:
        """The next part of the body, None at its end; failures as the real client's."""
        if self._error is not None:
            raise self._error
        if self._complete:
            return None
        if self.outcome != "open":
            raise AttemptError("dropped", "the response was closed before its body was read")
        loop = asyncio.get_running_loop()
        when = self._deadline if self._idle_s is None else min(loop.time() + self._idle_s, self._hard_at)
        self._reader = asyncio.current_task()
        try:
            if loop.time() >= self._hard_at:  # parts that come without a pause would never meet the timer
                raise TimeoutError
            async with asyncio.timeout_at(when) as t:
                part = await anext(self._body, None)
        except TimeoutError:
            if loop.time() < self._hard_at and not t.expired():
                raise
            if loop.time() >= self._hard_at:
                self._error = AttemptError("timeout", f"the stream went on past its {self._total_s:g} s deadline")
            elif self._idle_s is not None:
                self._error = AttemptError("timeout", f"no data from upstream for {self._idle_s:g} s")
            else:
                self._error = AttemptError("timeout", f"no answer within {self._timeout_s:g} s")
        except asyncio.CancelledError:
            task = self._reader
            if not self._closing or task is None or task.uncancel() > 0:
                raise  # a real cancellation of the reader, not close() waking it
            self._closing = False
            raise AttemptError("dropped", "the response was closed before its end") from None
        except Exception as exc:  # a scripted failure (an AttemptError, as the real client's)
            self._error = exc
        else:
            if part is None:
                self._complete = True
            return part
        finally:
            self._reader = None
        self.close()
        raise self._error

    async def read(self, limit: int | None = None) -> bytes:
        parts: list[bytes] = []
        n = 0
        try:
            while limit is None or n < limit:
                part = await self._next()
                if part is None:
                    break
                parts.append(part)
                n += len(part)
        except BaseException:  # cancelled, or the body failed: the answer is abandoned
            self.close()
            raise
        body = b"".join(parts)
        self.release()
        return body if limit is None else body[:limit]

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while (part := await self._next()) is not None:
                if part:
                    yield part
        finally:
            self.release()

    def release(self) -> None:
        if self.outcome == "open":
            self.outcome = "reused" if self._complete and self._error is None else "closed"

    def close(self) -> None:
        if self.outcome == "open":
            self.outcome = "closed"
            reader = self._reader
            if reader is not None and reader is not asyncio.current_task() and not reader.done():
                self._closing = True  # as the real client: a reader waiting in another task is woken, not left
                reader.cancel()


class MemoryTransport:
    """Answers every ``post`` with ``handler(request)``; keeps every request and response for assertions."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[SentRequest] = []  # as received, in order (a request the client refused to send is not)
        self.responses: list[MemoryResponse] = []

    async def post(self, url: str, data: bytes, headers: Mapping[str, str], *, timeout_s: float) -> MemoryResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        parse_origin(url)  # the real client's checks, with its errors
        header_block(headers, len(data))
        request = SentRequest(url, dict(headers), data, timeout_s)
        self.requests.append(request)
        try:
            async with asyncio.timeout_at(deadline) as t:
                result = self._handler(request)
                answer = await result if inspect.isawaitable(result) else result
                if isinstance(answer, _Hang):
                    await loop.create_future()
        except TimeoutError:
            if not t.expired():
                raise
            raise AttemptError("timeout", f"no answer within {timeout_s:g} s") from None
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, Reply), f"a MemoryTransport handler answered {answer!r}"
        response = MemoryResponse(request, answer, deadline, timeout_s)
        self.responses.append(response)
        return response

    @property
    def open_responses(self) -> list[MemoryResponse]:
        """Responses neither released nor closed: after an adapter call, a leak."""
        return [r for r in self.responses if r.outcome == "open"]

    async def close(self) -> None:
        for r in self.open_responses:
            r.close()
