"""The stand-ins' deterministic fake model: every protocol answers the same prompt with the same words.

Reply text and token counts from the prompt, a tool's arguments and a structured answer from a JSON
schema, and text split into stream pieces. Pure: no I/O, no state.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

VOCAB = (
    "amber",
    "basalt",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "granite",
    "harbor",
    "indigo",
    "juniper",
    "kelp",
    "lagoon",
    "meadow",
    "nimbus",
    "onyx",
    "prairie",
    "quartz",
    "river",
    "sierra",
    "tundra",
    "umber",
    "valley",
    "willow",
    "zephyr",
)
REPLY_WORDS = 24  # words after the "[name]" tag in an unconstrained reply


@dataclass
class Reply:
    text: str
    tokens: int  # one per whitespace-separated word
    truncated: bool  # hit max_tokens
    stop_sequence: str | None  # which stop sequence ended it, if any


def scripted_reply(name: str, prompt: str, *, max_tokens: int | None = None, stop: Iterable[str] = ()) -> Reply:
    """``[name] w1 w2 ...``: seeded by the prompt, so equal prompts get equal replies."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")
    words = [f"[{name}]"] + [VOCAB[(seed + 7 * i) % len(VOCAB)] for i in range(REPLY_WORDS)]
    truncated = max_tokens is not None and max_tokens < len(words)
    if truncated:
        words = words[:max_tokens]
    text, hit = " ".join(words), None
    for seq in stop:
        idx = text.find(seq) if seq else -1
        if idx >= 0:  # text only shrinks, so a later hit is an earlier one
            text, hit, truncated = text[:idx], seq, False
    return Reply(text, len(text.split()), truncated, hit)


def text_of(content: Any) -> str:
    """All text inside a message content (string, parts list, tool blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(text_of(part) for part in content)
    if isinstance(content, dict):
        text = content.get("text")
        if isinstance(text, str):
            return text
        if "content" in content:
            return text_of(content["content"])
        if "input" in content:
            return orjson.dumps(content["input"]).decode()
    return ""


def approx_tokens(text: str) -> int:
    """Roughly four characters per token, never zero."""
    return max(1, len(text) // 4)


def tool_arguments(schema: Any) -> dict[str, Any]:
    """A small object for the schema's first property, e.g. {"city": "Paris"}."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict) or not props:
        return {}
    key, spec = next(iter(props.items()))
    spec = spec if isinstance(spec, dict) else {}
    if isinstance(spec.get("enum"), list) and spec["enum"]:
        return {key: spec["enum"][0]}
    kind = spec.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    defaults: dict[str, Any] = {"integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}
    # a malformed schema ("type": [] or an object) gets the string default, not a TypeError (a 500)
    return {key: defaults.get(kind, "Paris") if isinstance(kind, str) else "Paris"}


def schema_instance(schema: Any, words: str = "Paris", depth: int = 0) -> Any:
    """A value that fits a JSON schema's common keywords (type, required, enum, minLength, minimum,
    minItems), as a vendor's structured output would: every required property and the first one."""
    spec: dict[str, Any] = schema if isinstance(schema, dict) else {}
    if isinstance(spec.get("enum"), list) and spec["enum"]:
        return spec["enum"][0]
    if "const" in spec:
        return spec["const"]
    kind = spec.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind == "object" or (kind is None and isinstance(spec.get("properties"), dict)):
        props: dict[str, Any] = spec["properties"] if isinstance(spec.get("properties"), dict) else {}
        required = [k for k in spec.get("required") or () if isinstance(k, str)]
        keys = list(dict.fromkeys([*required, *list(props)[:1]]))
        if depth > 8:
            return {}
        return {k: schema_instance(props.get(k, {}), words, depth + 1) for k in keys}
    if kind == "array":
        n: int = spec["minItems"] if isinstance(spec.get("minItems"), int) else 1
        return [schema_instance(spec.get("items", {}), words, depth + 1) for _ in range(min(max(n, 0), 20))]
    if kind in ("integer", "number"):
        low = spec.get("minimum")
        return low if isinstance(low, int | float) and not isinstance(low, bool) else (1 if kind == "integer" else 1.5)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text, least = words, spec.get("minLength")
    if isinstance(least, int) and len(text) < least:
        text = (text + " ") * (min(least, 10_000) // (len(text) + 1) + 1)
    return text.strip() if not isinstance(least, int) or len(text.strip()) >= least else text


def split_text(text: str, pieces: int) -> list[str]:
    """Split into ``pieces`` near-equal non-empty slices (fewer if text is short).

    Whole words per slice when there are enough words (like real token deltas),
    otherwise plain character slices.
    """
    words = re.findall(r"\s*\S+|\s+$", text)
    units = words if len(words) >= pieces else list(text)
    n = max(1, min(pieces, len(units)))
    size, extra = divmod(len(units), n)
    out, pos = [], 0
    for i in range(n):
        step = size + (1 if i < extra else 0)
        out.append("".join(units[pos : pos + step]))
        pos += step
    return out
