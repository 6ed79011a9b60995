"""An OpenAI Responses client over a Chat Completions adapter (and so over any upstream chat reaches).

Per attempt the Responses body is translated to a chat body
(``responses_request``), sent through the inner chat adapter — the plain
``OpenAIChatAdapter`` for OpenAI-compatible upstreams, or ``OpenAIViaAnthropic``
for Anthropic ones, so Responses reaches Messages through the chat bridge that
already exists — and its reply or stream is translated back
(``responses_reply``, ``responses_stream``). Usage is metered by the inner
adapter on the chat side, as for a chat client: the ledger row is the same.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tiergate.adapters.base import Adapter, UpstreamReply, UpstreamStream
from tiergate.adapters.chat_over_responses import (
    ResponsesToChatStream,
    chat_to_responses_request,
    responses_to_chat_response,
)
from tiergate.adapters.responses_reply import chat_to_response, new_id
from tiergate.adapters.responses_request import Prepared, ToolNames, for_deployment, prepare
from tiergate.adapters.responses_stream import ChatToResponsesStream
from tiergate.adapters.translated import StreamConverter, _Bridge, _dropped_note, _first, _reply_json
from tiergate.core.catalog import Deployment
from tiergate.core.errors import AttemptError, TranslationError
from tiergate.core.types import NO_HINTS, ClientHints

RESPONSES = "openai-responses"


def chat_request(
    body: dict[str, Any], d: Deployment, hints: ClientHints = NO_HINTS
) -> tuple[dict[str, Any], list[str], ToolNames]:
    """The chat body for ``d``: from the surface's own translation when it made one (api/responses.py)."""
    try:
        p = hints.translated if isinstance(hints.translated, Prepared) else prepare(body)
    except ValueError as exc:
        raise TranslationError(str(exc)) from None
    return for_deployment(
        p, model=d.model, max_tokens_limit=d.max_output_tokens, reasoning="reasoning" in d.capabilities
    )


class ResponsesViaChat:
    """``openai-responses`` clients on a chat-speaking adapter; ``target`` names the upstream api in notes."""

    def __init__(self, inner: Adapter, target: str = "openai-chat") -> None:
        self.inner = inner
        self.target = target

    async def complete(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamReply:
        chat, dropped, names = chat_request(body, d, hints)
        reply = await self.inner.complete(d, chat, timeout_s=timeout_s, output_cap=output_cap)
        try:
            obj = chat_to_response(
                _reply_json(reply), request=body, names=names, model=d.model, response_id=new_id("resp")
            )
        except ValueError as exc:
            raise AttemptError("protocol", f"upstream reply could not be translated: {exc}") from None
        reply.body = orjson.dumps(obj)
        reply.content_type = "application/json"
        reply.notes += _dropped_note(dropped, self.target)
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
        chat, dropped, names = chat_request(body, d, hints)
        s = await self.inner.stream(d, chat, timeout_s=timeout_s, output_cap=output_cap)
        conv = ChatToResponsesStream(request=body, names=names, model=d.model, response_id=new_id("resp"))
        s.first_event = await _first(s, conv)
        s.rest = _converted(s, s.rest, conv)
        s.notes += _dropped_note(dropped, self.target)
        return s


async def _converted(
    s: UpstreamStream, inner: AsyncIterator[bytes], conv: ChatToResponsesStream
) -> AsyncIterator[bytes]:
    """The rest of the stream in Responses events; an upstream that fails mid-way ends in response.failed."""
    async for ev in inner:
        try:
            out = conv.feed(ev)
        except ValueError as exc:
            s.status.error = f"protocol: {exc}"
            s.close()
            break
        if out:
            yield out
    if s.status.completed and s.status.error is None:
        tail = conv.finish()
    else:
        tail = conv.failed(s.status.error or "upstream ended the stream early")
    if tail:
        yield tail


class ChatViaResponses(_Bridge):
    """A Chat Completions client served by an upstream that speaks only Responses (``api: openai-responses``)."""

    translate_request = staticmethod(chat_to_responses_request)
    translate_response = staticmethod(responses_to_chat_response)

    def stream_converter(self, d: Deployment, body: dict[str, Any], s: UpstreamStream) -> StreamConverter:
        opts = body.get("stream_options")
        return ResponsesToChatStream(
            model=d.model,
            completion_id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
            include_usage=bool(isinstance(opts, dict) and opts.get("include_usage")),
        )
