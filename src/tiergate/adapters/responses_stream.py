"""Streaming translation: chat.completion.chunk SSE -> OpenAI Responses stream events. No I/O.

Fed one whole chat SSE event at a time, it returns whole Responses events
(``event: <type>`` + ``data: {...}``), each with the next ``sequence_number``,
in the documented order:

    response.created, response.in_progress
    per output item: response.output_item.added
        message:   content_part.added, output_text.delta..., output_text.done, content_part.done
        reasoning: reasoning_text.delta..., reasoning_text.done
        function:  function_call_arguments.delta..., function_call_arguments.done
        custom:    custom_tool_call_input.delta, custom_tool_call_input.done
    response.output_item.done
    response.completed | response.incomplete (max_output_tokens) | response.failed

Items follow one another: a change of kind (reasoning, text, a new tool call)
closes the open item first. A custom tool's input is JSON-quoted inside its
chat arguments, so it is sent once, whole, when its item closes. A fragment
for a tool call whose item was already closed is added to its arguments but
not sent again as a delta (chat servers do not interleave calls in practice).
The final event carries the whole response, its output items identical to
those the ``output_item.done`` events carried (the SDKs check this).
"""

from __future__ import annotations

from typing import Any

import orjson

from tiergate.adapters.responses_reply import (
    call_item,
    custom_input,
    finished,
    message_item,
    new_id,
    output_text_part,
    reasoning_item,
    response_envelope,
    responses_usage,
)
from tiergate.adapters.responses_request import ToolNames, string
from tiergate.adapters.translate_common import JsonObject, _obj
from tiergate.adapters.translate_streams import parse_sse


def responses_event(kind: str, payload: JsonObject, sequence: int) -> bytes:
    data = orjson.dumps({"type": kind, "sequence_number": sequence, **payload})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


class _Item:
    __slots__ = ("kind", "item_id", "index", "text", "call_id", "chat_name", "done")

    def __init__(self, kind: str, item_id: str, index: int, call_id: str = "", chat_name: str = "") -> None:
        self.kind, self.item_id, self.index = kind, item_id, index
        self.text, self.call_id, self.chat_name, self.done = "", call_id, chat_name, False


class ChatToResponsesStream:
    """One response's stream; ``feed`` raises ValueError on an event whose data is not a JSON object."""

    def __init__(self, *, request: JsonObject, names: ToolNames, model: str, response_id: str) -> None:
        self._names = names
        self._envelope = response_envelope(request, response_id=response_id, model=model)
        self._seq = 0
        self._started = False
        self._done = False
        self._items: list[_Item] = []
        self._open: _Item | None = None
        self._tools: dict[int, _Item] = {}  # chat tool index -> its item
        self._finish: str | None = None
        self._usage: Any = None
        self.final: JsonObject | None = None  # the last event's response, once sent

    @property
    def sequence(self) -> int:
        """The sequence number the next event gets."""
        return self._seq

    def _event(self, kind: str, **payload: Any) -> bytes:
        ev = responses_event(kind, payload, self._seq)
        self._seq += 1
        return ev

    def feed(self, events: bytes) -> bytes:
        """Whole chat SSE events in (one, or several joined, as the Anthropic bridge yields them)."""
        if events.count(b"\n\n") <= 1:
            return self._feed_one(events)
        return b"".join(self._feed_one(ev + b"\n\n") for ev in events.split(b"\n\n") if ev.strip())

    def _feed_one(self, event: bytes) -> bytes:
        if self._done:
            return b""
        _, data = parse_sse(event)
        if data is None:
            return b""
        if data.strip() == "[DONE]":
            return self.finish()
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise ValueError(f"stream: invalid JSON in an OpenAI event ({e})") from None
        if not isinstance(chunk, dict):
            raise ValueError("stream: an OpenAI event is not a JSON object")
        out = [self._start()]
        if chunk.get("error") is not None and not chunk.get("choices"):
            err = chunk["error"]
            message = err.get("message") if isinstance(err, dict) else str(err)
            out.append(self.failed(str(message or "upstream error")))
            return b"".join(out)
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = _obj(choice.get("delta"))
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(thought, str) and thought:
                out.append(self._reasoning(thought))
            if isinstance(delta.get("content"), str) and delta["content"]:
                out.append(self._text(delta["content"]))
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    out.append(self._tool(call))
            if isinstance(choice.get("finish_reason"), str):
                self._finish = choice["finish_reason"]
        return b"".join(out)

    def finish(self) -> bytes:
        """Close the open item, then response.completed (or .incomplete); idempotent."""
        if self._done:
            return b""
        out = [self._start(), self._close()]
        final = finished(
            self._envelope, [self._item_json(i) for i in self._items], self._finish, responses_usage(self._usage)
        )
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        out.append(self._event(kind, response=final))
        self.final = final
        self._done = True
        return b"".join(out)

    def failed(self, message: str) -> bytes:
        """response.failed for an upstream that gave up mid-stream; nothing after it."""
        if self._done:
            return b""
        out = [self._start()]
        final = {
            **self._envelope,
            "status": "failed",
            "error": {"code": "server_error", "message": message},
            "output": [self._item_json(i) for i in self._items if i.done],
            "usage": responses_usage(self._usage) if self._usage else None,
        }
        out.append(self._event("response.failed", response=final))
        self._done = True
        return b"".join(out)

    # ------------------------------------------------------------------ items

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._event("response.created", response=self._envelope) + self._event(
            "response.in_progress", response=self._envelope
        )

    def _add(self, item: _Item) -> bytes:
        out = self._close()
        self._items.append(item)
        self._open = item
        out += self._event(
            "response.output_item.added", output_index=item.index, item=self._item_json(item, "in_progress")
        )
        if item.kind == "message":
            out += self._event(
                "response.content_part.added",
                item_id=item.item_id,
                output_index=item.index,
                content_index=0,
                part=output_text_part(""),
            )
        return out

    def _reasoning(self, text: str) -> bytes:
        out = b""
        item = self._open
        if item is None or item.kind != "reasoning":
            item = _Item("reasoning", new_id("rs"), len(self._items))
            out = self._add(item)
        item.text += text
        return out + self._event(
            "response.reasoning_text.delta", item_id=item.item_id, output_index=item.index, content_index=0, delta=text
        )

    def _text(self, text: str) -> bytes:
        out = b""
        item = self._open
        if item is None or item.kind != "message":
            item = _Item("message", new_id("msg"), len(self._items))
            out = self._add(item)
        item.text += text
        return out + self._event(
            "response.output_text.delta",
            item_id=item.item_id,
            output_index=item.index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _tool(self, call: JsonObject) -> bytes:
        index = call.get("index", 0)
        if not isinstance(index, int) or isinstance(index, bool):
            raise ValueError("stream: a tool call's index is not an integer")
        fn = _obj(call.get("function"))
        fragment = string(fn.get("arguments"))
        out = b""
        item = self._tools.get(index)
        if item is None:
            name = fn.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError("stream: a tool call starts without a name")
            call_id = string(call.get("id")) or new_id("call")
            kind = self._names.item_of(name)[0]
            item = _Item(kind, new_id("ctc" if kind == "custom" else "fc"), len(self._items), call_id, name)
            self._tools[index] = item
            out = self._add(item)
        item.text += fragment
        if fragment and item.kind == "function" and not item.done:
            out += self._event(
                "response.function_call_arguments.delta", item_id=item.item_id, output_index=item.index, delta=fragment
            )
        return out

    def _close(self) -> bytes:
        item, self._open = self._open, None
        if item is None:
            return b""
        item.done = True
        ids = {"item_id": item.item_id, "output_index": item.index}
        if item.kind == "message":
            out = self._event("response.output_text.done", **ids, content_index=0, text=item.text, logprobs=[])
            out += self._event("response.content_part.done", **ids, content_index=0, part=output_text_part(item.text))
        elif item.kind == "reasoning":
            out = self._event("response.reasoning_text.done", **ids, content_index=0, text=item.text)
        elif item.kind == "custom":
            text = custom_input(item.text)
            out = self._event("response.custom_tool_call_input.delta", **ids, delta=text)
            out += self._event("response.custom_tool_call_input.done", **ids, input=text)
        else:
            out = self._event("response.function_call_arguments.done", **ids, arguments=item.text)
        return out + self._event("response.output_item.done", output_index=item.index, item=self._item_json(item))

    def _item_json(self, item: _Item, status: str = "completed") -> JsonObject:
        if item.kind == "message":
            return message_item(item.item_id, "" if status == "in_progress" else item.text, status=status) | (
                {"content": []} if status == "in_progress" else {}
            )
        if item.kind == "reasoning":
            r = reasoning_item(item.item_id, item.text)
            return r | {"status": status, "content": [] if status == "in_progress" else r["content"]}
        args = "" if status == "in_progress" else item.text
        return call_item(item.item_id, item.call_id, item.chat_name, args, self._names, status=status)
