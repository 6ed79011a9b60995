"""What a deployment can do, and what a request needs. Pure: names in, sets out.

A deployment's capabilities come from config when it lists them, else from
its model's family (the table below, from the vendors' model pages), else a
chat default. A request needs what its body uses: tools, images, a JSON
schema, reasoning controls; embeddings requests need ``embeddings`` and
nothing else. The policy skips a candidate that lacks a need, saying which.
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

Capability = Literal["chat", "embeddings", "tools", "vision", "json_schema", "reasoning"]
CAPABILITIES: Final[tuple[str, ...]] = get_args(Capability)

# A chat model of unknown family: it chats, calls tools and follows a JSON schema (what every
# OpenAI-compatible server of the last two years does); vision and reasoning only when known.
CHAT_DEFAULT: Final = frozenset({"chat", "tools", "json_schema"})
EMBEDDINGS_ONLY: Final = frozenset({"embeddings"})

_EMBEDDING_MODEL = re.compile(
    r"(embed|embedding|^bge-|/bge-|^e5-|/e5-|gte-|minilm|mxbai|nomic-embed|snowflake-arctic-embed|voyage-)", re.I
)
# (pattern on the model id, capabilities beyond CHAT_DEFAULT); first match wins
_FAMILIES: Final[tuple[tuple[re.Pattern[str], frozenset[str]], ...]] = tuple(
    (re.compile(p, re.I), frozenset(extra))
    for p, extra in (
        (r"(^|/)(o\d|gpt-5)", ("vision", "reasoning")),
        (r"(^|/)gpt-4o|(^|/)gpt-4\.1|(^|/)gpt-4-turbo", ("vision",)),
        (r"claude-(3-7|sonnet-4|opus-4|haiku-4|4)", ("vision", "reasoning")),
        (r"claude-3", ("vision",)),
        (r"gemini-(2\.5|3)", ("vision", "reasoning")),
        (r"gemini", ("vision",)),
        (r"deepseek-(r1|reasoner)|qwq|-thinking|magistral", ("reasoning",)),
        (r"llava|-vl\b|-vl-|vision|pixtral|gemma-?3|llama-?4|minicpm-v|moondream", ("vision",)),
        (r"qwen3", ("reasoning",)),
    )
)


def capabilities_of(model: str, *, declared: frozenset[str] | None = None) -> frozenset[str]:
    """A deployment's capabilities: ``declared`` (config) wins, else the model's family."""
    if declared is not None:
        return declared
    if _EMBEDDING_MODEL.search(model):
        return EMBEDDINGS_ONLY
    for pattern, extra in _FAMILIES:
        if pattern.search(model):
            return CHAT_DEFAULT | extra
    return CHAT_DEFAULT


def named_for_embeddings(name: str) -> bool:
    """True when a model or alias name says it embeds (``text-embedding-3-small``, ``embed/local``, ``bge-m3``)."""
    return _EMBEDDING_MODEL.search(name) is not None


def missing(needs: frozenset[str], has: frozenset[str]) -> tuple[str, ...]:
    """The needs a deployment lacks, in CAPABILITIES order (for stable reasons)."""
    return tuple(c for c in CAPABILITIES if c in needs and c not in has)
