"""Anthropic-compatible stand-in: Messages API (plain and streaming), token counting.

Faithful enough for the official ``anthropic`` SDK, including the exact SSE
event sequence its stream accumulator expects. Replies come from the
deterministic fake model in :mod:`.faults`; ``/_control`` injects faults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .fake_model import approx_tokens, scripted_reply, split_text, text_of, tool_arguments
from .faults import ApiError, EventStream, Handler, install_control, json_response, new_id, parse_json


@dataclass(frozen=True)
class _Config:
    name: str
    models: tuple[str, ...]
    api_key: str | None
    stream_chunks: int
    chunk_delay_s: float


_CONFIG = web.AppKey("tiergate_anthropic_standin", _Config)
_REQUEST_ID = web.RequestKey("tiergate_anthropic_request_id", str)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_error(status: int, message: str, *, code: str | None = None, param: str | None = None) -> web.Response:
    """An error in Anthropic's ``{"type": "error", "error": {type, message}}`` envelope."""
    return json_response(
        {"type": "error", "error": {"type": _error_type(status), "message": message}, "request_id": None}, status
    )


def build_anthropic_standin(
    *, name: str, models: list[str], api_key: str | None = None, stream_chunks: int = 20, chunk_delay_s: float = 0.0
) -> web.Application:
    """A fresh app; each one has its own fault queue and recordings."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[_CONFIG] = _Config(name, tuple(models), api_key, max(1, stream_chunks), chunk_delay_s)
    install_control(app, model_paths=("/v1/messages", "/v1/messages/count_tokens"), error_response=anthropic_error)
    app.middlewares.insert(0, _request_id_middleware)
    app.on_response_prepare.append(_add_request_id)
    app.router.add_post("/v1/messages", _messages)
    app.router.add_post("/v1/messages/count_tokens", _count_tokens)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{model:.+}", _get_model)
    return app


@web.middleware
async def _request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One id per request, used by both the header and error bodies."""
    request[_REQUEST_ID] = new_id("req_011", 21)
    resp = await handler(request)
    if isinstance(resp, web.Response) and resp.status >= 400 and resp.body:
        body = parse_json(resp.body) if isinstance(resp.body, bytes) else None
        if isinstance(body, dict) and body.get("type") == "error":
            resp.body = orjson.dumps({**body, "request_id": request[_REQUEST_ID]})
    return resp


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    if not request.path.startswith("/_control/"):
        response.headers.setdefault("request-id", request.get(_REQUEST_ID) or new_id("req_"))


def _authorize(request: web.Request, cfg: _Config) -> None:
    key = request.headers.get("x-api-key")
    if key is None and request.headers.get("Authorization", "").lower().startswith("bearer "):
        key = request.headers["Authorization"][7:].strip()
    if cfg.api_key is not None and key != cfg.api_key:
        raise ApiError(401, "x-api-key header is required" if not key else "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        raise ApiError(400, "anthropic-version: header is required")


async def _body(request: web.Request, cfg: _Config) -> dict[str, Any]:
    """Headers checked, then a JSON object body with a known model and messages."""
    _authorize(request, cfg)
    raw = await request.read()
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise ApiError(
            400, "There was an error parsing the body of your request: " + ("empty body" if not raw else "invalid JSON")
        )
    for field in ("model", "messages"):
        if field not in body:
            raise ApiError(400, f"{field}: Field required")
    if not isinstance(body["messages"], list) or not body["messages"]:
        raise ApiError(400, "messages: at least one message is required")
    if body["model"] not in cfg.models:
        raise ApiError(404, f"model: {body['model']}")
    return body


def _prompt_text(body: dict[str, Any]) -> str:
    """System + message text; tokens are ~4 chars each, as in the OpenAI stand-in."""
    return text_of(body.get("system")) + "".join(
        text_of(m.get("content")) for m in body["messages"] if isinstance(m, dict)
    )


def _pick_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and "input_schema" in t and "name" in t]
    choice = body.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not tools or kind == "none":
        return None
    if kind == "tool":
        for tool in tools:
            if tool["name"] == choice.get("name"):
                return tool
        raise ApiError(400, f"tool_choice: tool '{choice.get('name')}' not found in tools")
    if kind == "any":
        return tools[0]
    last = body["messages"][-1]
    if isinstance(last, dict) and last.get("role") == "user":
        if "use tool" in _plain_text(last.get("content")).lower():
            return tools[0]
    return None


def _plain_text(content: Any) -> str:
    """Only text blocks: a tool_result echoing "use tool" must not loop the agent."""
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


async def _messages(request: web.Request) -> web.StreamResponse:
    cfg = request.app[_CONFIG]
    body = await _body(request, cfg)
    limit = body.get("max_tokens")
    if limit is None:
        raise ApiError(400, "max_tokens: Field required")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ApiError(400, "max_tokens: Input should be greater than or equal to 1")
    stops = [s for s in body.get("stop_sequences") or [] if isinstance(s, str)]
    prompt_text = _prompt_text(body)
    input_tokens = approx_tokens(prompt_text)
    tool = _pick_tool(body)
    stop_sequence = None
    if tool is not None:
        args = tool_arguments(tool.get("input_schema"))
        block: dict[str, Any] = {"type": "tool_use", "id": new_id("toolu_01", 22), "name": tool["name"], "input": args}
        output_tokens = approx_tokens(tool["name"] + orjson.dumps(args).decode())
        stop_reason = "tool_use"
    else:
        reply = scripted_reply(cfg.name, prompt_text, max_tokens=limit, stop=stops)
        block = {"type": "text", "text": reply.text}
        output_tokens = max(1, reply.tokens)
        stop_sequence = reply.stop_sequence
        stop_reason = "max_tokens" if reply.truncated else "stop_sequence" if stop_sequence else "end_turn"
    message = {
        "id": new_id("msg_01", 22),
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [block],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": _usage(input_tokens, output_tokens),
    }
    if not body.get("stream"):
        return json_response(message)

    out = EventStream(request, cfg.chunk_delay_s)
    await out.open()

    async def event(kind: str, data: dict[str, Any], *, final: bool = False) -> None:
        payload = orjson.dumps({"type": kind, **data})
        await out.send(b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n", final=final)

    await event(
        "message_start",
        {
            "message": {
                **message,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": _usage(input_tokens, 1),
            }
        },
    )
    if tool is not None:
        await event("content_block_start", {"index": 0, "content_block": {**block, "input": {}}})
        await event("ping", {})
        for frag in split_text(orjson.dumps(block["input"]).decode(), 4):
            await event(
                "content_block_delta", {"index": 0, "delta": {"type": "input_json_delta", "partial_json": frag}}
            )
    else:
        await event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        await event("ping", {})
        for piece in split_text(block["text"], cfg.stream_chunks) if block["text"] else []:
            await event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
    await event("content_block_stop", {"index": 0})
    await event(
        "message_delta",
        {
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": {"output_tokens": output_tokens},
        },
    )
    await event("message_stop", {}, final=True)
    return await out.close()


async def _count_tokens(request: web.Request) -> web.Response:
    body = await _body(request, request.app[_CONFIG])
    return json_response({"input_tokens": approx_tokens(_prompt_text(body))})


def _model_obj(model: str) -> dict[str, Any]:
    return {"type": "model", "id": model, "display_name": model, "created_at": "2025-01-01T00:00:00Z"}


async def _list_models(request: web.Request) -> web.Response:
    cfg = request.app[_CONFIG]
    _authorize(request, cfg)
    data = [_model_obj(m) for m in cfg.models]
    return json_response(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


async def _get_model(request: web.Request) -> web.Response:
    cfg = request.app[_CONFIG]
    _authorize(request, cfg)
    model = request.match_info["model"]
    if model not in cfg.models:
        raise ApiError(404, f"model: {model}")
    return json_response(_model_obj(model))
