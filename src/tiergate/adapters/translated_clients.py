"""Ollama and Gemini clients served by an OpenAI-protocol adapter (and so by any upstream it bridges to).

Each bridge translates the client's body to an OpenAI chat or embeddings
request (``translate_ollama``, ``translate_gemini``), calls the adapter it
wraps and turns the answer into the client's shapes. Over an Anthropic
upstream the wrapped adapter is ``OpenAIViaAnthropic``: one translation per
protocol, composed, instead of one per pair. Usage is metered by the
innermost adapter on the upstream's own bytes, so the ledger is the same
whichever client asked.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from tiergate.adapters.base import Adapter, UpstreamReply, UpstreamStream
from tiergate.adapters.openai_read import read_reply
from tiergate.adapters.translate_common import JsonObject
from tiergate.adapters.translate_gemini import (
    OpenAIToGeminiStream,
    gemini_embed_reply,
    gemini_embed_to_openai,
    gemini_reply,
    gemini_to_openai,
    includes_thoughts,
)
from tiergate.adapters.translate_ollama import (
    OpenAIToOllamaStream,
    ollama_chat_to_openai,
    ollama_embed_reply,
    ollama_embed_to_openai,
    ollama_generate_to_openai,
    ollama_reply,
)
from tiergate.adapters.translated import StreamConverter, _converted, _dropped_note, _first, _reply_json
from tiergate.core.catalog import Deployment
from tiergate.core.errors import AttemptError, TranslationError
from tiergate.core.types import NO_HINTS, ClientHints

NDJSON = "application/x-ndjson"


def utc_now() -> str:
    """RFC 3339 in UTC with a Z, as Ollama writes ``created_at``."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def client_model(body: JsonObject, d: Deployment) -> str:
    """The model name the client asked for (Ollama and Gemini clients match answers by it)."""
    model = body.get("model")
    return model if isinstance(model, str) and model else d.name


class ClientBridge:
    """A non-OpenAI client protocol over an OpenAI-protocol adapter; subclasses give the three translations."""

    stream_content_type = "text/event-stream"

    def __init__(self, inner: Adapter, *, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.inner = inner
        self.clock_ns = clock_ns

    def to_openai(self, d: Deployment, body: JsonObject, *, stream: bool) -> tuple[JsonObject, list[str]]:
        raise NotImplementedError

    def from_openai(self, d: Deployment, body: JsonObject, obj: JsonObject, reply: UpstreamReply) -> JsonObject:
        raise NotImplementedError

    def converter(self, d: Deployment, body: JsonObject, hints: ClientHints) -> StreamConverter:
        raise NotImplementedError

    def _request(self, d: Deployment, body: JsonObject, *, stream: bool) -> tuple[JsonObject, list[str]]:
        try:
            return self.to_openai(d, body, stream=stream)
        except ValueError as exc:
            raise TranslationError(str(exc)) from None

    async def complete(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamReply:
        upstream_body, dropped = self._request(d, body, stream=False)
        reply = await self.inner.complete(d, upstream_body, timeout_s=timeout_s, output_cap=output_cap)
        try:
            reply.body = orjson.dumps(self.from_openai(d, body, _reply_json(reply), reply))
        except ValueError as exc:
            raise AttemptError("protocol", f"upstream reply could not be translated: {exc}") from None
        reply.content_type = "application/json"
        reply.notes += _dropped_note(dropped, d.api)
        return reply

    async def stream(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamStream:
        upstream_body, dropped = self._request(d, body, stream=True)
        s = await self.inner.stream(d, upstream_body, timeout_s=timeout_s, output_cap=output_cap)
        conv = self.converter(d, body, hints)
        s.first_event = await _first(s, conv)
        s.rest = _converted(s, s.rest, conv)
        s.content_type = self.stream_content_type
        s.notes += _dropped_note(dropped, d.api)
        return s


class OllamaChatViaOpenAI(ClientBridge):
    """/api/chat (``generate=False``) or /api/generate over an OpenAI-protocol adapter; streams NDJSON."""

    stream_content_type = NDJSON

    def __init__(self, inner: Adapter, *, generate: bool = False, **kw: Any) -> None:
        super().__init__(inner, **kw)
        self.generate = generate

    def to_openai(self, d: Deployment, body: JsonObject, *, stream: bool) -> tuple[JsonObject, list[str]]:
        translate = ollama_generate_to_openai if self.generate else ollama_chat_to_openai
        return translate(body, model=d.model, max_tokens_limit=d.max_output_tokens, stream=stream)

    def from_openai(self, d: Deployment, body: JsonObject, obj: JsonObject, reply: UpstreamReply) -> JsonObject:
        answer = read_reply(obj)
        # the figures the ledger bills (the upstream's when believed, else tiergate's estimate)
        answer.prompt_tokens, answer.completion_tokens = reply.usage.prompt_tokens, reply.usage.completion_tokens
        total = int(reply.upstream_ms * 1_000_000)
        return ollama_reply(
            answer, model=client_model(body, d), created_at=utc_now(), total_ns=total, generate=self.generate
        )

    def converter(self, d: Deployment, body: JsonObject, hints: ClientHints) -> StreamConverter:
        return OpenAIToOllamaStream(
            model=client_model(body, d), created_at=utc_now, clock=self.clock_ns, generate=self.generate
        )


class OllamaEmbedViaOpenAI(ClientBridge):
    """/api/embed (or the older /api/embeddings, ``legacy=True``) over the OpenAI embeddings adapter."""

    def __init__(self, inner: Adapter, *, legacy: bool = False, **kw: Any) -> None:
        super().__init__(inner, **kw)
        self.legacy = legacy

    def to_openai(self, d: Deployment, body: JsonObject, *, stream: bool) -> tuple[JsonObject, list[str]]:
        return ollama_embed_to_openai(body, model=d.model, legacy=self.legacy)

    def from_openai(self, d: Deployment, body: JsonObject, obj: JsonObject, reply: UpstreamReply) -> JsonObject:
        total = int(reply.upstream_ms * 1_000_000)
        return ollama_embed_reply(obj, model=client_model(body, d), total_ns=total, legacy=self.legacy)

    async def stream(self, d: Deployment, body: dict[str, Any], **kw: Any) -> UpstreamStream:
        raise AttemptError("protocol", "embeddings are not streamed")


def wants_sse(hints: ClientHints) -> bool:
    """streamGenerateContent frames chunks as SSE with ``alt=sse``, else as one JSON array."""
    return "alt=sse" in (hints.query or "")


class GeminiViaOpenAI(ClientBridge):
    """generateContent / streamGenerateContent over an OpenAI-protocol adapter."""

    def to_openai(self, d: Deployment, body: JsonObject, *, stream: bool) -> tuple[JsonObject, list[str]]:
        return gemini_to_openai(body, model=d.model, max_tokens_limit=d.max_output_tokens, stream=stream)

    def from_openai(self, d: Deployment, body: JsonObject, obj: JsonObject, reply: UpstreamReply) -> JsonObject:
        answer = read_reply(obj)
        answer.prompt_tokens, answer.completion_tokens = reply.usage.prompt_tokens, reply.usage.completion_tokens
        return gemini_reply(answer, model=client_model(body, d), include_thoughts=includes_thoughts(body))

    def converter(self, d: Deployment, body: JsonObject, hints: ClientHints) -> StreamConverter:
        return OpenAIToGeminiStream(
            model=client_model(body, d),
            response_id=uuid.uuid4().hex,
            sse=wants_sse(hints),
            include_thoughts=includes_thoughts(body),
        )

    async def stream(self, d: Deployment, body: dict[str, Any], **kw: Any) -> UpstreamStream:
        s = await super().stream(d, body, **kw)
        if not wants_sse(kw.get("hints", NO_HINTS)):
            s.content_type = "application/json"
        return s


class GeminiEmbedViaOpenAI(ClientBridge):
    """embedContent (or batchEmbedContents, ``batch=True``) over the OpenAI embeddings adapter."""

    def __init__(self, inner: Adapter, *, batch: bool = False, **kw: Any) -> None:
        super().__init__(inner, **kw)
        self.batch = batch

    def to_openai(self, d: Deployment, body: JsonObject, *, stream: bool) -> tuple[JsonObject, list[str]]:
        return gemini_embed_to_openai(body, model=d.model, batch=self.batch)

    def from_openai(self, d: Deployment, body: JsonObject, obj: JsonObject, reply: UpstreamReply) -> JsonObject:
        return gemini_embed_reply(obj, batch=self.batch)

    async def stream(self, d: Deployment, body: dict[str, Any], **kw: Any) -> UpstreamStream:
        raise AttemptError("protocol", "embeddings are not streamed")
