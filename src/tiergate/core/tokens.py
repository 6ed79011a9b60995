"""Prompt token estimates from what the model reads, and a per-deployment learned ratio. Pure.

Budgets reserve the worst case a call can bill, so the prompt must be counted
before the call. The JSON envelope (keys, quotes, ids, base64 framing) is not
what a vendor bills: the estimate walks the text the model reads — message
content and text parts, tool-call names and arguments, the system prompt,
tool definitions, a JSON schema — at about four bytes a token, plus the
per-message overhead the vendors document (OpenAI's cookbook: 3 tokens a
message plus the role, 3 to prime the reply; Anthropic's tool-use system
prompt, 346 tokens on current models). Images and other attachments count a
fixed amount each.

Four bytes a token is a guess about someone else's tokenizer. Once a
deployment has reported its own prompt_tokens for a few requests, a learned
bytes-per-token ratio (an EWMA with its mean deviation, as TCP smooths round
trip times) replaces the guess for that deployment: ``learn`` folds in one
settled call, ``learned_tokens`` counts from it. The overhead is folded into
the learned ratio, which makes it lower than the text's own ratio: a learned
count errs high for prompts longer than those it learned from, and low by at
most their overhead for shorter ones (docs/guardrails.md, "How a reservation
is sized").
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

BYTES_PER_TOKEN = 4  # ASCII text; each non-ASCII byte counts as half a token (CJK, emoji: 1.5-2 a character)
PER_MESSAGE = 4  # OpenAI cookbook: 3 tokens of framing a message, plus the role
PER_NAME = 1  # a message's "name" costs one more token than its text
REPLY_PRIMING = 3  # "every reply is primed with <|start|>assistant<|message|>"
OPENAI_TOOLS = 12  # the "namespace functions { ... }" wrapper around tool definitions
PER_TOOL_CALL = 8  # a call's framing: recipient, channel, end markers
DENSE = 3 / 2  # JSON arguments tokenize at ~2.7 bytes a token (short keys, quotes, digits)
ANTHROPIC_TOOLS = 346  # Anthropic's tool-use system prompt, current models (Claude 3 Opus: 530)
IMAGE_TOKENS = 1600  # one image at full detail: Anthropic ~(w*h)/750 up to ~1600, OpenAI up to ~1100-2500
LOW_DETAIL_IMAGE = 85  # OpenAI, "detail": "low"

# the learned ratio
GAIN = 1 / 8  # weight of a new sample in the mean
DEV_GAIN = 1 / 4  # ... and in the mean deviation
DEV_K = 3  # how many mean deviations below the mean the reservation assumes
MIN_SAMPLES = 3  # settled calls before a deployment's ratio replaces four bytes a token
MIN_SAMPLE_BYTES = 16  # a shorter prompt is mostly overhead: it says little about the text
# a byte-level tokenizer never gives more than one token a byte; no real text averages 8 bytes a token, so a
# client cannot teach a deployment that prompts are nearly free (a learned count is at least half the estimate's)
MIN_BPT, MAX_BPT = 1.0, 8.0
LEARNED_MARGIN = 1 / 64  # on top of the ratio: the spread of like prompts is not zero everywhere


class PromptCount(NamedTuple):
    """What the model will read, as the estimate and the learned ratio need it."""

    units: int = 0  # text weighted in quarter tokens (ASCII byte: 1, other byte: 2)
    text_bytes: int = 0  # UTF-8 bytes of that text: what a learned bytes-per-token ratio applies to
    overhead: int = 0  # framing tokens: per message, reply priming, tool prompts
    fixed: int = 0  # tokens not proportional to text: images, attachments, token-id inputs
    cache_writes: bool = False  # the body marks prompt-cache breakpoints (cache_control): writes may be billed

    @property
    def tokens(self) -> int:
        """The estimate: about four bytes a token plus the documented overheads."""
        return -(-self.units // BYTES_PER_TOKEN) + self.overhead + self.fixed


NO_PROMPT = PromptCount()


class _Acc:
    """Running totals of one walk (a small object, so the walkers need not return tuples)."""

    __slots__ = ("units", "text", "fixed", "cache")

    def __init__(self) -> None:
        self.units = self.text = self.fixed = 0
        self.cache = False

    def add(self, s: str, weight: float = 1.0) -> None:
        n = len(s)
        if s.isascii():
            self.units += n if weight == 1.0 else math.ceil(n * weight)
            self.text += n
            return
        b = len(s.encode("utf-8", "surrogatepass"))
        ascii_chars = len(s.encode("ascii", "ignore"))
        self.units += math.ceil((ascii_chars + 2 * (b - ascii_chars)) * weight)
        self.text += b

    def add_json(self, value: Any, weight: float = 1.0) -> None:
        """Structured input the model reads rendered (tool schemas, tool inputs): its compact JSON."""
        try:
            n = len(orjson.dumps(value))
        except TypeError:  # not JSON-shaped (cannot come from a parsed body): count nothing
            return
        self.units += math.ceil(n * weight)
        self.text += n

    def add_binary(self, data: Any) -> None:
        """Base64 data of an unknown kind (audio, a PDF): about four characters a token, not learned."""
        if isinstance(data, str):
            self.fixed += len(data) // BYTES_PER_TOKEN

    def count(self, overhead: int) -> PromptCount:
        return PromptCount(self.units, self.text, overhead, self.fixed, self.cache)


# --------------------------------------------------------------------------- OpenAI chat completions
def chat_prompt(body: Mapping[str, Any]) -> PromptCount:
    """The prompt of an OpenAI chat completions body (messages, tools or functions, a response schema).

    The usual body (role and ASCII content per message, tools) is counted in locals; the walker
    object is made only for a message of another shape (this runs for every request).
    """
    acc: _Acc | None = None
    plain = 0  # bytes of the usual message, role and ASCII content, and of the tools' JSON
    overhead = REPLY_PRIMING
    messages = body.get("messages")
    if messages.__class__ is list and (text := _plain_text(messages)) is not None:
        plain, overhead = len(text), overhead + PER_MESSAGE * len(messages)
    elif messages.__class__ is list:
        for m in messages:
            if m.__class__ is not dict:
                continue
            overhead += PER_MESSAGE
            content = m.get("content")
            if len(m) == 2 and content.__class__ is str and content.isascii():
                plain += len(content)
            else:
                if acc is None:
                    acc = _Acc()
                overhead += _openai_message(m, acc)
    tools = body.get("tools") or body.get("functions")
    if tools:
        plain += _json_len(tools)
        overhead += OPENAI_TOOLS
    fmt = body.get("response_format")
    if fmt.__class__ is dict and fmt.get("json_schema") is not None:
        plain += _json_len(fmt["json_schema"])
    if acc is None:
        return PromptCount(plain, plain, overhead)
    return PromptCount(acc.units + plain, acc.text + plain, overhead, acc.fixed, acc.cache)


def _plain_text(messages: list[Any]) -> str | None:
    """The content of every message joined, when each is the usual one (role and ASCII text), else None.

    Done with C-level calls (map, join): a Python loop over the messages cost a few lines per message
    on every request.
    """
    try:
        if set(map(len, messages)) != _TWO_KEYS:
            return None
        text = "".join(map(_CONTENT, messages))  # TypeError: a content that is not text
    except (TypeError, AttributeError):  # a message that is not an object
        return None
    return text if text.isascii() else None


_TWO_KEYS = frozenset({2})
_CONTENT = operator.methodcaller("get", "content")


def _json_len(value: Any) -> int:
    """Bytes of compact JSON (what the model reads of a schema); 0 for what is not JSON-shaped."""
    try:
        return len(orjson.dumps(value))
    except TypeError:  # cannot come from a parsed body
        return 0


def _openai_message(m: dict[str, Any], acc: _Acc) -> int:
    """Add one message's text; returns its extra overhead (a name)."""
    content = m.get("content")
    role = m.get("role")
    if isinstance(content, str):
        acc.add(content, DENSE if role == "tool" or role == "function" else 1.0)  # results are mostly JSON
    elif isinstance(content, list):
        for part in content:
            _openai_part(part, acc)
    if len(m) <= 2:  # the usual message: role and content only
        return 0
    extra = 0
    name = m.get("name")
    if isinstance(name, str):
        acc.add(name)
        extra += PER_NAME
    calls = m.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                extra += _function_call(fn, acc)
    fn = m.get("function_call")
    if isinstance(fn, dict):
        extra += _function_call(fn, acc)
    refusal = m.get("refusal")
    if isinstance(refusal, str):
        acc.add(refusal)
    return extra


def _function_call(fn: dict[str, Any], acc: _Acc) -> int:
    """Add a call's name and JSON arguments; returns its framing tokens."""
    name, arguments = fn.get("name"), fn.get("arguments")
    if isinstance(name, str):
        acc.add(name)
    if isinstance(arguments, str):
        acc.add(arguments, DENSE)
    return PER_TOOL_CALL


def _openai_part(part: Any, acc: _Acc) -> None:
    if isinstance(part, str):
        acc.add(part)
        return
    if not isinstance(part, dict):
        return
    kind = part.get("type")
    if kind == "text" or kind == "refusal":
        v = part.get(kind)
        if isinstance(v, str):
            acc.add(v)
    elif kind == "image_url":
        img = part.get("image_url")
        low = isinstance(img, dict) and img.get("detail") == "low"
        acc.fixed += LOW_DETAIL_IMAGE if low else IMAGE_TOKENS
    elif kind == "input_audio":
        audio = part.get("input_audio")
        acc.add_binary(audio.get("data") if isinstance(audio, dict) else None)
    elif kind == "file":
        f = part.get("file")
        data = f.get("file_data") if isinstance(f, dict) else None
        if isinstance(data, str):
            acc.add_binary(data)
        else:
            acc.fixed += IMAGE_TOKENS  # a file by id: its size is not in the request
    else:
        acc.add_json(part)  # a part type this version does not know: all of it, as JSON


# --------------------------------------------------------------------------- OpenAI embeddings
def embeddings_prompt(body: Mapping[str, Any]) -> PromptCount:
    """An embeddings input: a string, strings, or token ids (counted exactly); no message overhead."""
    acc = _Acc()
    _embedding_input(body.get("input"), acc)
    return acc.count(0)


def _embedding_input(value: Any, acc: _Acc) -> None:
    if isinstance(value, str):
        acc.add(value)
    elif isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            acc.fixed += len(value)  # one input as token ids
            return
        for v in value:
            _embedding_input(v, acc)


# --------------------------------------------------------------------------- Anthropic messages
def messages_prompt(body: Mapping[str, Any]) -> PromptCount:
    """The prompt of an Anthropic messages body (system, messages, tools)."""
    acc = _Acc()
    overhead = REPLY_PRIMING
    system = body.get("system")
    if system:
        overhead += PER_MESSAGE
        _anthropic_content(system, acc)
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in messages:
            if m.__class__ is dict:
                overhead += PER_MESSAGE
                _anthropic_content(m.get("content"), acc)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        acc.add_json(tools)
        overhead += ANTHROPIC_TOOLS
        acc.cache = acc.cache or any(isinstance(t, dict) and "cache_control" in t for t in tools)
    if "cache_control" in body:  # automatic caching: the last cacheable block
        acc.cache = True
    return acc.count(overhead)


def _anthropic_content(content: Any, acc: _Acc) -> None:
    if isinstance(content, str):
        acc.add(content)
    elif isinstance(content, list):
        for block in content:
            if block.__class__ is not dict:
                if isinstance(block, str):
                    acc.add(block)
                continue
            kind = block.get("type")
            if kind == "text" or kind == "tool_result":  # most blocks of a long agent conversation: inline
                inner = block.get("text" if kind == "text" else "content")
                if inner.__class__ is str:
                    acc.add(inner)
                elif kind == "tool_result":
                    _anthropic_content(inner, acc)
                if "cache_control" in block:
                    acc.cache = True
            else:
                _anthropic_block(block, acc)


def _anthropic_block(block: dict[str, Any], acc: _Acc) -> None:
    if "cache_control" in block:
        acc.cache = True
    kind = block.get("type")
    if kind == "tool_use" or kind == "server_tool_use":
        name = block.get("name")
        if isinstance(name, str):
            acc.add(name)
        acc.add_json(block.get("input"), DENSE)
    elif kind == "thinking":  # earlier turns' thinking is not billed as input; counted to stay on the safe side
        text = block.get("thinking")
        if isinstance(text, str):
            acc.add(text)
    elif kind == "image":
        acc.fixed += IMAGE_TOKENS
    elif kind == "document":
        _document(block.get("source"), acc)
    else:
        acc.add_json(block)  # search results, web search results, redacted thinking, what comes next


def _document(source: Any, acc: _Acc) -> None:
    if not isinstance(source, dict):
        acc.fixed += IMAGE_TOKENS
        return
    kind = source.get("type")
    if kind == "text" and isinstance(source.get("data"), str):
        acc.add(source["data"])
    elif kind == "content":
        _anthropic_content(source.get("content"), acc)
    elif kind == "base64":
        acc.add_binary(source.get("data"))
    else:  # a URL or a file id: its size is not in the request
        acc.fixed += IMAGE_TOKENS


# --------------------------------------------------------------------------- the learned ratio
class Ratio(NamedTuple):
    """A deployment's bytes per prompt token, as its own usage reports showed them."""

    mean: float
    deviation: float  # EWMA of |sample - mean|
    samples: int


def learn(ratio: Ratio | None, prompt: PromptCount, reported_prompt_tokens: int) -> Ratio | None:
    """Fold one settled call into the ratio; a call that says little about the text is skipped."""
    tokens = reported_prompt_tokens - prompt.fixed
    if prompt.text_bytes < MIN_SAMPLE_BYTES or tokens <= 0:
        return ratio
    x = min(MAX_BPT, max(MIN_BPT, prompt.text_bytes / tokens))
    if ratio is None:
        return Ratio(x, 0.0, 1)
    deviation = ratio.deviation + DEV_GAIN * (abs(x - ratio.mean) - ratio.deviation)
    return Ratio(ratio.mean + GAIN * (x - ratio.mean), deviation, ratio.samples + 1)


def learned_tokens(ratio: Ratio | None, prompt: PromptCount) -> int | None:
    """The prompt's tokens by the learned ratio, ``DEV_K`` deviations on the safe side; None until learned."""
    if ratio is None or ratio.samples < MIN_SAMPLES or prompt.text_bytes <= 0:
        return None
    low = max(MIN_BPT, ratio.mean - DEV_K * ratio.deviation)
    text = math.ceil(prompt.text_bytes / low * (1 + LEARNED_MARGIN))
    return max(text, prompt.overhead) + prompt.fixed  # never less than the framing alone
