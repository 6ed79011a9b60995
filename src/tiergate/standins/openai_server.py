"""OpenAI-compatible stand-in: chat completions, embeddings, models and Responses (``responses_server``).

Speaks the wire format closely enough for the official ``openai`` SDK, so a
gateway can be tested against it as if it were the cloud. Replies are the
deterministic fake model from :mod:`.faults`; ``/_control`` injects faults.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .capability import Capability, Profile, failure, task_tag
from .capability import answer_text as tagged_text
from .fake_model import approx_tokens, schema_instance, scripted_reply, split_text, text_of, tool_arguments
from .faults import CONTROL, ApiError, EventStream, install_control, json_response, new_id, parse_json
from .responses_server import responses

EMBED_DIMS = 8


@dataclass(frozen=True)
class _Config:
    name: str
    models: tuple[str, ...]
    api_key: str | None
    stream_chunks: int
    chunk_delay_s: float


_CONFIG = web.AppKey("tiergate_openai_standin", _Config)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
}
_ERROR_CODES = {429: "rate_limit_exceeded"}


def openai_error(status: int, message: str, *, code: str | None = None, param: str | None = None) -> web.Response:
    """An error in OpenAI's ``{"error": {message, type, param, code}}`` envelope."""
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return json_response(
        {"error": {"message": message, "type": kind, "param": param, "code": code or _ERROR_CODES.get(status)}}, status
    )


def build_openai_standin(
    *, name: str, models: list[str], api_key: str | None = None, stream_chunks: int = 20, chunk_delay_s: float = 0.0
) -> web.Application:
    """A fresh app; each one has its own fault queue and recordings."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[_CONFIG] = _Config(name, tuple(models), api_key, max(1, stream_chunks), chunk_delay_s)
    install_control(
        app, model_paths=("/v1/chat/completions", "/v1/embeddings", "/v1/responses"), error_response=openai_error
    )
    app.on_response_prepare.append(_add_request_id)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_post("/v1/responses", _responses)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{model:.+}", _get_model)
    return app


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("x-request-id", new_id("req_", 32))
    # the real API sits behind a CDN that sets a bot-management cookie on every answer: a gateway must not
    # hand one caller's cookie to the next caller's request
    response.headers.setdefault("set-cookie", f"__cf_bm={new_id('', 24)}; path=/; HttpOnly; SameSite=None")


def _authorize(request: web.Request, cfg: _Config) -> None:
    if cfg.api_key is None:
        return
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if token == cfg.api_key:
        return
    if not token:
        msg = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    else:
        shown = token[:3] + "*" * 4 + token[-4:] if len(token) > 8 else "*" * len(token)
        msg = f"Incorrect API key provided: {shown}."
    raise ApiError(401, msg, code="invalid_api_key")


async def _body(request: web.Request, cfg: _Config) -> dict[str, Any]:
    """Auth, then the JSON object body with a known ``model``."""
    _authorize(request, cfg)
    body = parse_json(await request.read())
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This "
            "likely means you aren't using your HTTP library correctly.)",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    if model not in cfg.models:
        raise ApiError(
            404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
        )
    return body


def _pick_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function to call, or None for a text answer (see module rules)."""
    tools: list[dict[str, Any]] = [
        t["function"]
        for t in body.get("tools") or []
        if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
    ]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        for fn in tools:
            if fn.get("name") == wanted:
                return fn
        raise ApiError(
            400, f"Invalid value for 'tool_choice': function '{wanted}' not found in 'tools'.", param="tool_choice"
        )
    if choice == "required":
        return tools[0]
    last = (body.get("messages") or [{}])[-1]
    if isinstance(last, dict) and last.get("role") == "user" and "use tool" in text_of(last.get("content")).lower():
        return tools[0]
    return None


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def structured(body: dict[str, Any], text: str) -> str:
    """The answer as OpenAI's structured outputs give it: JSON fitting ``response_format``'s schema, a
    JSON object for json_object, else the text itself."""
    rf = body.get("response_format")
    rf = rf if isinstance(rf, dict) else {}
    kind = rf.get("type")
    if kind == "json_schema":
        js = rf["json_schema"] if isinstance(rf.get("json_schema"), dict) else {}
        return orjson.dumps(schema_instance(js.get("schema", {}), text)).decode()
    if kind == "json_object":
        return orjson.dumps({"answer": text}).decode()
    return text


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    cfg = request.app[_CONFIG]
    return await chat_reply(request, cfg, await _body(request, cfg))


# Azure OpenAI's content-filter verdicts, on every prompt and choice it returns
FILTERED = {k: {"filtered": False, "severity": "safe"} for k in ("hate", "self_harm", "sexual", "violence")}


async def chat_reply(
    request: web.Request, cfg: _Config, body: dict[str, Any], *, azure: bool = False
) -> web.StreamResponse:
    """The fake model's chat completion for an authorised ``body``; ``azure`` adds Azure's content-filter
    fields and its stream's opening chunk (no choices, empty id, the prompt's filter results)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    limit = body.get("max_completion_tokens")
    limit = body.get("max_tokens") if limit is None else limit
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ApiError(
            400,
            "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1.",
            param="max_tokens",
            code="integer_below_min_value",
        )
    stream = bool(body.get("stream"))
    if body.get("stream_options") is not None and not stream:
        raise ApiError(
            400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)]
    prompt_text = "".join(text_of(m.get("content")) for m in messages if isinstance(m, dict))
    prompt_tokens = approx_tokens(prompt_text)
    fn = _pick_tool(body)

    if fn is not None:
        name = fn.get("name")
        arguments = orjson.dumps(tool_arguments(fn.get("parameters"))).decode()
        call = {"id": new_id("call_"), "type": "function", "function": {"name": name, "arguments": arguments}}
        # a function without a string name still gets its call (adding None to a str was a 500)
        completion = approx_tokens((name if isinstance(name, str) else "") + arguments)
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        reply = scripted_reply(cfg.name, prompt_text, max_tokens=limit, stop=stop)
        completion = reply.tokens
        message = {"role": "assistant", "content": structured(body, reply.text)}
        finish = "length" if reply.truncated else "stop"
    cap = request.app[CONTROL].capability
    profile = cap.for_model(body["model"]) if cap is not None else None
    if cap is not None and profile is not None:
        message, finish, completion = _simulated(
            cfg.name, cap, profile, body, prompt_text, limit, fn, (message, finish, completion)
        )
        await asyncio.sleep(profile.delay_s(completion))
    message.update(refusal=None, annotations=[])
    ident, created = new_id("chatcmpl-", 29), int(time.time())

    def envelope(kind: str) -> dict[str, Any]:
        return {
            "id": ident,
            "object": kind,
            "created": created,
            "model": body["model"],
            "service_tier": "default",
            "system_fingerprint": "fp_standin",
        }

    usage = _usage(prompt_tokens, completion)
    prompt_filter = [{"prompt_index": 0, "content_filter_results": FILTERED}]
    if not stream:
        choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        obj = {**envelope("chat.completion"), "choices": [choice], "usage": usage}
        if azure:
            choice["content_filter_results"] = FILTERED
            obj["prompt_filter_results"] = prompt_filter
        return json_response(obj)

    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    out = EventStream(request, cfg.chunk_delay_s)
    await out.open()
    if azure:
        opening = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": prompt_filter,
        }
        await out.send(b"data: " + orjson.dumps(opening) + b"\n\n")

    async def chunk(delta: dict[str, Any] | None, reason: str | None = None, **extra: Any) -> None:
        obj = {
            **envelope("chat.completion.chunk"),
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
        }
        if include_usage:
            obj["usage"] = None
        obj.update(extra)
        await out.send(b"data: " + orjson.dumps(obj) + b"\n\n")

    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        fn_call = call["function"]
        await chunk(
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": fn_call["name"], "arguments": ""},
                    }
                ],
            }
        )
        for frag in split_text(fn_call["arguments"], 4):
            await chunk({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]})
    else:
        await chunk({"role": "assistant", "content": "", "refusal": None})
        if message.get("reasoning_content"):  # a simulated reasoning model's thinking (see .capability)
            for piece in split_text(message["reasoning_content"], cfg.stream_chunks):
                await chunk({"reasoning_content": piece})
        if message["content"]:
            for piece in split_text(message["content"], cfg.stream_chunks):
                await chunk({"content": piece})
    await chunk({}, finish)
    if include_usage:
        await chunk(None, usage=usage)
    await out.send(b"data: [DONE]\n\n", final=True)
    return await out.close()


def _simulated(
    name: str,
    cap: Capability,
    profile: Profile,
    body: dict[str, Any],
    prompt: str,
    limit: int | None,
    fn: dict[str, Any] | None,
    usual: tuple[dict[str, Any], str, int],
) -> tuple[dict[str, Any], str, int]:
    """The answer under a simulated capability (see .capability): (message, finish_reason, completion
    tokens). An untagged request that is not starved keeps the fake model's ``usual`` answer."""
    tag = task_tag(prompt)
    starved = limit is not None and limit < profile.starve_below
    if tag is None and not starved:
        return usual
    message = usual[0]
    size = tag.answer_tokens if tag is not None else max(1, min(limit or 1, 64))
    task = tag.task if tag is not None else prompt
    rf = body.get("response_format")
    kind = rf.get("type") if isinstance(rf, dict) else None
    if starved:
        how: str | None = "reasoning_starved"
    else:
        assert tag is not None
        how = failure(
            cap, body["model"], tag, wants_json=kind in ("json_object", "json_schema"), calls_tool=fn is not None
        )
    if how == "json_schema" and kind != "json_schema":
        how = "invalid_json"  # no schema to miss: the JSON is broken instead
    n = size if limit is None else min(limit, size)
    text = tagged_text(name, task, n)
    if how == "empty":
        return {"role": "assistant", "content": ""}, "stop", 1
    if how == "reasoning_starved":  # the whole allowance spent thinking
        spent = limit if limit is not None else 2 * size
        return (
            {"role": "assistant", "content": None, "reasoning_content": tagged_text(name, task, spent)},
            "length",
            spent,
        )
    if fn is not None:
        call = message["tool_calls"][0]
        arguments = orjson.dumps(schema_instance(fn.get("parameters") or {}, "Paris")).decode()
        if how == "tool_arguments":
            arguments = arguments[: len(arguments) // 2]  # cut off mid-object
        elif how == "tool_schema":
            arguments = "{}"  # parses, but leaves out every required argument
        call["function"]["arguments"] = arguments
        return message, "tool_calls", n
    content = structured(body, text)
    if how == "invalid_json":
        return {"role": "assistant", "content": content[: len(content) // 2]}, "stop", max(1, n // 2)
    if how == "json_schema":
        return {"role": "assistant", "content": orjson.dumps({"note": text}).decode()}, "stop", n
    truncated = limit is not None and limit < size
    return {"role": "assistant", "content": content}, "length" if truncated else "stop", n


async def _responses(request: web.Request) -> web.StreamResponse:
    cfg = request.app[_CONFIG]
    body = await _body(request, cfg)
    return await responses(request, body, name=cfg.name, stream_chunks=cfg.stream_chunks, delay_s=cfg.chunk_delay_s)


def _vector(model: str, text: str, dims: int) -> list[float]:
    """Unit-length vector from a hash of (model, text): stable across runs."""
    raw = b""
    counter = 0
    while len(raw) < dims * 4:
        raw += hashlib.sha256(f"{model}\0{counter}\0{text}".encode()).digest()
        counter += 1
    ints = struct.unpack(f">{dims}I", raw[: dims * 4])
    vec = [i / 2**31 - 1.0 for i in ints]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in vec]


async def _embeddings(request: web.Request) -> web.Response:
    cfg = request.app[_CONFIG]
    return embeddings_reply(await _body(request, cfg))


def embeddings_reply(body: dict[str, Any]) -> web.Response:
    """Deterministic vectors for an authorised embeddings ``body``."""
    raw_input = body.get("input")
    items = raw_input if isinstance(raw_input, list) else [raw_input]
    if not items or any(i is None or i == "" for i in items):
        raise ApiError(400, "'input' must be a non-empty string or array.", param="input")
    if all(isinstance(i, int) for i in items):
        items = [items]  # one pre-tokenised input
    texts = [i if isinstance(i, str) else orjson.dumps(i).decode() for i in items]
    dims = body.get("dimensions") or EMBED_DIMS
    if not isinstance(dims, int) or dims < 1:
        raise ApiError(400, "Invalid 'dimensions': expected an integer >= 1.", param="dimensions")
    b64 = body.get("encoding_format") == "base64"
    data = []
    for idx, text in enumerate(texts):
        vec = _vector(body["model"], text, dims)
        emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if b64 else vec
        data.append({"object": "embedding", "index": idx, "embedding": emb})
    tokens = sum(approx_tokens(t) for t in texts)
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _model_obj(cfg: _Config, model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 1700000000, "owned_by": cfg.name}


async def _list_models(request: web.Request) -> web.Response:
    cfg = request.app[_CONFIG]
    _authorize(request, cfg)
    return json_response({"object": "list", "data": [_model_obj(cfg, m) for m in cfg.models]})


async def _get_model(request: web.Request) -> web.Response:
    cfg = request.app[_CONFIG]
    _authorize(request, cfg)
    model = request.match_info["model"]
    if model not in cfg.models:
        raise ApiError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
    return json_response(_model_obj(cfg, model))
