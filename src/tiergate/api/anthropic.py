"""Anthropic surface: POST /v1/messages (any query string, e.g. ?beta=true) and count_tokens.

Claude Code, OpenClaw's anthropic-messages providers and the anthropic SDK
come in here and ride the same tiers, budgets and ledger as OpenAI clients.
Errors leave in Anthropic's envelope (``{"type": "error", "error": {...}}``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from aiohttp import web

from tiergate.adapters.anthropic_messages import FORWARDED_HEADERS
from tiergate.api.common import JSON, read_json_object, require_type
from tiergate.api.edge import EdgeRoutes
from tiergate.api.gateway import GATEWAY
from tiergate.api.inbound import MAX_ID_CHARS, value_problem
from tiergate.api.needs import anthropic_messages_needs
from tiergate.api.openai import pipeline_request
from tiergate.api.plain_reply import Reply
from tiergate.api.render import render
from tiergate.core.errors import BadRequest
from tiergate.core.tokens import messages_prompt
from tiergate.core.types import ClientHints, Identity, RequestFeatures
from tiergate.pipeline.service import effective_identity

PROTOCOL = "anthropic-messages"
CLAUDE_CODE_SESSION = "X-Claude-Code-Session-Id"


def anthropic_stream_error(message: str) -> bytes:
    payload = {"type": "error", "error": {"type": "api_error", "message": f"upstream stream failed: {message}"}}
    return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"


def attributed(ident: Identity, headers: Any, body: dict[str, Any]) -> Identity:
    """Claude Code's session header and metadata.user_id feed the same session/agent fields.

    Claude Code's user_id is a JSON string (``{"device_id", "account_uuid", "session_id"}``)
    in current versions and ``user_<hash>_account_<uuid>_session_<uuid>`` in older ones;
    any other string names the user (agent) as it is.
    """
    meta = body.get("metadata")
    user_id = meta.get("user_id") if isinstance(meta, dict) and isinstance(meta.get("user_id"), str) else None
    session = headers.get("X-Tiergate-Session") or headers.get(CLAUDE_CODE_SESSION)
    agent = ident.agent
    if user_id:
        who, from_user = _parse_user_id(user_id)
        for value in (who, from_user):  # into the ledger and the session tracker as ids
            problem = value_problem(value, MAX_ID_CHARS) if isinstance(value, str) else None
            if problem is not None:
                raise BadRequest(f"metadata.user_id: the agent or session it names {problem}", param="metadata.user_id")
        session = session or from_user
        agent = agent or who
    if session is None and agent == ident.agent:
        return ident
    return dataclasses.replace(ident, session=session or ident.session, agent=agent)


def _parse_user_id(user_id: str) -> tuple[str | None, str | None]:
    """(agent, session) from a metadata.user_id."""
    if user_id.startswith("{"):
        try:
            obj = orjson.loads(user_id)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):  # only string members name anyone: anything else reads as absent
            account, session = obj.get("account_uuid"), obj.get("session_id")
            who = f"claude-code:{account}" if isinstance(account, str) and account else "claude-code"
            return who, (session if isinstance(session, str) and session else None)
    who, sep, sess = user_id.partition("_session_")
    return who, (sess if sep else None)


def messages_features(raw: bytes, body: dict[str, Any], ident: Identity) -> tuple[Identity, RequestFeatures]:
    model = require_type(body, "model", str, "a string naming a model, alias or auto", required=True)
    messages = require_type(body, "messages", list, "a non-empty list of messages", required=True)
    if not messages:
        raise BadRequest("messages: at least one message is required", param="messages")
    max_tokens = require_type(body, "max_tokens", int, "a positive integer", required=True)
    if max_tokens <= 0:
        raise BadRequest("max_tokens: must be a positive integer", param="max_tokens")
    stream = bool(require_type(body, "stream", bool, "a boolean"))
    ident = effective_identity(ident, model)
    return ident, RequestFeatures(
        model=model,
        task=ident.task,
        prompt_tokens_est=(prompt := messages_prompt(body)).tokens,
        prompt=prompt,
        max_tokens=max_tokens,
        local_only=ident.local_only,
        stream=stream,
        needs=anthropic_messages_needs(body, messages),
    )


async def messages(request: web.Request) -> Reply:
    gw = request.app[GATEWAY]
    ident = gw.keys.identify(request.headers, peer=request)
    raw, body = await read_json_object(request)
    ident, features = messages_features(raw, body, attributed(ident, request.headers, body))
    hints = ClientHints(
        headers={h: v for h in FORWARDED_HEADERS if (v := request.headers.get(h))}, query=request.query_string
    )
    answer = await gw.pipeline.open(pipeline_request(request, ident, features, body, PROTOCOL, hints))
    return await render(request, answer, error_event=anthropic_stream_error)


async def count_tokens(request: web.Request) -> web.Response:
    """What the model would read, counted as /v1/messages counts it for routing and budgets (the text of
    system, messages and tools, with the documented overheads); no upstream call."""
    gw = request.app[GATEWAY]
    gw.keys.identify(request.headers, peer=request)
    _, body = await read_json_object(request)
    require_type(body, "model", str, "a string naming a model, alias or auto", required=True)
    require_type(body, "messages", list, "a list of messages", required=True)
    return web.Response(body=orjson.dumps({"input_tokens": messages_prompt(body).tokens}), content_type=JSON)


def add_routes(routes: EdgeRoutes) -> None:
    routes.post("/v1/messages", messages)
    routes.post("/v1/messages/count_tokens", count_tokens)
