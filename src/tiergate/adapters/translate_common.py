"""Helpers the translators share: JSON object typing, validation errors with field paths, dropped-field notes."""

from __future__ import annotations

from typing import Any

# A JSON object as orjson parses it: the wire shapes are open, their values checked where read.
JsonObject = dict[str, Any]

# OpenAI fields whose value is the protocol default: nothing is lost by not sending them.
_OPENAI_NEUTRAL = (
    ("n", 1),
    ("logprobs", False),
    ("presence_penalty", 0),
    ("frequency_penalty", 0),
    ("top_logprobs", 0),
    ("store", False),
    ("parallel_tool_calls", True),
)
_OPENAI_CONSUMED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "temperature",
        "top_p",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
        "response_format",
    }
)
_ANTHROPIC_CONSUMED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stop_sequences",
        "temperature",
        "top_p",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
    }
)
_TOOL_KEYS = frozenset({"type", "name", "description", "input_schema", "strict", "cache_control"})
_TOOL_CHOICE = (("auto", "auto"), ("any", "required"), ("none", "none"))  # Anthropic type, OpenAI value
OPENAI_MAX_STOP = 4  # OpenAI rejects more than four stop sequences
SAMPLING_REMOVED_IN = "2026-10-21"  # anthropic-version that answers 400 to temperature/top_p/top_k
JSON_OBJECT_INSTRUCTION = "Respond with a single valid JSON object and nothing else."


def _obj(value: Any) -> JsonObject:
    """``value`` when it is a JSON object, else an empty one (for optional nested objects)."""
    return value if isinstance(value, dict) else {}


def _note(dropped: list[str], name: str) -> None:
    if name not in dropped:
        dropped.append(name)


def _bad(path: str, what: str) -> ValueError:
    return ValueError(f"{path}: {what}")


def _required(obj: JsonObject, key: str, path: str) -> str:
    """A non-empty string field, or ValueError naming it."""
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _bad(f"{path}.{key}", "is required")
    return value


def _clamp(value: Any, limit: int | None, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(path, "must be a non-negative integer")
    return min(value, limit) if limit else value


def _leftovers(
    body: JsonObject, consumed: frozenset[str], dropped: list[str], neutral: tuple[tuple[str, Any], ...] = ()
) -> None:
    """Name every non-null field that was not translated (protocol defaults excepted)."""
    defaults = dict(neutral)
    for key, value in body.items():
        if key not in consumed and value is not None and not (key in defaults and value == defaults[key]):
            _note(dropped, key)


def _mentions(obj: Any, key: str) -> bool:
    """Whether ``key`` is set anywhere in a tree of objects and arrays (tool schemas aside)."""
    if isinstance(obj, dict):
        return obj.get(key) is not None or any(_mentions(v, key) for k, v in obj.items() if k != "input_schema")
    return isinstance(obj, list) and any(_mentions(v, key) for v in obj)


def _objects(value: Any, path: str, what: str = "an array") -> list[tuple[int, JsonObject]]:
    """(index, item) pairs of an array of objects, or ValueError naming the culprit."""
    if not isinstance(value, list):
        raise _bad(path, f"must be {what}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"{path}[{i}]", "must be an object")
    return list(enumerate(value))


def _blocks(content: Any, path: str) -> list[JsonObject]:
    """An array of typed blocks, or ValueError naming the culprit."""
    blocks = _objects(content, path, "a string or an array of blocks")
    for j, block in blocks:
        if not isinstance(block.get("type"), str):
            raise _bad(f"{path}[{j}]", "must be an object with a type")
    return [block for _, block in blocks]


def _joined_text(content: Any, path: str, sep: str) -> str:
    """A string, or an array of text blocks/parts joined with ``sep``."""
    if content is None or isinstance(content, str):
        return content or ""
    for j, part in _objects(content, path, "a string or an array of text parts"):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise _bad(f"{path}[{j}]", "must be a text block")
    return sep.join(part["text"] for part in content)
