"""Streaming translation: OpenAI chat.completion.chunk SSE <-> Anthropic Messages SSE.

Each translator is a small state machine fed one whole SSE event at a time
(the adapter's ``iter_sse_events`` already splits them) and returning zero or
more whole events in the other protocol, so the caller can forward bytes as
they come without buffering the reply. No I/O, no clocks beyond ``created``.

Anthropic clients expect content blocks one after another (start, deltas,
stop) with increasing ``index``; OpenAI streams text and several tool calls
as deltas keyed by tool ``index``. OpenAI -> Anthropic therefore closes the
open block whenever the kind of content or the tool call changes. A fragment
for a tool call whose block was already closed (a server interleaving
parallel calls) is still sent, under that block's index, which is how the
Anthropic SDK accumulates it.

Reasoning deltas some OpenAI-compatible servers send (``reasoning_content``)
are not turned into thinking blocks: those need a signature only Anthropic can
make. Anthropic thinking deltas have no Chat Completions form and are skipped.

Usage: OpenAI reports it in a last chunk with empty ``choices``, after the
finish_reason, so the Anthropic ``message_delta`` (stop reason plus usage) is
held back until ``[DONE]`` or ``finish()``. The ``usage`` tuple always counts
every prompt token (cache reads and writes included) as input.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from tiergate.adapters.translate_common import JsonObject, _obj
from tiergate.adapters.translate_responses import (
    ANTHROPIC_TO_OPENAI_STOP,
    OPENAI_TO_ANTHROPIC_STOP,
    _reason,
    openai_usage_from_anthropic,
)


def parse_sse(event: bytes) -> tuple[str | None, str | None]:
    """One whole SSE event -> (event name, data); data lines joined with newlines, comments skipped."""
    name: str | None = None
    data: list[str] = []
    for raw in event.replace(b"\r\n", b"\n").split(b"\n"):
        if not raw or raw.startswith(b":"):
            continue
        field, _, value = raw.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if field == b"event":
            name = value.decode("utf-8", "replace").strip()
        elif field == b"data":
            data.append(value.decode("utf-8", "replace"))
    return name, ("\n".join(data) if data else None)


def _load(data: str, protocol: str) -> JsonObject:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"stream: invalid JSON in an {protocol} event ({e})") from None
    if not isinstance(obj, dict):
        # ValueError, not TypeError: callers catch ValueError as "malformed upstream event"
        raise ValueError(f"stream: an {protocol} event is not a JSON object")
    return obj


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _block_index(obj: JsonObject) -> int | None:
    """An Anthropic event's block ``index``: None when absent, ValueError when it is not an integer."""
    index = obj.get("index")
    if index is None or isinstance(index, int) and not isinstance(index, bool):
        return index
    raise ValueError(f"stream: an Anthropic {obj.get('type')} event's index is not an integer")


def anthropic_event(kind: str, payload: JsonObject) -> bytes:
    """``event: X`` + ``data: {...}`` framing, the payload's ``type`` set to X."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **payload}) + b"\n\n"


class OpenAIToAnthropicStream:
    """Feed OpenAI SSE events (bytes, one whole event each, e.g. b'data: {...}\\n\\n' or
    b'data: [DONE]\\n\\n'); get Anthropic SSE bytes out.

    ``feed`` raises ValueError on an event whose data is not a JSON object.
    An OpenAI error object in the stream becomes an Anthropic ``error`` event
    and ends the translation (``finish`` then returns nothing).
    """

    def __init__(self, *, model: str, message_id: str, input_tokens_estimate: int = 0) -> None:
        self._model = model
        self._message_id = message_id
        self._prompt = max(0, input_tokens_estimate)
        self._cached = 0
        self._output = 0
        self._usage_seen = False
        self._started = False
        self._pinged = False
        self._done = False
        self._blocks = 0  # Anthropic blocks started so far
        self._open: int | None = None  # index of the open block
        self._open_tool: int | None = None  # OpenAI tool index of the open block, if a tool
        self._tools: dict[int, int] = {}  # OpenAI tool index -> Anthropic block index
        self._ids: dict[int, str] = {}  # OpenAI tool index -> tool call id
        self._finish: str | None = None

    @property
    def usage(self) -> tuple[int, int]:
        """(input_tokens, output_tokens) so far; the estimate until the usage chunk arrives."""
        return self._prompt, self._output

    def feed(self, event: bytes) -> bytes:
        """One whole event, or several joined (a bridge below this one may yield a few at a time)."""
        if event.count(b"\n\n") > 1:
            return b"".join(self._feed_one(ev + b"\n\n") for ev in event.split(b"\n\n") if ev.strip())
        return self._feed_one(event)

    def _feed_one(self, event: bytes) -> bytes:
        if self._done:
            return b""
        _, data = parse_sse(event)
        if data is None:
            return b""
        if data.strip() == "[DONE]":
            return self.finish()
        chunk = _load(data, "OpenAI")
        out = [self._start()]
        if chunk.get("error") is not None and not chunk.get("choices"):
            err = chunk["error"]
            message = err.get("message") if isinstance(err, dict) else str(err)
            error = {"type": "api_error", "message": message or "upstream error"}
            out.append(anthropic_event("error", {"error": error}))
            self._done = True
            return b"".join(out)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage_seen = True
            self._prompt = _int(usage.get("prompt_tokens"))
            self._output = _int(usage.get("completion_tokens"))
            details = usage.get("prompt_tokens_details")
            self._cached = min(self._prompt, _int(details.get("cached_tokens") if isinstance(details, dict) else 0))
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1 is never requested by the request translator
            delta = _obj(choice.get("delta"))
            for key in ("content", "refusal"):
                if isinstance(delta.get(key), str) and delta[key]:
                    out.append(self._text(delta[key]))
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    out.append(self._tool(call))
            if choice.get("finish_reason"):
                self._finish = _reason(choice["finish_reason"])
        return b"".join(out)

    def finish(self) -> bytes:
        """Close the open block, then message_delta (stop reason, usage) and message_stop; idempotent."""
        if self._done:
            return b""
        out = [self._start(), self._close()]
        stop = OPENAI_TO_ANTHROPIC_STOP.get(self._finish or "stop", "end_turn")
        if self._tools and stop == "end_turn":
            stop = "tool_use"  # several compatible servers say "stop" after tool calls
        usage = {"output_tokens": self._output}
        if self._usage_seen:
            usage.update(input_tokens=self._prompt - self._cached, cache_read_input_tokens=self._cached)
        out.append(
            anthropic_event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage})
        )
        out.append(anthropic_event("message_stop", {}))
        self._done = True
        return b"".join(out)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return anthropic_event(
            "message_start",
            {
                "message": {
                    "id": self._message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": self._model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": self._prompt, "output_tokens": 0},
                }
            },
        )

    def _open_block(self, block: JsonObject) -> tuple[int, bytes]:
        """Close the open block and start ``block``: (its index, the events)."""
        out = self._close()
        index = self._open = self._blocks
        self._blocks += 1
        out += anthropic_event("content_block_start", {"index": index, "content_block": block})
        if not self._pinged:
            self._pinged = True
            out += anthropic_event("ping", {})
        return index, out

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open, self._open_tool = self._open, None, None
        return anthropic_event("content_block_stop", {"index": index})

    def _text(self, text: str) -> bytes:
        out, index = b"", self._open
        if index is None or self._open_tool is not None:
            index, out = self._open_block({"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        return out + anthropic_event("content_block_delta", {"index": index, "delta": delta})

    def _tool(self, call: JsonObject) -> bytes:
        index, call_id = call.get("index"), call.get("id")
        if not isinstance(index, int):  # some servers omit it: a new id means a new call
            known = [i for i, seen in self._ids.items() if seen == call_id]
            if known:
                index = known[0]
            elif call_id is None and self._open_tool is not None:
                index = self._open_tool  # continuing the open call
            else:
                index = len(self._tools)
        fn = _obj(call.get("function"))
        out = b""
        if index not in self._tools:
            self._ids[index] = call_id or f"toolu_{uuid.uuid4().hex[:24]}"
            block: JsonObject = {"type": "tool_use", "id": self._ids[index], "name": fn.get("name") or "", "input": {}}
            self._tools[index], out = self._open_block(block)
            self._open_tool = index
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            out += anthropic_event(
                "content_block_delta",
                {"index": self._tools[index], "delta": {"type": "input_json_delta", "partial_json": args}},
            )
        return out


class AnthropicToOpenAIStream:
    """Feed Anthropic SSE events (bytes, one whole event each); get OpenAI
    chat.completion.chunk SSE bytes out.

    Thinking and server-tool blocks are skipped. ``feed`` raises ValueError
    on an event whose data is not a JSON object; an Anthropic ``error`` event
    becomes an OpenAI ``{"error": {...}}`` event and ends the translation.
    """

    def __init__(self, *, model: str, completion_id: str, include_usage: bool) -> None:
        self._model = model
        self._id = completion_id
        self._include_usage = include_usage
        self._created = int(time.time())
        self._usage: dict[str, int] = {}
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index
        self._role_sent = False
        self._finish_sent = False
        self._finish: str | None = None
        self._done = False

    @property
    def usage(self) -> tuple[int, int]:
        """(input_tokens, output_tokens) so far, input counting cache reads and writes."""
        u = openai_usage_from_anthropic(self._usage)
        return u["prompt_tokens"], u["completion_tokens"]

    def feed(self, event: bytes) -> bytes:
        if self._done:
            return b""
        name, data = parse_sse(event)
        if data is None:
            return b""
        obj = _load(data, "Anthropic")
        kind = obj.get("type") or name
        if kind == "message_start":
            self._take_usage(_obj(obj.get("message")).get("usage"))
            return self._role()
        if kind == "content_block_start":
            block = _obj(obj.get("content_block"))
            if block.get("type") != "tool_use":
                return self._role()
            index = _block_index(obj)
            tool = self._tools.setdefault(len(self._tools) if index is None else index, len(self._tools))
            fn = {"name": block.get("name"), "arguments": ""}
            call = {"index": tool, "id": block.get("id"), "type": "function", "function": fn}
            return self._role() + self._chunk({"tool_calls": [call]})
        if kind == "content_block_delta":
            return self._delta(obj)
        if kind == "message_delta":
            self._take_usage(obj.get("usage"))
            delta = _obj(obj.get("delta"))
            if delta.get("stop_reason"):
                return self._role() + self._finish_chunk(_reason(delta["stop_reason"]))
            return b""
        if kind == "message_stop":
            return self.finish()
        if kind == "error":
            err = _obj(obj.get("error"))
            self._done = True
            message, kind = err.get("message") or "upstream error", err.get("type") or "api_error"
            error = {"message": message, "type": kind, "param": None, "code": None}
            return b"data: " + orjson.dumps({"error": error}) + b"\n\n"
        return b""  # ping, content_block_stop, and event types added later

    def finish(self) -> bytes:
        """Finish chunk if not yet sent, the usage chunk when asked for, then [DONE]; idempotent."""
        if self._done:
            return b""
        out = [self._role(), self._finish_chunk(None)]
        if self._include_usage:
            last = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": openai_usage_from_anthropic(self._usage),
            }
            out.append(b"data: " + orjson.dumps(last) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        self._done = True
        return b"".join(out)

    def _delta(self, obj: JsonObject) -> bytes:
        delta = _obj(obj.get("delta"))
        if delta.get("type") == "text_delta" and delta.get("text"):
            return self._role() + self._chunk({"content": delta["text"]})
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            index = _block_index(obj)
            tool = None if index is None else self._tools.get(index)
            if tool is not None:
                return self._role() + self._chunk(
                    {"tool_calls": [{"index": tool, "function": {"arguments": delta["partial_json"]}}]}
                )
        return b""  # thinking, signature and citation deltas have no OpenAI form

    def _take_usage(self, usage: Any) -> None:
        """Anthropic counts are cumulative: a later value replaces an earlier one."""
        if isinstance(usage, dict):
            for key in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
                if isinstance(usage.get(key), int):
                    self._usage[key] = usage[key]

    def _chunk(self, delta: JsonObject, finish: str | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self._include_usage:
            obj["usage"] = None  # as OpenAI does on every chunk but the last
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def _role(self) -> bytes:
        if self._role_sent:
            return b""
        self._role_sent = True
        return self._chunk({"role": "assistant", "content": ""})

    def _finish_chunk(self, stop_reason: str | None) -> bytes:
        if self._finish_sent:
            return b""
        self._finish_sent = True
        finish = ANTHROPIC_TO_OPENAI_STOP.get(stop_reason or "end_turn", "stop")
        if finish == "tool_calls" and not self._tools:
            finish = "stop"
        return self._chunk({}, finish)
