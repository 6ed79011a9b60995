"""Cross-protocol adapters: a client protocol on top of an upstream adapter of the other one.

Each wraps an upstream adapter and translates on the way in (request) and
on the way out (reply or stream), using the pure functions in
``translate_*``. What the target protocol cannot express is dropped on
purpose and reported as a note, which lands in the ledger's reason.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import orjson

from tiergate.adapters.base import Adapter, UpstreamReply, UpstreamStream
from tiergate.adapters.translate_requests import (
    anthropic_to_openai_request,
    openai_to_anthropic_request,
)
from tiergate.adapters.translate_responses import (
    anthropic_to_openai_response,
    openai_to_anthropic_response,
)
from tiergate.adapters.translate_streams import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
)
from tiergate.core.catalog import Deployment
from tiergate.core.errors import AttemptError, TranslationError
from tiergate.core.types import NO_HINTS, ClientHints


def _dropped_note(dropped: list[str], target: str) -> list[str]:
    return [f"not sent to {target}: {', '.join(sorted(set(dropped)))}"] if dropped else []


class StreamConverter(Protocol):
    """One direction of stream translation (``translate_streams``): whole SSE events in, events out."""

    def feed(self, event: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


RequestTranslation = Callable[..., tuple[dict[str, Any], list[str]]]
ResponseTranslation = Callable[..., dict[str, Any]]


def _translate(fn: RequestTranslation, body: dict[str, Any], **kw: Any) -> tuple[dict[str, Any], list[str]]:
    try:
        return fn(body, **kw)
    except ValueError as exc:
        raise TranslationError(str(exc)) from None


async def _converted(
    s: UpstreamStream, inner: AsyncIterator[bytes], converter: StreamConverter
) -> AsyncIterator[bytes]:
    async for ev in inner:
        try:
            out = converter.feed(ev)
        except ValueError as exc:  # malformed upstream event: end the stream with an error, not a crash
            s.status.error = f"protocol: {exc}"
            s.close()
            return
        if out:
            yield out
    if s.status.completed and s.status.error is None:
        tail = converter.finish()
        if tail:
            yield tail


def _convert_reply(fn: ResponseTranslation, reply: UpstreamReply, model: str) -> bytes:
    try:
        return orjson.dumps(fn(_reply_json(reply), model=model))
    except ValueError as exc:
        raise AttemptError("protocol", f"upstream reply could not be translated: {exc}") from None


def _feed_first(s: UpstreamStream, converter: StreamConverter, event: bytes) -> bytes:
    try:
        return converter.feed(event)
    except ValueError as exc:
        s.close()
        raise AttemptError("protocol", f"upstream stream could not be translated: {exc}") from None


async def _first(s: UpstreamStream, converter: StreamConverter) -> bytes:
    """Translate up to the first event that gives the client something; until then it is still a failed
    attempt (nothing sent yet) when it is malformed or the stream ends. An event that translates to
    nothing (a ping) must not pass for the first one: the executor fails over only before it."""
    out = _feed_first(s, converter, s.first_event)
    while not out:
        try:
            event = await anext(s.rest)
        except StopAsyncIteration:
            s.close()
            why = s.status.error or "upstream ended the stream"
            raise AttemptError("dropped", f"{why} before its first event") from None
        out = _feed_first(s, converter, event)
    return out


def _reply_json(reply: UpstreamReply) -> dict[str, Any]:
    try:
        obj = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        raise AttemptError("protocol", "upstream sent a body that is not JSON") from None
    if not isinstance(obj, dict):
        raise AttemptError("protocol", "upstream sent a body that is not a JSON object")
    return obj


class _Bridge:
    """A client protocol over an upstream adapter of the other protocol; subclasses name the translations."""

    translate_request: RequestTranslation
    translate_response: ResponseTranslation

    def __init__(self, inner: Adapter) -> None:
        self.inner = inner

    def stream_converter(self, d: Deployment, body: dict[str, Any], s: UpstreamStream) -> StreamConverter:
        raise NotImplementedError

    def _request(self, d: Deployment, body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        return _translate(type(self).translate_request, body, model=d.model, max_tokens_limit=d.max_output_tokens)

    async def complete(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamReply:
        upstream_body, dropped = self._request(d, body)
        reply = await self.inner.complete(d, upstream_body, timeout_s=timeout_s, output_cap=output_cap)
        reply.body = _convert_reply(type(self).translate_response, reply, d.model)
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
        upstream_body, dropped = self._request(d, body)
        s = await self.inner.stream(d, upstream_body, timeout_s=timeout_s, output_cap=output_cap)
        conv = self.stream_converter(d, body, s)
        s.first_event = await _first(s, conv)
        s.rest = _converted(s, s.rest, conv)
        s.notes += _dropped_note(dropped, d.api)
        return s


class AnthropicViaOpenAI(_Bridge):
    """An Anthropic Messages client served by an OpenAI-protocol upstream (llama.cpp, Ollama, vLLM...)."""

    translate_request = staticmethod(anthropic_to_openai_request)
    translate_response = staticmethod(openai_to_anthropic_response)

    def stream_converter(self, d: Deployment, body: dict[str, Any], s: UpstreamStream) -> StreamConverter:
        return OpenAIToAnthropicStream(
            model=d.model, message_id=f"msg_{uuid.uuid4().hex[:24]}", input_tokens_estimate=s.usage.prompt_tokens
        )


class OpenAIViaAnthropic(_Bridge):
    """An OpenAI Chat Completions client served by an Anthropic-protocol upstream."""

    translate_request = staticmethod(openai_to_anthropic_request)
    translate_response = staticmethod(anthropic_to_openai_response)

    def stream_converter(self, d: Deployment, body: dict[str, Any], s: UpstreamStream) -> StreamConverter:
        opts = body.get("stream_options")
        return AnthropicToOpenAIStream(
            model=d.model,
            completion_id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
            include_usage=bool(isinstance(opts, dict) and opts.get("include_usage")),
        )
