"""Usage an upstream reports, believed only when plausible, and what is counted when it is not (issue 14).

The figures come from the upstream's own bytes: ``prompt_tokens: 1e300``
once overflowed the ledger writer and a budget, ``-100000`` handed budget
back, ``"abc"`` turned an answered request into a 500. Here a figure is
believed only as an integer in 0..``usage_bound`` of the deployment;
anything else is replaced by a local count (about four bytes a token of
the request, or of the text the upstream produced) and the usage is
flagged ``estimated``. Parsing never raises, whatever the shape.

Streams keep their usage current as events pass (``StreamMeter``): a
stream that ends early, or that the client abandons, is billed for the
output that actually arrived, not zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from tiergate.core.catalog import Deployment
from tiergate.core.money import believable_tokens, estimate_output_tokens, estimate_tokens_from_bytes, usage_bound
from tiergate.core.types import Usage

# Keys whose string values are text the model produced (OpenAI content, refusals, reasoning, tool calls;
# Anthropic text, thinking, tool input). Anthropic's tool ``input`` is an object: its JSON is counted.
TEXT_KEYS = frozenset(
    {"content", "refusal", "reasoning_content", "reasoning", "arguments", "name", "text", "thinking", "partial_json"}
)
WALK_LIMIT = 100_000  # JSON nodes looked at per object: a reply is already size-capped, this caps the walk too


class Reported(NamedTuple):
    """The upstream's figures after checking: None where a figure is missing or cannot be believed."""

    prompt: int | None
    completion: int | None
    cache_read: int = 0
    cache_write: int = 0


NOTHING = Reported(None, None)


def bound_of(d: Deployment) -> int:
    return usage_bound(d.context_window, d.max_output_tokens)


def _optional(value: Any, bound: int) -> int | None:
    """A count that may be absent (absent or null is 0); None when present but not believable."""
    return 0 if value is None else believable_tokens(value, bound)


def openai_reported(u: Any, bound: int, *, output: bool = True) -> Reported:
    """OpenAI ``usage``: prompt_tokens (cache reads among them), completion_tokens (0 when ``output`` is False)."""
    if not isinstance(u, dict):
        return NOTHING
    p, c = u.get("prompt_tokens"), u.get("completion_tokens") if output else 0
    details = u.get("prompt_tokens_details")
    cached = details.get("cached_tokens", 0) if details.__class__ is dict else 0
    # the usual reply, checked inline (once per request): plain ints (a bool's class is not int) in bounds
    if p.__class__ is int and c.__class__ is int and 0 <= c <= bound and 0 <= p <= bound:
        if cached == 0 and cached.__class__ is int:
            return Reported(p, c)
        if cached.__class__ is int and 0 < cached <= p:
            return Reported(p, c, cached)
    prompt = believable_tokens(p, bound)
    completion = believable_tokens(c, bound) if output else 0
    cached = _optional(details.get("cached_tokens"), bound) if isinstance(details, dict) else 0
    if prompt is None or cached is None or cached > prompt:
        return Reported(None, completion)
    return Reported(prompt, completion, cached)


def responses_reported(u: Any, bound: int) -> Reported:
    """OpenAI Responses ``usage``: input_tokens (cache reads among them, as in chat), output_tokens."""
    if not isinstance(u, dict):
        return NOTHING
    prompt = believable_tokens(u.get("input_tokens"), bound)
    completion = believable_tokens(u.get("output_tokens"), bound)
    details = u.get("input_tokens_details")
    cached = _optional(details.get("cached_tokens"), bound) if isinstance(details, dict) else 0
    if prompt is None or cached is None or cached > prompt:
        return Reported(None, completion)
    return Reported(prompt, completion, cached)


def anthropic_reported(u: Any, bound: int, *, output: bool = True) -> Reported:
    """Anthropic ``usage``: the prompt is input + cache reads + cache writes, all processed by the upstream."""
    if not isinstance(u, dict):
        return NOTHING
    completion = believable_tokens(u.get("output_tokens"), bound) if output else None
    fresh = believable_tokens(u.get("input_tokens"), bound)
    read = _optional(u.get("cache_read_input_tokens"), bound)
    write = _optional(u.get("cache_creation_input_tokens"), bound)
    if fresh is None or read is None or write is None or fresh + read + write > bound:
        return Reported(None, completion)
    return Reported(fresh + read + write, completion, read, write)


def settled(r: Reported, *, prompt_estimate: int, completion_estimate: int) -> Usage:
    """The usage to bill: the upstream's figures where believed, the local counts elsewhere (flagged)."""
    if r.prompt is None:
        prompt, read, write = prompt_estimate, 0, 0
    else:
        prompt, read, write = r.prompt, r.cache_read, r.cache_write
    completion = completion_estimate if r.completion is None else r.completion
    estimated = r.prompt is None or r.completion is None
    return Usage(prompt, completion, estimated, read, write)  # positional: a class called with keywords builds a dict


def billed(r: Reported, *, sent_bytes: int, produced: Callable[[], int] | None = None) -> Usage:
    """The usage to bill for one plain reply: the upstream's figures where believed; where not, the prompt
    from the bytes sent and the output from ``produced()`` (the reply's text bytes, measured only then: a
    walk per reply), flagged as estimated."""
    if r.prompt is not None and r.completion is not None:
        return Usage(r.prompt, r.completion, False, r.cache_read, r.cache_write)  # positional, as above
    out = produced() if r.completion is None and produced is not None else 0
    return settled(
        r,
        prompt_estimate=estimate_tokens_from_bytes(sent_bytes),
        completion_estimate=estimate_output_tokens(out),
    )


def doubt_note(r: Reported, u: Any) -> list[str]:
    """A ledger note when the upstream gave usage that was not believed (none when it gave none)."""
    if not isinstance(u, dict) or (r.prompt is not None and r.completion is not None):
        return []
    return ["upstream usage not believed: counted locally"]


def text_bytes(obj: Any) -> int:
    """Bytes of model-written text in a reply, chunk or event (iterative: a hostile nesting cannot recurse)."""
    total, seen = 0, 0
    stack = [obj]
    while stack and seen < WALK_LIMIT:
        node = stack.pop()
        seen += 1
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(v, str):
                    if k in TEXT_KEYS:
                        total += len(v.encode("utf-8", "replace"))
                elif k == "input" and isinstance(v, dict):  # an Anthropic tool_use block's arguments
                    total += len(orjson.dumps(v))
                elif isinstance(v, (dict, list)):
                    stack.append(v)
        elif isinstance(node, list):
            stack.extend(n for n in node if isinstance(n, (dict, list)))
    return total


def _str_bytes(v: str) -> int:
    return len(v) if v.isascii() else len(v.encode("utf-8", "replace"))


OPENAI_DELTA_TEXT = ("content", "refusal", "reasoning_content", "reasoning")
ANTHROPIC_DELTA_TEXT = ("text", "partial_json", "thinking")


PLAIN_DELTA = b'"delta":{"content":"'


def plain_content_bytes(ev: bytes) -> int | None:
    """Bytes of the content in an event whose one delta is ``{"content": "..."}`` with nothing to unescape,
    found without parsing it (most events of most streams); None for anything else (then parse it)."""
    i = ev.find(PLAIN_DELTA)
    if i < 0:
        return None
    start = i + len(PLAIN_DELTA)
    end = ev.find(b'"}', start)
    if end < 0 or ev.find(b'"', start, end) >= 0 or ev.find(b"\\", start, end) >= 0:
        return None
    if ev.find(b'"delta"') != i or ev.find(b'"delta"', end) >= 0:
        return None  # another choice: let the parser count them
    return end - start


def openai_chunk_bytes(chunk: Any) -> int:
    """Generated text in one chat.completion.chunk: the walk ``text_bytes`` does, unrolled for the hot path."""
    try:  # nearly every chunk: one choice whose delta is {"content": "..."}
        (choice,) = chunk["choices"]
        delta = choice["delta"]
        if len(delta) == 1 and type(delta.get("content")) is str:
            return _str_bytes(delta["content"])
    except (KeyError, TypeError, ValueError, AttributeError):
        pass
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    n = 0
    for choice in choices if isinstance(choices, list) else ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict):
            for key in OPENAI_DELTA_TEXT:
                v = delta.get(key)
                if isinstance(v, str):
                    n += _str_bytes(v)
            calls = delta.get("tool_calls")
            if calls:
                n += text_bytes(calls)
    return n


def anthropic_event_bytes(event: Any) -> int:
    """Generated text in one content_block_delta (or a content_block_start's block)."""
    if not isinstance(event, dict):
        return 0
    part = event.get("delta")
    if not isinstance(part, dict):
        part = event.get("content_block")
        if not isinstance(part, dict):
            return 0
        return text_bytes(part)
    n = 0
    for key in ANTHROPIC_DELTA_TEXT:
        v = part.get(key)
        if isinstance(v, str):
            n += _str_bytes(v)
    return n


class StreamMeter:
    """Keeps a stream's ``Usage`` current as its events pass, so however the stream ends it is billed right.

    Until the upstream's own figures arrive (and are believed) the prompt is the request's estimate and
    the completion is counted from the text received so far; the usage stays flagged ``estimated``.
    """

    __slots__ = ("usage", "bound", "_bytes", "_events", "_prompt_known", "_completion_known")

    def __init__(self, usage: Usage, bound: int) -> None:
        self.usage = usage
        self.bound = bound
        self._bytes = 0
        self._events = 0
        self._prompt_known = False
        self._completion_known = False

    def content(self, n: int) -> None:
        """One event that carried ``n`` bytes of generated text (see ``*_bytes`` above)."""
        if not n:
            return
        self._bytes += n
        self._events += 1
        if not self._completion_known:
            self.usage.completion_tokens = estimate_output_tokens(self._bytes, self._events)

    def reported(self, r: Reported) -> None:
        """The upstream's figures (a stream may report more than once: later ones are cumulative)."""
        u = self.usage
        if r.prompt is not None:
            u.prompt_tokens, u.cache_read_tokens, u.cache_write_tokens = r.prompt, r.cache_read, r.cache_write
            self._prompt_known = True
        if r.completion is not None:
            u.completion_tokens = r.completion
            self._completion_known = True
        u.estimated = not (self._prompt_known and self._completion_known)


def stream_meter(sent_bytes: int, d: Deployment) -> StreamMeter:
    """The meter of a stream about to be read: its usage starts as the prompt estimated from the bytes sent."""
    return StreamMeter(Usage(estimate_tokens_from_bytes(sent_bytes), 0, estimated=True), bound_of(d))
