"""Reading an OpenAI chat answer (a reply or its stream) for a client of another protocol.

Ollama and Gemini clients are served from OpenAI-protocol upstreams (and from
Anthropic ones through the OpenAI bridge); both need the same few things out
of the answer: text and reasoning as they arrive, tool calls whole (their
clients take a call's arguments as an object, never as fragments), the finish
reason and the usage. Pure: no I/O, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tiergate.adapters.translate_common import JsonObject, _obj
from tiergate.adapters.translate_streams import _int, _load, parse_sse


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: JsonObject


@dataclass(slots=True)
class OpenAIAnswer:
    """What an OpenAI chat answer said, in the terms other protocols need."""

    text: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish: str | None = None  # OpenAI's finish_reason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    usage_seen: bool = False
    id: str | None = None


def _arguments(raw: Any, name: str) -> JsonObject:
    """A tool call's arguments as an object: OpenAI sends a JSON string, some servers an object."""
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    try:
        value = orjson.loads(raw) if isinstance(raw, str) else None
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"tool call {name!r}: its arguments are not a JSON object")
    return value


def _read_usage(answer: OpenAIAnswer, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    answer.usage_seen = True
    answer.prompt_tokens = _int(usage.get("prompt_tokens"))
    answer.completion_tokens = _int(usage.get("completion_tokens"))
    details = _obj(usage.get("prompt_tokens_details"))
    answer.cached_tokens = min(answer.prompt_tokens, _int(details.get("cached_tokens")))
    answer.reasoning_tokens = _int(_obj(usage.get("completion_tokens_details")).get("reasoning_tokens"))


def _reasoning(obj: JsonObject) -> str:
    for key in ("reasoning_content", "reasoning"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def read_reply(obj: JsonObject) -> OpenAIAnswer:
    """A chat.completion object -> what it said; ValueError for a reply with no choice or bad tool arguments."""
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("the reply has no choices")
    choice = choices[0]
    msg = _obj(choice.get("message"))
    answer = OpenAIAnswer(id=obj.get("id") if isinstance(obj.get("id"), str) else None)
    content = msg.get("content")
    answer.text = content if isinstance(content, str) else ""
    answer.thinking = _reasoning(msg)
    for i, call in enumerate(msg.get("tool_calls") or ()):
        fn = _obj(call.get("function")) if isinstance(call, dict) else {}
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"tool call {i} has no function name")
        call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else f"call_{i}"
        answer.tool_calls.append(ToolCall(call_id, name, _arguments(fn.get("arguments"), name)))
    reason = choice.get("finish_reason")
    answer.finish = reason if isinstance(reason, str) and reason else None
    _read_usage(answer, obj.get("usage"))
    return answer


class OpenAIStreamReader:
    """Fed OpenAI SSE events one at a time; hands back the text and reasoning of each, keeps the rest.

    Tool-call fragments are gathered by their ``index`` and given whole by ``tool_calls()`` at the end;
    ``done`` is set by ``[DONE]``, ``error`` by an in-band error chunk.
    """

    def __init__(self) -> None:
        self.answer = OpenAIAnswer()
        self.done = False
        self.error: str | None = None
        self._calls: dict[int, dict[str, str]] = {}

    def feed(self, events: bytes) -> tuple[str, str]:
        """(text, reasoning) these events add; ValueError for an event whose data is not a JSON object.

        One feed may hold several events: a bridge below (Anthropic -> OpenAI) can turn one upstream
        event into a few.
        """
        if events.count(b"\n\n") <= 1:
            return self._event(events)
        text, thinking = [], []
        for event in events.replace(b"\r\n", b"\n").split(b"\n\n"):
            if event.strip():
                t, r = self._event(event + b"\n\n")
                text.append(t)
                thinking.append(r)
        return "".join(text), "".join(thinking)

    def _event(self, event: bytes) -> tuple[str, str]:
        _, data = parse_sse(event)
        if data is None or self.done:
            return "", ""
        if data.strip() == "[DONE]":
            self.done = True
            return "", ""
        chunk = _load(data, "OpenAI")
        if chunk.get("error") is not None and not chunk.get("choices"):
            err = chunk["error"]
            message = err.get("message") if isinstance(err, dict) else err
            self.error = str(message or "upstream error")
            self.done = True
            return "", ""
        if self.answer.id is None and isinstance(chunk.get("id"), str):
            self.answer.id = chunk["id"]
        _read_usage(self.answer, chunk.get("usage"))
        text, thinking = [], []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = _obj(choice.get("delta"))
            if isinstance(delta.get("content"), str):
                text.append(delta["content"])
            if r := _reasoning(delta):
                thinking.append(r)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._gather(call)
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.answer.finish = reason
        return "".join(text), "".join(thinking)

    def _gather(self, call: JsonObject) -> None:
        index = call.get("index", len(self._calls))
        slot = self._calls.setdefault(index if isinstance(index, int) else len(self._calls), {})
        if isinstance(call.get("id"), str) and call["id"]:
            slot["id"] = call["id"]
        fn = _obj(call.get("function"))
        if isinstance(fn.get("name"), str) and fn["name"]:
            slot.setdefault("name", fn["name"])
        args = fn.get("arguments")
        if isinstance(args, str):
            slot["arguments"] = slot.get("arguments", "") + args
        elif isinstance(args, dict):
            slot["arguments"] = orjson.dumps(args).decode()

    def tool_calls(self) -> list[ToolCall]:
        """The calls gathered so far, whole; ValueError for one with no name or arguments that are not an object."""
        out = []
        for i in sorted(self._calls):
            slot = self._calls[i]
            name = slot.get("name")
            if not name:
                raise ValueError(f"stream: tool call {i} has no function name")
            out.append(ToolCall(slot.get("id") or f"call_{i}", name, _arguments(slot.get("arguments"), name)))
        return out
