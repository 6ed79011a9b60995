"""Upstream misbehaviour on command: the faults a gateway must survive without losing memory or clients.

Each is a fault mode (queued through ``/_control/faults`` like the others):

- ``endless``: a well-formed stream in the vendor's protocol that never ends,
  one content event every ``delay_s`` (default 10 ms).
- ``no_boundary``: a 200 event stream whose bytes never end an event (no blank
  line), at ``rate`` bytes a second (default 1 MB/s); ``after_chunks`` valid
  events first.
- ``huge_event``: one event of ``size`` bytes, sent at once, after
  ``after_chunks`` valid events.
- ``garbage``: a 200 with ``content_type`` (default text/event-stream) and
  ``size`` random bytes (default 4 KB) for its body, after ``after_chunks``
  valid events.
- ``huge_reply``: a non-streamed 200 JSON body of ``size`` bytes (default
  2 GiB), generated as it is sent (nothing held in memory), chunked unless
  ``declared`` (then with its Content-Length).
- ``usage``: the normal answer with every usage object it carries overwritten
  by the fault's ``usage`` fields (``{"prompt_tokens": 1e300}``): plain
  replies, the stream usage chunk, Anthropic's message_start and message_delta.
- ``comment_first``: the normal stream, preceded by ``size`` (default 1)
  comment events (``: OPENROUTER PROCESSING``).

Every stream a fault serves is recorded (``/_control/streams``): events sent,
bytes sent, when it started and when its client went away (``time.time()``),
so a test can tell how soon a gateway let go of an upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import MutableSequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from .faults import Fault

HOSTILE_MODES = ("endless", "no_boundary", "huge_event", "garbage", "huge_reply")
REWRITING_MODES = ("usage", "comment_first")
WORDS = ("amber ", "basalt ", "cedar ", "delta ", "ember ", "fjord ", "granite ", "harbor ")
PIECE = 64 * 1024


@dataclass
class StreamRecord:
    mode: str
    started: float
    ended: float | None = None
    events: int = 0
    bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _anthropic(path: str) -> bool:
    return path.startswith("/v1/messages")


def content_event(path: str, i: int) -> bytes:
    """One content event of the vendor's stream, carrying one word."""
    word = WORDS[i % len(WORDS)]
    if _anthropic(path):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}
        return b"event: content_block_delta\ndata: " + orjson.dumps(delta) + b"\n\n"
    chunk = {
        "id": "chatcmpl-endless",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "standin",
        "choices": [{"index": 0, "delta": {"content": word}, "logprobs": None, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def opening_events(path: str) -> list[bytes]:
    """What a vendor sends before its first content: Anthropic's message_start and content_block_start."""
    if not _anthropic(path):
        return []
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_endless",
            "type": "message",
            "role": "assistant",
            "model": "standin",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1},
        },
    }
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    return [
        b"event: message_start\ndata: " + orjson.dumps(start) + b"\n\n",
        b"event: content_block_start\ndata: " + orjson.dumps(block) + b"\n\n",
    ]


class _Writer:
    """Writes a fault's stream and records it; a client gone ends the handler quietly."""

    def __init__(self, request: web.Request, record: StreamRecord) -> None:
        self.request = request
        self.record = record

    async def write(self, resp: web.StreamResponse, data: bytes, *, event: bool = True) -> bool:
        try:
            await resp.write(data)
        except (ConnectionError, RuntimeError):
            return False
        self.record.bytes += len(data)
        self.record.events += event
        return True


async def serve(request: web.Request, fault: Fault, streams: MutableSequence[StreamRecord]) -> web.StreamResponse:
    """Answer ``request`` as ``fault.mode`` says."""
    record = StreamRecord(fault.mode, time.time())
    streams.append(record)
    try:
        return await _serve(request, fault, _Writer(request, record))
    finally:
        record.ended = time.time()


async def _serve(request: web.Request, fault: Fault, w: _Writer) -> web.StreamResponse:
    if fault.mode == "huge_reply":
        return await _huge_reply(request, fault, w)
    ctype = fault.content_type or "text/event-stream"
    resp = web.StreamResponse(headers={"Content-Type": ctype, "Cache-Control": "no-cache"})
    await resp.prepare(request)
    path = request.path
    if fault.mode == "endless" or fault.after_chunks:  # else the very first bytes misbehave
        for ev in opening_events(path):
            if not await w.write(resp, ev):
                return resp
    for i in range(fault.after_chunks if fault.mode != "endless" else 1 << 62):
        if not await w.write(resp, content_event(path, i)):
            return resp
        if fault.mode == "endless" or fault.delay_s:
            await asyncio.sleep(fault.delay_s or 0.01)
    if fault.mode == "garbage":  # well framed as HTTP: only what it carries is wrong
        await w.write(resp, os.urandom(fault.size or 4096) + b"\n\n", event=False)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return resp
    if fault.mode == "huge_event":
        await w.write(resp, b"data: " + b"x" * max(0, (fault.size or 2 << 20) - 8) + b"\n\n")
        return resp
    # no_boundary: an event that never ends
    rate = fault.rate or 1 << 20
    piece = max(1, min(PIECE, int(rate / 10)))
    if not await w.write(resp, b"data: ", event=False):
        return resp
    filler = b"y" * piece
    while True:
        if not await w.write(resp, filler, event=False):
            return resp
        await asyncio.sleep(piece / rate)


async def _huge_reply(request: web.Request, fault: Fault, w: _Writer) -> web.StreamResponse:
    size = fault.size or 2 << 30
    head = (
        b'{"id":"chatcmpl-huge","object":"chat.completion",'
        b'"choices":[{"index":0,"message":{"role":"assistant","content":"'
    )
    tail = b'"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    if fault.declared:
        resp.content_length = size
    await resp.prepare(request)
    if not await w.write(resp, head, event=False):
        return resp
    left = size - len(head) - len(tail)
    pad = b"z" * PIECE
    while left > 0:
        n = min(PIECE, left)
        if not await w.write(resp, pad[:n], event=False):
            return resp
        left -= n
        if fault.rate:
            await asyncio.sleep(n / fault.rate)
    await w.write(resp, tail, event=False)
    try:
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass
    return resp


def overwrite_usage(obj: Any, fields: dict[str, Any]) -> bool:
    """Overwrite the usage objects in a reply, chunk or event in place; whether there was one."""
    found = False
    if not isinstance(obj, dict):
        return False
    for holder in (obj, obj.get("message")):
        if isinstance(holder, dict) and isinstance(holder.get("usage"), dict):
            holder["usage"].update(fields)
            found = True
    return found


def rewrite_event(event: bytes, fields: dict[str, Any]) -> bytes:
    """An SSE event with its usage overwritten (events without usage go as they are)."""
    if b'"usage"' not in event:
        return event
    lines = event.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(b"data: {"):
            obj = orjson.loads(line[6:])
            if overwrite_usage(obj, fields):
                lines[i] = b"data: " + orjson.dumps(obj)
    return b"\n".join(lines)


def rewrite_reply(resp: web.Response, fields: dict[str, Any]) -> web.Response:
    """A plain JSON reply with its usage overwritten."""
    body = resp.body if isinstance(resp.body, bytes) else b""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return resp
    if overwrite_usage(obj, fields):
        resp.body = orjson.dumps(obj)
    return resp


def comments(n: int) -> bytes:
    return b": OPENROUTER PROCESSING\n\n" * max(1, n)
