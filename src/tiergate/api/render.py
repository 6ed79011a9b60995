"""An Answer onto the wire: a plain body, or events relayed as they arrive.

Both surfaces render through here, in their own content types and error
events; the Answer settles the request exactly once however the exchange
ends (answered, upstream cut, client gone, a bug while relaying).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from tiergate.api.client_watch import ClientWatch
from tiergate.api.common import HEADER_CHARS, header_value
from tiergate.api.plain_reply import PlainReply, Reply
from tiergate.pipeline.answer import Answer

log = logging.getLogger("tiergate.api")

StreamErrorEvent = Callable[[str], bytes]  # an in-band error event in the client's own format

CUT_BY_SHUTDOWN = "cut by shutdown: the gateway stopped before the stream ended (server.drain_timeout_s)"
_CUT_KEY = "tiergate.cut_by_shutdown"


def mark_cut_by_shutdown(request: web.BaseRequest) -> None:
    """The server cancels this request's handler next, at the end of its drain (tiergate.client_protocol)."""
    request[_CUT_KEY] = True


def _headers(answer: Answer) -> dict[str, str]:
    """Which deployment answered and why, each value safe for a header."""
    ctx, outcome = answer.ctx, answer.outcome
    d = outcome.deployment
    rid, name, reason = ctx.request_id, d.name, outcome.reason
    joined = rid + name + reason  # one C pass over all three: the usual values need no repair
    if not (joined.isascii() and joined.isprintable()) or len(name) > HEADER_CHARS or len(reason) > HEADER_CHARS:
        rid, name, reason = header_value(rid), header_value(name), header_value(reason)
    headers = {
        "X-Request-ID": rid,
        "X-Tiergate-Deployment": name,
        "X-Tiergate-Tier": str(d.tier),
        "X-Tiergate-Reason": reason,
    }
    plan = ctx.plan
    if plan is not None and plan.warning:  # e.g. an unknown task, routed as tier>=0
        headers["X-Tiergate-Warning"] = header_value(plan.warning)
    return headers


async def plain_response(answer: Answer) -> PlainReply:
    reply = answer.reply
    cost = await answer.finish(status=200)
    headers = _headers(answer)
    headers["X-Tiergate-Cost-USD"] = f"{cost:.8f}"
    headers["X-Tiergate-Overhead-Ms"] = f"{answer.overhead_ms():.3f}"
    headers["Content-Type"] = header_value(reply.content_type)  # a plain header: aiohttp's content_type= parses again
    return PlainReply(reply.body, headers)


async def relay_stream(
    request: web.Request, answer: Answer, *, error_event: StreamErrorEvent | None = None
) -> web.StreamResponse:
    """Forward events as they arrive; the slot is freed before the event that completes the answer."""
    s = answer.stream
    headers = _headers(answer)
    headers["Cache-Control"] = "no-cache"
    status, error = 200, None
    ttft_ms = (time.perf_counter() - answer.ctx.started) * 1000
    headers["X-Tiergate-Overhead-Ms"] = f"{answer.overhead_ms():.3f}"  # gateway time to the first event
    resp = web.StreamResponse(status=200, headers=headers)
    resp.content_type = s.content_type  # text/event-stream; NDJSON for Ollama's clients
    delivered = False  # every event written: a client that hangs up during write_eof got the whole answer
    watch = ClientWatch(request, s.close)  # a hang-up closes the upstream even while nothing is written
    try:
        await resp.prepare(request)
        if s.first_event:
            if s.status.completed:
                await answer.complete()
            await resp.write(s.first_event)
        async for ev in s.rest:
            if s.status.completed:
                await answer.complete()
            await resp.write(ev)
        if watch.gone and not (s.status.completed and s.status.error is None):
            # a client that leaves once it read the final event (Codex does) got the whole answer: 200
            raise ConnectionResetError("client closed the connection")
        if s.status.error is not None:
            status, error = 502, s.status.error
            if error_event is not None:
                await resp.write(error_event(error))
        delivered = True
        await answer.complete()
        await resp.write_eof()
    except (ConnectionResetError, asyncio.CancelledError) as exc:
        if not delivered and request.get(_CUT_KEY):
            status, error = 503, CUT_BY_SHUTDOWN
            with contextlib.suppress(Exception):  # the client learns why its stream ends here
                if error_event is not None:
                    await resp.write(error_event(error))
        elif not delivered:
            status, error = 499, "client closed the connection"
        s.close()
        if isinstance(exc, asyncio.CancelledError):
            raise
        # the client is gone: nothing to answer, nothing to log (raised, aiohttp would log a 500 traceback)
    except Exception as exc:  # headers are sent: end the stream in-band, never a second response
        log.exception("stream relay failed (request %s)", answer.ctx.request_id)
        status, error = 500, f"internal error: {type(exc).__name__}"
        s.close()
        with contextlib.suppress(Exception):
            if error_event is not None:
                await resp.write(error_event(error))
            await resp.write_eof()
    finally:
        watch.stop()
        await answer.finish(status=status, ttft_ms=ttft_ms, error=error)
    return resp


def render(
    request: web.Request, answer: Answer, *, error_event: StreamErrorEvent | None = None
) -> Coroutine[Any, Any, Reply]:
    """The one answer dispatch every surface uses: a plain call returning the coroutine to await (no
    coroutine frame of its own per request)."""
    if answer.outcome.stream is not None:
        return relay_stream(request, answer, error_event=error_event)
    return plain_response(answer)
