"""The wire side of a scheduled job: its prompt as an OpenAI chat request, and the answer's text.

A job is a client of the pipeline like any other, speaking the OpenAI chat
protocol in-process (no HTTP, no key: the scheduler is the gateway's own),
so it is routed, limited, gated, budgeted and recorded as any request is.
Its wire fields are written and read here, with the same feature
extraction as ``POST /v1/chat/completions``.
"""

from __future__ import annotations

from typing import Any

import orjson

from tiergate.api.openai import PROTOCOL, chat_features
from tiergate.core.errors import UpstreamError
from tiergate.core.types import Identity, RequestFeatures


def job_request(
    prompt: str, *, model: str, system: str | None, max_tokens: int | None, identity: Identity
) -> tuple[Identity, RequestFeatures, dict[str, Any], str]:
    """(identity, features, body, protocol) for one run's request."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": False}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    ident, features = chat_features(b"", body, identity)
    return ident, features, body, PROTOCOL


def answer_text(body: bytes) -> str:
    """The assistant's text in a chat completion (its first choice); ``UpstreamError`` when there is none."""
    try:
        doc = orjson.loads(body)
        content = doc["choices"][0]["message"].get("content")
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamError("the answer is not a chat completion with a message") from None
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        raise UpstreamError("the answer has no text")
    return content
