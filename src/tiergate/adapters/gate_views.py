"""Answers in every client protocol, read for the quality gates (core.gates): text, reasoning, tool calls.

The executor gates an answer in the client's own protocol, after any
translation, so one reader per protocol covers every upstream behind it.
``reply_view`` reads a whole body; ``StreamView`` is fed a stream's events
as they are held and says how much visible answer it has seen (the prefix
mode releases a stream once that passes a threshold). Reading never raises:
what is not there is simply not in the view.
"""

from __future__ import annotations

from typing import Any

import orjson

from tiergate.adapters.translate_common import JsonObject, _obj
from tiergate.adapters.translate_streams import parse_sse
from tiergate.core.gates import AnswerView, GateRule, ToolCall

GATED_PROTOCOLS = frozenset(
    {"openai-chat", "anthropic-messages", "openai-responses", "ollama-chat", "ollama-generate", "gemini-generate"}
)
LENGTH_STOPS = frozenset({"length", "max_tokens", "MAX_TOKENS", "max_output_tokens"})
GEMINI_REFUSALS = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION"})


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _load(raw: bytes | str) -> JsonObject | None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def reply_view(protocol: str, body: bytes) -> AnswerView | None:
    """The view of a whole reply body; None when it is not an answer this module reads."""
    obj = _load(body)
    if obj is None:
        return None
    view = AnswerView()
    if protocol == "openai-chat":
        _openai_choice(view, obj)
    elif protocol == "anthropic-messages":
        _anthropic_message(view, obj)
    elif protocol == "openai-responses":
        _responses_object(view, obj)
    elif protocol in ("ollama-chat", "ollama-generate"):
        _ollama_line(view, obj)
    elif protocol == "gemini-generate":
        _gemini_chunk(view, obj)
    else:
        return None
    return view


def plainly_answered(protocol: str, request: JsonObject, body: bytes, rule: GateRule) -> bool:
    """An OpenAI chat reply that visibly answers in text, to a request that asked for no JSON, seen
    without parsing it (the chat lane's usual answer; docs/decisions/0003-hot-path.md). True only when no
    gate could fail it: one ``content`` key whose string starts with a visible character, no tool call,
    no refusal, and a rule with no checks on the text itself. A quote cannot appear unescaped inside a
    JSON string, so a match is a real key. Three scans of the body (about 1 µs for the usual reply, a
    parse is 1.7).
    """
    if protocol != "openai-chat" or "response_format" in request:
        return False
    if rule.refusal_patterns or rule.min_chars or rule.must_match:
        return False
    i = body.find(b'"content":')
    if i < 0 or body.find(b'"content":', i + 10) >= 0:
        return False
    j = i + 11 if body[i + 10 : i + 11] == b" " else i + 10  # compact, or as OpenAI writes its JSON
    if body[j : j + 1] != b'"' or body[j + 1 : j + 2] in _NOT_VISIBLE or b'"tool_calls"' in body:
        return False
    k = body.find(b'"refusal":')
    return k < 0 or body[k + 10 : k + 15].lstrip().startswith(b"null")


_NOT_VISIBLE = (b"", b" ", b'"', b"\\")  # end of body, a space, an empty string, an escape (\n, \t, \u...)


def _openai_choice(view: AnswerView, obj: JsonObject) -> None:
    choices = obj.get("choices")
    choice = _obj(choices[0]) if isinstance(choices, list) and choices else {}
    msg = _obj(choice.get("message"))
    content = msg.get("content")
    if isinstance(content, list):  # content parts, as some servers answer
        content = "".join(_str(_obj(p).get("text")) for p in content)
    view.text = _str(content)
    view.reasoning = _str(msg.get("reasoning_content")) or _str(msg.get("reasoning"))
    view.refusal = _str(msg.get("refusal"))
    for call in msg.get("tool_calls") or ():
        fn = _obj(_obj(call).get("function"))
        view.tool_calls.append(ToolCall(_str(fn.get("name")), fn.get("arguments")))
    fc = _obj(msg.get("function_call"))  # the legacy single call
    if fc:
        view.tool_calls.append(ToolCall(_str(fc.get("name")), fc.get("arguments")))
    view.truncated = choice.get("finish_reason") in LENGTH_STOPS


def _anthropic_message(view: AnswerView, obj: JsonObject) -> None:
    text, thinking = [], []
    for block in obj.get("content") or ():
        b = _obj(block)
        kind = b.get("type")
        if kind == "text":
            text.append(_str(b.get("text")))
        elif kind == "thinking":
            thinking.append(_str(b.get("thinking")))
        elif kind == "redacted_thinking":
            thinking.append("[redacted]")
        elif kind == "tool_use":
            view.tool_calls.append(ToolCall(_str(b.get("name")), b.get("input")))
    view.text, view.reasoning = "".join(text), "".join(thinking)
    stop = obj.get("stop_reason")
    view.truncated = stop in LENGTH_STOPS
    if stop == "refusal":
        view.refusal = view.text or "stop_reason refusal"


def _responses_object(view: AnswerView, obj: JsonObject) -> None:
    text, thinking = [], []
    for item in obj.get("output") or ():
        it = _obj(item)
        kind = it.get("type")
        if kind == "message":
            for part in it.get("content") or ():
                p = _obj(part)
                if p.get("type") == "output_text":
                    text.append(_str(p.get("text")))
                elif p.get("type") == "refusal":
                    view.refusal += _str(p.get("refusal"))
        elif kind == "reasoning":
            for part in (it.get("summary") or []) + (it.get("content") or []):
                thinking.append(_str(_obj(part).get("text")))
            if it.get("encrypted_content"):
                thinking.append("[encrypted]")
        elif kind == "function_call":
            view.tool_calls.append(ToolCall(_str(it.get("name")), it.get("arguments")))
        elif kind == "custom_tool_call":
            view.tool_calls.append(ToolCall(_str(it.get("name")), it.get("input"), freeform=True))
        elif isinstance(kind, str) and kind.endswith("_call"):  # built-in tools' calls (web search, shell, ...)
            view.tool_calls.append(ToolCall(kind, None, freeform=True))
    view.text, view.reasoning = "".join(text), "".join(thinking)
    details = _obj(obj.get("incomplete_details"))
    view.truncated = obj.get("status") == "incomplete" and details.get("reason") in LENGTH_STOPS


def _ollama_line(view: AnswerView, obj: JsonObject) -> None:
    """One Ollama object (a reply, or one NDJSON line of a stream), added to ``view``."""
    msg = _obj(obj.get("message"))
    view.text += _str(msg.get("content")) or _str(obj.get("response"))
    view.reasoning += _str(msg.get("thinking")) or _str(obj.get("thinking"))
    for call in msg.get("tool_calls") or ():
        fn = _obj(_obj(call).get("function"))
        view.tool_calls.append(ToolCall(_str(fn.get("name")), fn.get("arguments")))
    if obj.get("done") is True:
        view.truncated = obj.get("done_reason") in LENGTH_STOPS


def _gemini_chunk(view: AnswerView, obj: JsonObject) -> None:
    """One GenerateContentResponse (a reply, or one event of a stream), added to ``view``."""
    candidates = obj.get("candidates")
    cand = _obj(candidates[0]) if isinstance(candidates, list) and candidates else {}
    for part in _obj(cand.get("content")).get("parts") or ():
        p = _obj(part)
        if "text" in p:
            if p.get("thought") is True:
                view.reasoning += _str(p.get("text"))
            else:
                view.text += _str(p.get("text"))
        fc = _obj(p.get("functionCall"))
        if fc:
            view.tool_calls.append(ToolCall(_str(fc.get("name")), fc.get("args", {})))
    finish = cand.get("finishReason")
    if isinstance(finish, str):
        view.truncated = finish in LENGTH_STOPS
        if finish in GEMINI_REFUSALS:
            view.refusal = f"finishReason {finish}"
    blocked = _obj(obj.get("promptFeedback")).get("blockReason")
    if isinstance(blocked, str) and blocked:
        view.refusal = f"prompt blocked: {blocked}"


class StreamView:
    """Fed a stream's events in order (SSE events, or NDJSON lines for Ollama); ``finished`` is what they said.

    Pieces are kept in lists and joined once at the end: a held stream may run to ``max_response_mb``
    in thousands of events, and adding to one string per event would copy it each time.
    """

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.view = AnswerView(complete=False)  # flags as they arrive; text and reasoning in the lists
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._refusal: list[str] = []
        self._visible = 0  # characters of text other than whitespace, so far
        self._calls: dict[Any, list[Any]] = {}  # OpenAI, Anthropic: index -> [name, start input, fragments]
        self._final: JsonObject | None = None  # Responses: the response of its closing event

    @property
    def visible(self) -> int:
        """Characters of answer seen so far (text, or tool calls begun: a call is visible work)."""
        return self._visible + 1000 * (len(self._calls) + len(self.view.tool_calls))

    def _add(self, text: str, reasoning: str = "") -> None:
        if text:
            self._text.append(text)
            if not text.isspace():
                self._visible += len(text.strip())
        if reasoning:
            self._reasoning.append(reasoning)

    def _merge(self, part: AnswerView) -> None:
        """One event read by the reply readers (Ollama lines, Gemini chunks), added."""
        self._add(part.text, part.reasoning)
        self.view.tool_calls += part.tool_calls
        self.view.truncated = self.view.truncated or part.truncated
        if part.refusal:
            self._refusal = [part.refusal]

    def feed(self, event: bytes) -> None:
        if self.protocol in ("ollama-chat", "ollama-generate"):
            for line in event.splitlines():
                obj = _load(line) if line.strip() else None
                if obj is not None:
                    part = AnswerView()
                    _ollama_line(part, obj)
                    self._merge(part)
                    if obj.get("done") is True:
                        self.view.complete = True
            return
        for one in event.split(b"\n\n") if event.count(b"\n\n") > 1 else (event,):
            name, data = parse_sse(one)
            if data is None:
                continue
            if data.strip() == "[DONE]":
                self.view.complete = True
                continue
            obj = _load(data)
            if obj is not None:
                self._event(name, obj)

    def _call(self, key: Any, name: str = "", start: Any = None) -> list[Any]:
        return self._calls.setdefault(key, [name, start, []])

    def _event(self, name: str | None, obj: JsonObject) -> None:
        p, view = self.protocol, self.view
        if p == "openai-chat":
            for choice in obj.get("choices") or ():
                c = _obj(choice)
                delta = _obj(c.get("delta"))
                self._add(
                    _str(delta.get("content")), _str(delta.get("reasoning_content")) or _str(delta.get("reasoning"))
                )
                if refusal := _str(delta.get("refusal")):
                    self._refusal.append(refusal)
                for call in delta.get("tool_calls") or ():
                    tc = _obj(call)
                    slot = self._call(tc.get("index", len(self._calls)))
                    fn = _obj(tc.get("function"))
                    slot[0] = slot[0] or _str(fn.get("name"))
                    if isinstance(fn.get("arguments"), str):
                        slot[2].append(fn["arguments"])
                if c.get("finish_reason") in LENGTH_STOPS:
                    view.truncated = True
        elif p == "anthropic-messages":
            kind = obj.get("type") or name
            if kind == "content_block_start":
                block = _obj(obj.get("content_block"))
                if block.get("type") == "tool_use":
                    self._call(obj.get("index"), _str(block.get("name")), block.get("input") or None)
                elif block.get("type") == "text":
                    self._add(_str(block.get("text")))
            elif kind == "content_block_delta":
                delta = _obj(obj.get("delta"))
                dt = delta.get("type")
                if dt == "text_delta":
                    self._add(_str(delta.get("text")))
                elif dt == "thinking_delta":
                    self._add("", _str(delta.get("thinking")))
                elif dt == "input_json_delta" and obj.get("index") in self._calls:
                    self._calls[obj.get("index")][2].append(_str(delta.get("partial_json")))
            elif kind == "message_delta":
                stop = _obj(obj.get("delta")).get("stop_reason")
                view.truncated = stop in LENGTH_STOPS
                if stop == "refusal":
                    self._refusal = ["".join(self._text) or "stop_reason refusal"]
            elif kind == "message_stop":
                view.complete = True
        elif p == "openai-responses":
            kind = obj.get("type") or name
            if kind == "response.output_text.delta":
                self._add(_str(obj.get("delta")))
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                self._final = _obj(obj.get("response"))
                view.complete = kind != "response.failed"
            elif kind == "response.output_item.added" and _obj(obj.get("item")).get("type") != "message":
                self._call(obj.get("output_index"))  # visible work begun (a call, reasoning)
        elif p == "gemini-generate":
            part = AnswerView()
            _gemini_chunk(part, obj)
            self._merge(part)
            cands = obj.get("candidates")
            if isinstance(cands, list) and cands and _obj(cands[0]).get("finishReason"):
                view.complete = True

    def finished(self) -> AnswerView:
        """The whole answer's view, once its events are all in."""
        view = self.view
        if self.protocol == "openai-responses" and self._final is not None:
            whole = AnswerView(complete=view.complete)
            _responses_object(whole, self._final)
            return whole
        calls = list(view.tool_calls)
        if self.protocol in ("openai-chat", "anthropic-messages"):
            for name, start, fragments in self._calls.values():
                calls.append(ToolCall(name, "".join(fragments) if fragments or start is None else start))
        return AnswerView(
            text="".join(self._text),
            reasoning="".join(self._reasoning),
            tool_calls=calls,
            truncated=view.truncated,
            refusal="".join(self._refusal),
            complete=view.complete,
        )
