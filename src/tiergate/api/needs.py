"""What a request body asks of a deployment, read from each client's own wire format.

Only presence is checked (a ``tools`` list, an image part, a ``json_schema``
response format): cheap, and enough to keep a request away from a deployment
that cannot serve it (tiergate.core.capabilities). Reasoning controls
(``thinking``, ``reasoning_effort``) are not needs: Claude Code and Codex send
them on every turn, and a model without them answers anyway, the control
dropped and noted in the reason.
"""

from __future__ import annotations

import operator
from typing import Any

from tiergate.core.types import CHAT

_TOOLS = CHAT | {"tools"}
_CONTENT = operator.methodcaller("get", "content")
_OPENAI_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
_ANTHROPIC_IMAGE_BLOCKS = frozenset({"image", "document"})


def _has_part(messages: list[Any], kinds: frozenset[str]) -> bool:
    try:  # the usual messages hold text only: no part to look at, found without a Python loop
        if list not in set(map(type, map(_CONTENT, messages))):
            return False
    except AttributeError:  # a message that is not an object: the loop below skips it
        pass
    for m in messages:
        content = m.get("content") if m.__class__ is dict else None
        if content.__class__ is list:
            for part in content:
                if isinstance(part, dict) and part.get("type") in kinds:
                    return True
                inner = part.get("content") if isinstance(part, dict) else None  # tool_result blocks
                if isinstance(inner, list) and any(isinstance(p, dict) and p.get("type") in kinds for p in inner):
                    return True
    return False


def openai_chat_needs(body: dict[str, Any], messages: list[Any]) -> frozenset[str]:
    tools = body.get("tools") or body.get("functions")
    rf = body.get("response_format")
    schema = isinstance(rf, dict) and rf.get("type") == "json_schema"
    vision = _has_part(messages, _OPENAI_IMAGE_PARTS)
    if not (schema or vision):
        return _TOOLS if tools else CHAT  # the usual requests: no set built per request
    needs = set(CHAT)
    if tools:
        needs |= _TOOLS
    if schema:
        needs.add("json_schema")
    if vision:
        needs.add("vision")
    return frozenset(needs)


def anthropic_messages_needs(body: dict[str, Any], messages: list[Any]) -> frozenset[str]:
    tools = body.get("tools")
    of = body.get("output_format")
    schema = isinstance(of, dict) and of.get("type") == "json_schema"
    vision = _has_part(messages, _ANTHROPIC_IMAGE_BLOCKS)
    if not (schema or vision):
        return _TOOLS if tools else CHAT
    needs = set(CHAT)
    if tools:
        needs |= _TOOLS
    if schema:
        needs.add("json_schema")
    if vision:
        needs.add("vision")
    return frozenset(needs)
