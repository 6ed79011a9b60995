"""Shared plumbing for the stand-ins.

Every vendor server needs the same two things, so they live here once:

* the ``/_control`` API -- a FIFO queue of faults popped by each model request,
  plus a recording of every request -- so tests can script upstream failures
  and assert on exactly what a gateway sent;
* :class:`EventStream`, an SSE writer that sends each event as its own write
  (so a proxy's pass-through can be observed) and honours ``cut_stream``.

The deterministic fake model every stand-in answers with is in :mod:`.fake_model`.

All state hangs off the ``aiohttp`` application; nothing here is global.
"""

from __future__ import annotations

import asyncio
import secrets
import string
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from aiohttp import web

from . import hostile
from .capability import Capability

ErrorFactory = Callable[..., web.Response]
"""``(status, message, *, code=None, param=None) -> Response`` in the vendor's shape."""

MODES = ("status", "drop", "cut_stream", "slow", "linger", "reply", *hostile.HOSTILE_MODES, *hostile.REWRITING_MODES)
MAX_RECORDED = 10_000


class ApiError(Exception):
    """Raised by handlers; rendered by the middleware in the vendor's error shape."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


@dataclass(eq=False)
class Fault:
    mode: str
    times: int = 1
    status: int = 500
    retry_after: float | None = None
    after_chunks: int = 0
    delay_s: float = 0.0
    model: str | None = None
    path: str | None = None
    size: int = 0  # bytes (huge_reply, huge_event, garbage) or comment events (comment_first)
    rate: float = 0.0  # bytes a second (no_boundary, huge_reply); 0: as fast as possible
    content_type: str | None = None  # garbage
    declared: bool = False  # huge_reply: send its Content-Length
    usage: dict[str, Any] | None = None  # usage: the fields to overwrite
    body: str | None = None  # reply: a 200 with exactly this body (content_type, default application/json)

    @classmethod
    def parse(cls, raw: Any) -> Fault:
        """Validate one fault dict; ValueError says what is wrong."""
        if not isinstance(raw, dict) or raw.get("mode") not in MODES:
            raise ValueError(f"fault needs mode in {MODES}: {raw!r}")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault keys {sorted(unknown)}")
        fault = cls(**raw)
        if not _is_num(fault.times, int) or fault.times < 1:
            raise ValueError("times must be an integer >= 1")
        if not _is_num(fault.status, int) or not 100 <= fault.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if not _is_num(fault.after_chunks, int) or fault.after_chunks < 0:
            raise ValueError("after_chunks must be an integer >= 0")
        for key in ("retry_after", "delay_s"):
            val = getattr(fault, key)
            if val is not None and (not _is_num(val) or val < 0):
                raise ValueError(f"{key} must be a number >= 0")
        if fault.mode in ("slow", "linger") and "delay_s" not in raw:
            raise ValueError(f"{fault.mode} fault needs delay_s")
        if not _is_num(fault.size, int) or fault.size < 0 or not _is_num(fault.rate) or fault.rate < 0:
            raise ValueError("size must be an integer >= 0 and rate a number >= 0")
        if fault.mode == "reply" and not isinstance(fault.body, str):
            raise ValueError("reply fault needs body: the text of the 200 to send")
        if fault.mode == "usage" and not isinstance(fault.usage, dict):
            raise ValueError('usage fault needs usage: {"prompt_tokens": ...}')
        return fault

    def applies(self, model: str | None, path: str) -> bool:
        return (self.model is None or self.model == model) and (self.path is None or self.path == path)


def _is_num(v: Any, kinds: type | tuple[type, ...] = (int, float)) -> bool:
    return isinstance(v, kinds) and not isinstance(v, bool)


class ControlState:
    """Faults still to fire, requests seen so far, and per-model counts."""

    def __init__(self, model_paths: Iterable[str], error_response: ErrorFactory) -> None:
        self.model_paths = frozenset(model_paths)
        self.error_response = error_response
        self.faults: deque[Fault] = deque()
        # Bounded so a long-running demo tier does not grow without limit.
        self.requests: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED)
        self.model_counts: Counter[str] = Counter()
        self.streams: deque[hostile.StreamRecord] = deque(maxlen=MAX_RECORDED)  # answers of hostile faults
        self.capability: Capability | None = None  # simulated capability per model (see .capability)

    def model_request(self, path: str, model: str | None) -> tuple[bool, str | None]:
        """Whether ``path`` asks a model for something, and which model: the body's, or for a path
        under a model collection (Gemini's ``/v1beta/models/NAME:generateContent``) the one it names."""
        if path in self.model_paths:
            return True, model
        for base in self.model_paths:
            if path.startswith(base + "/"):
                return True, model or path[len(base) + 1 :].split(":", 1)[0]
        return False, model

    def take(self, model: str | None, path: str) -> Fault | None:
        """Pop (one use of) the oldest fault that applies to this request."""
        for fault in self.faults:
            if fault.applies(model, path):
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
                return fault
        return None

    def reset(self) -> None:
        self.faults.clear()
        self.requests.clear()
        self.model_counts.clear()
        self.streams.clear()
        self.capability = None


CONTROL = web.AppKey("tiergate_standin_control", ControlState)
_CUT_AFTER = web.RequestKey("tiergate_standin_cut_after", int)
_USAGE = web.RequestKey("tiergate_standin_usage", dict)
_COMMENTS = web.RequestKey("tiergate_standin_comments", int)
_LINGER = web.RequestKey("tiergate_standin_linger", float)


def install_control(app: web.Application, *, model_paths: Iterable[str], error_response: ErrorFactory) -> None:
    """Attach fault/recording state, its middleware and the /_control routes."""
    app[CONTROL] = ControlState(model_paths, error_response)
    app.middlewares.append(_control_middleware)
    app.router.add_post("/_control/faults", _add_faults)
    app.router.add_get("/_control/faults", _list_faults)
    app.router.add_get("/_control/requests", _list_requests)
    app.router.add_get("/_control/stats", _stats)
    app.router.add_get("/_control/streams", _streams)
    app.router.add_post("/_control/reset", _reset)
    app.router.add_post("/_control/capability", _set_capability)


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def parse_json(raw: bytes) -> Any:
    """Parsed body, or None when it is empty or not JSON."""
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


async def _add_faults(request: web.Request) -> web.Response:
    body = parse_json(await request.read())
    if not isinstance(body, dict) or not isinstance(body.get("faults"), list):
        return json_response({"error": 'expected {"faults": [...]}'}, 400)
    try:
        faults = [Fault.parse(raw) for raw in body["faults"]]
    except (TypeError, ValueError) as exc:
        return json_response({"error": str(exc)}, 400)
    state = request.app[CONTROL]
    state.faults.extend(faults)
    return json_response({"queued": len(state.faults)})


async def _set_capability(request: web.Request) -> web.Response:
    try:
        cap = Capability.parse(parse_json(await request.read()))
    except ValueError as exc:
        return json_response({"error": str(exc)}, 400)
    request.app[CONTROL].capability = cap
    return json_response({"models": sorted(cap.profiles)})


async def _list_faults(request: web.Request) -> web.Response:
    return json_response([asdict(f) for f in request.app[CONTROL].faults])


async def _list_requests(request: web.Request) -> web.Response:
    return json_response(list(request.app[CONTROL].requests))


async def _stats(request: web.Request) -> web.Response:
    return json_response(dict(request.app[CONTROL].model_counts))


async def _streams(request: web.Request) -> web.Response:
    return json_response([r.as_dict() for r in request.app[CONTROL].streams])


async def _reset(request: web.Request) -> web.Response:
    request.app[CONTROL].reset()
    return json_response({"ok": True})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _control_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record the request, apply the next matching fault, render ApiError."""
    if request.path.startswith("/_control/"):
        return await handler(request)
    unserved = request.match_info.http_exception is not None
    if request.method == "GET" and unserved:
        # a GET for a path this vendor does not serve (the gateway's start-up /props probe of local engines):
        # answered 404 as the vendor would, and not logged, so the log stays the traffic that serves requests
        return await handler(request)
    if request.path == "/api/show":
        # the gateway's other start-up probe (Ollama's model card): the vendor's answer, not logged either
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
            return request.app[CONTROL].error_response(exc.status, f"Invalid URL ({request.method} {request.path})")
    state = request.app[CONTROL]
    body = parse_json(await request.read())
    model = body.get("model") if isinstance(body, dict) else None
    model = model if isinstance(model, str) else None
    fault = None
    asks_model, model = state.model_request(request.path, model)
    if asks_model:
        fault = state.take(model, request.path)
        if model is not None:
            state.model_counts[model] += 1
    state.requests.append(
        {
            "method": request.method,
            "path": request.path_qs,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body,
            "fault": fault.mode if fault else None,
        }
    )
    try:
        if fault is None:
            return await handler(request)
        if fault.mode == "status":
            resp = state.error_response(fault.status, f"Injected fault: HTTP {fault.status} from the stand-in.")
            if fault.retry_after is not None:
                ra = fault.retry_after
                resp.headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
            return resp
        if fault.mode == "drop":
            _hang_up(request)
            return web.Response()  # never delivered: the transport is closed
        if fault.mode == "slow":
            await asyncio.sleep(fault.delay_s)
            return await handler(request)
        if fault.mode == "reply":  # a well-framed 200 that carries what the test says (not the vendor's shape)
            return web.Response(body=(fault.body or "").encode(), content_type=fault.content_type or "application/json")
        if fault.mode == "linger":  # a stream whose body ends delay_s after its final event
            request[_LINGER] = fault.delay_s
            return await handler(request)
        if fault.mode in hostile.HOSTILE_MODES:
            return await hostile.serve(request, fault, state.streams)
        if fault.mode in hostile.REWRITING_MODES:
            if fault.mode == "usage":
                request[_USAGE] = fault.usage or {}
            else:
                request[_COMMENTS] = fault.size
            answer = await handler(request)
            if fault.usage and isinstance(answer, web.Response) and not answer.prepared:
                return hostile.rewrite_reply(answer, fault.usage)
            return answer
        request[_CUT_AFTER] = fault.after_chunks
        answer = await handler(request)
        if isinstance(answer, web.Response) and not answer.prepared:
            return await _truncate(request, answer)  # a non-streaming reply, cut mid-body
        return answer
    except ApiError as err:
        return state.error_response(err.status, err.message, code=err.code, param=err.param)
    except _StreamCut as cut:
        return cut.response
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:  # vendor-shaped, like the cloud
        return state.error_response(exc.status, f"Invalid URL ({request.method} {request.path})")


def _hang_up(request: web.Request) -> None:
    """Close the TCP connection; already-written bytes still go out first."""
    if request.transport is not None:
        request.transport.close()


async def _truncate(request: web.Request, resp: web.Response) -> web.StreamResponse:
    body = resp.body if isinstance(resp.body, bytes) else b""
    out = web.StreamResponse(status=resp.status, headers=resp.headers)
    out.content_length = len(body)
    await out.prepare(request)
    try:
        await out.write(body[: len(body) // 2])
    except ConnectionError:
        pass
    _hang_up(request)
    return out


class _StreamCut(Exception):
    """Unwinds a streaming handler once its connection is gone."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__("stream cut")
        self.response = response


class EventStream:
    """SSE response writer: one write per event, optional delay between events.

    Under a ``cut_stream`` fault it hangs up after ``after_chunks`` events and
    never sends the terminator (``final=True`` event). A client that goes away
    mid-stream ends the handler quietly instead of logging a 500.
    """

    def __init__(self, request: web.Request, delay_s: float) -> None:
        self._request = request
        self._delay_s = delay_s
        self._cut_after = request.get(_CUT_AFTER)
        self._usage = request.get(_USAGE)
        self._comments = request.get(_COMMENTS)
        self._linger = request.get(_LINGER)
        self._sent = 0
        self.response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )

    async def open(self) -> None:
        await self.response.prepare(self._request)
        if self._comments is not None:
            await self.response.write(hostile.comments(self._comments))
        if self._cut_after == 0:
            self._cut()

    async def send(self, event: bytes, *, final: bool = False) -> None:
        if final and self._cut_after is not None:
            self._cut()
        if self._sent and self._delay_s > 0:
            await asyncio.sleep(self._delay_s)
        if self._usage:
            event = hostile.rewrite_event(event, self._usage)
        try:
            await self.response.write(event)
        except ConnectionError:
            raise _StreamCut(self.response) from None
        self._sent += 1
        if self._cut_after is not None and self._sent >= self._cut_after:
            self._cut()

    async def close(self) -> web.StreamResponse:
        """End the body one delay after the last event, like an upstream that flushes its terminator apart."""
        if self._linger is not None:
            await asyncio.sleep(self._linger)
        elif self._sent and self._delay_s > 0:
            await asyncio.sleep(self._delay_s)
        try:
            await self.response.write_eof()
        except ConnectionError:
            pass
        return self.response

    def _cut(self) -> None:
        _hang_up(self._request)
        raise _StreamCut(self.response)


_ALNUM = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))
