"""OpenAI Responses surface: POST /v1/responses (Codex CLI, the OpenAI Agents SDK, OpenClaw's openai-responses).

Parses what routing needs (model, input, stream, max_output_tokens, what the
tools and format ask of a deployment) and hands the Responses body to the
same pipeline as every other surface, under the ``openai-responses``
protocol: the adapters translate it per attempt for the upstream they reach.
Errors leave in OpenAI's envelope; a stream that fails after its first event
ends with ``response.failed`` and an ``error`` event carrying the next
sequence number.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from tiergate.adapters.responses_bridge import RESPONSES
from tiergate.adapters.responses_request import Prepared, prepare
from tiergate.api.common import JSON, read_json_object, require_type
from tiergate.api.edge import EdgeRoutes
from tiergate.api.gateway import GATEWAY
from tiergate.api.needs import openai_chat_needs
from tiergate.api.openai import pipeline_request
from tiergate.api.plain_reply import Reply
from tiergate.api.render import render
from tiergate.api.responses_state import StoredState, delete_response, get_response, list_input_items
from tiergate.core.errors import BadRequest
from tiergate.core.tokens import chat_prompt
from tiergate.core.types import ClientHints, Identity, RequestFeatures
from tiergate.pipeline.answer import Answer
from tiergate.pipeline.service import effective_identity

_SEQUENCE = re.compile(rb'"sequence_number":(\d+)')


def responses_features(body: dict[str, Any], ident: Identity) -> tuple[Prepared, Identity, RequestFeatures]:
    """Validate what routing reads; the translation (made here once, for every attempt) names a malformed
    item as a 400."""
    model = require_type(body, "model", str, "a string naming a model, alias or auto") or "auto"
    if not isinstance(body.get("input"), (str, list)) or body.get("input") in ("", []):
        raise BadRequest("input: a string or a non-empty list of items is required", param="input")
    stream = bool(require_type(body, "stream", bool, "a boolean"))
    max_out = require_type(body, "max_output_tokens", int, "a positive integer")
    if max_out is not None and max_out <= 0:
        raise BadRequest("max_output_tokens: must be a positive integer", param="max_output_tokens")
    try:
        prepared = prepare(body)
    except ValueError as exc:
        param = str(exc).split(":", 1)[0]
        raise BadRequest(str(exc), param=param) from None
    chat = prepared.chat
    ident = effective_identity(ident, model)
    return (
        prepared,
        ident,
        RequestFeatures(
            model=model,
            task=ident.task,
            prompt_tokens_est=(prompt := chat_prompt(chat)).tokens,
            prompt=prompt,
            max_tokens=max_out,
            local_only=ident.local_only,
            stream=stream,
            needs=openai_chat_needs(chat, chat["messages"]),
        ),
    )


class StreamErrors:
    """The in-band error event of one stream: its sequence number follows the last event relayed."""

    __slots__ = ("next_seq",)

    def __init__(self) -> None:
        self.next_seq = 0

    async def watch(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for ev in events:
            self.saw(ev)
            yield ev

    def saw(self, ev: bytes) -> None:
        i = ev.rfind(b'"sequence_number":')
        if i >= 0 and (m := _SEQUENCE.match(ev, i)):
            self.next_seq = int(m.group(1)) + 1

    def event(self, message: str) -> bytes:
        payload = {
            "type": "error",
            "sequence_number": self.next_seq,
            "code": "stream_interrupted",
            "message": f"upstream stream failed: {message}",
            "param": None,
        }
        self.next_seq += 1
        return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"


async def create(request: web.Request) -> Reply:
    gw = request.app[GATEWAY]
    ident = gw.keys.identify(request.headers, request.remote)
    _, body = await read_json_object(request)
    state = StoredState(gw, ident, body)
    body = await state.expand(body)
    prepared, ident, features = responses_features(body, ident)
    hints = ClientHints(translated=prepared)
    answer = await gw.pipeline.open(pipeline_request(request, ident, features, body, RESPONSES, hints))
    errors = StreamErrors()
    watch_stream(answer, errors)
    await state.keep_answer(answer)
    return await render(request, answer, error_event=errors.event)


async def input_tokens(request: web.Request) -> web.Response:
    """An estimate of what the model would read (the routing estimate); no upstream call."""
    gw = request.app[GATEWAY]
    ident = gw.keys.identify(request.headers, request.remote)
    _, body = await read_json_object(request)
    body = await StoredState(gw, ident, {**body, "store": False}).expand(body)
    _, _, features = responses_features(body, ident)
    payload = {"object": "response.input_tokens", "input_tokens": features.prompt_tokens_est}
    return web.Response(body=orjson.dumps(payload), content_type=JSON)


def watch_stream(answer: Answer, errors: StreamErrors) -> None:
    if answer.outcome.stream is None:
        return
    s = answer.stream
    errors.saw(s.first_event)
    s.rest = errors.watch(s.rest)


def add_routes(routes: EdgeRoutes) -> None:
    routes.post("/v1/responses", create)
    routes.post("/responses", create)
    routes.post("/v1/responses/input_tokens", input_tokens)
    routes.get("/v1/responses/{response_id}", get_response)
    routes.add("DELETE", "/v1/responses/{response_id}", delete_response)
    routes.get("/v1/responses/{response_id}/input_items", list_input_items)
