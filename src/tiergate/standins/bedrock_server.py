"""AWS Bedrock Runtime stand-in: the Converse API, with the SigV4 check Bedrock makes.

Every call's signature is recomputed with botocore from what arrived (the
signed headers, the raw path, the body) and the stand-in's own secret, as
AWS does: a missing signature, an unknown access key or session token, a
credential scoped to another region or service, a date more than five
minutes off, or any byte signed differently is a 403 in Bedrock's shape
(``{"message"}`` and ``x-amzn-ErrorType``). A Bedrock API key
(``Authorization: Bearer``) is accepted when one is configured. Converse's
own rules are checked too: a known model id, messages that start with the
user and alternate, tool results that answer a tool use, ``maxTokens`` >= 1.
``/converse-stream`` answers in AWS event-stream frames (CRC-checked,
each event padded with a ``p`` field as Bedrock pads them).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import re
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .fake_model import approx_tokens, scripted_reply, text_of, tool_arguments
from .faults import ApiError, install_control, new_id, parse_json

ERROR_NAMESPACE = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, ?"
    r"SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$"
)
MAX_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class _Bedrock:
    name: str
    models: tuple[str, ...]
    region: str
    access_key: str
    secret_key: str
    session_token: str | None
    api_key: str | None
    stream_chunks: int
    chunk_delay_s: float


_CFG = web.AppKey("tiergate_bedrock_standin", _Bedrock)


def bedrock_error(status: int, message: str, *, code: str | None = None, param: str | None = None) -> web.Response:
    """Bedrock's error: ``{"message"}`` with the exception's name in ``x-amzn-ErrorType``."""
    kind = code or {400: "ValidationException", 403: "AccessDeniedException", 429: "ThrottlingException"}.get(
        status, "InternalServerException" if status >= 500 else "ValidationException"
    )
    resp = web.Response(body=orjson.dumps({"message": message}), status=status, content_type="application/json")
    resp.headers["x-amzn-ErrorType"] = kind + ERROR_NAMESPACE
    return resp


def build_bedrock_standin(
    *,
    name: str,
    models: list[str],
    region: str = "us-east-1",
    access_key: str = "AKIDSTANDIN",
    secret_key: str = "standin-secret",
    session_token: str | None = None,
    api_key: str | None = None,
    stream_chunks: int = 20,
    chunk_delay_s: float = 0.0,
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[_CFG] = _Bedrock(
        name,
        tuple(models),
        region,
        access_key,
        secret_key,
        session_token,
        api_key,
        max(1, stream_chunks),
        chunk_delay_s,
    )
    paths = [f"/model/{m}/{op}" for m in models for op in ("converse", "converse-stream")]
    install_control(app, model_paths=paths, error_response=bedrock_error)
    app.router.add_post("/model/{model}/converse", _converse)
    app.router.add_post("/model/{model}/converse-stream", _converse_stream)
    return app


def _verify(request: web.Request, body: bytes, cfg: _Bedrock) -> None:
    """The request is signed by the stand-in's credentials, or carries its API key; else Bedrock's 403."""
    auth = request.headers.get("Authorization", "")
    if cfg.api_key is not None and auth == f"Bearer {cfg.api_key}":
        return
    if not auth:
        raise ApiError(403, "Missing Authentication Token", code="MissingAuthenticationTokenException")
    m = AUTH.match(auth)
    if m is None:
        raise ApiError(
            403,
            "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders'.",
            code="IncompleteSignatureException",
        )
    akid, day, region, service, signed, signature = m.groups()
    token = request.headers.get("X-Amz-Security-Token")
    if akid != cfg.access_key or token != cfg.session_token:
        raise ApiError(
            403, "The security token included in the request is invalid.", code="UnrecognizedClientException"
        )
    if region != cfg.region:
        raise ApiError(
            403, f"Credential should be scoped to a valid region, not '{region}'.", code="InvalidSignatureException"
        )
    if service != "bedrock":
        raise ApiError(
            403, "Credential should be scoped to correct service: 'bedrock'.", code="InvalidSignatureException"
        )
    stamp = request.headers.get("X-Amz-Date", "")
    try:
        when = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise ApiError(
            403,
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            code="IncompleteSignatureException",
        ) from None
    now = dt.datetime.now(dt.UTC)
    if abs(now - when) > MAX_SKEW or not stamp.startswith(day):
        raise ApiError(
            403,
            f"Signature expired: {stamp} is now earlier than {(now - MAX_SKEW):%Y%m%dT%H%M%SZ}",
            code="InvalidSignatureException",
        )
    if hmac.compare_digest(_signature(request, body, cfg, signed.split(";"), stamp), signature):
        return
    raise ApiError(
        403,
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
        "Access Key and signing method. Consult the service documentation for details.",
        code="InvalidSignatureException",
    )


def _signature(request: web.Request, body: bytes, cfg: _Bedrock, signed: list[str], stamp: str) -> str:
    """SigV4 over what arrived, by botocore, with the stand-in's secret."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {h: request.headers.get(h, "") for h in signed}
    req = AWSRequest(method=request.method, url=f"http://{request.host}{request.raw_path}", data=body, headers=headers)
    req.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(cfg.access_key, cfg.secret_key, cfg.session_token), "bedrock", cfg.region)
    canonical = signer.canonical_request(req)
    return str(signer.signature(signer.string_to_sign(req, canonical), req))


def _validated(request: web.Request, body: Any, cfg: _Bedrock) -> dict[str, Any]:
    model = request.match_info["model"]
    if model not in cfg.models:
        raise ApiError(400, "The provided model identifier is invalid.")
    if not isinstance(body, dict):
        raise ApiError(400, "Malformed input request, please reformat your input and try again.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "The model returned the following errors: messages: at least one message is required")
    uses: set[str] = set()
    for i, msg in enumerate(messages):
        role = msg.get("role") if isinstance(msg, dict) else None
        if role != ("user" if i % 2 == 0 else "assistant"):
            raise ApiError(
                400,
                "A conversation must start with a user message and alternate between user and assistant roles. "
                f"Try again with a conversation that starts with a user message. (messages.{i})",
            )
        content = msg.get("content")
        if not isinstance(content, list) or not content:
            raise ApiError(400, f"The content field in the Message object at messages.{i} is empty.")
        for block in content:
            use, result = block.get("toolUse"), block.get("toolResult")
            if isinstance(use, dict):
                uses.add(str(use.get("toolUseId")))
            if isinstance(result, dict) and str(result.get("toolUseId")) not in uses:
                raise ApiError(400, f"messages.{i}: a toolResult's toolUseId matches no toolUse in an earlier turn.")
    limit = (body.get("inferenceConfig") or {}).get("maxTokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ApiError(
            400,
            "1 validation error detected: Value at 'inferenceConfig.maxTokens' failed to satisfy constraint: "
            "Member must have value greater than or equal to 1",
        )
    return body


def _answer(cfg: _Bedrock, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, int, int]:
    """(content blocks, stopReason, input tokens, output tokens) of the fake model's answer."""
    prompt = "".join(text_of(b) for m in body["messages"] for b in m["content"])
    prompt += "".join(text_of(s) for s in body.get("system") or [])
    tools = [
        t["toolSpec"]
        for t in (body.get("toolConfig") or {}).get("tools", [])
        if isinstance(t, dict) and "toolSpec" in t
    ]
    choice = (body.get("toolConfig") or {}).get("toolChoice") or {}
    last = body["messages"][-1]["content"]
    wants = "use tool" in "".join(text_of(b) for b in last if "text" in b).lower()
    if tools and (wants or "any" in choice or "tool" in choice):
        spec = next((t for t in tools if t.get("name") == (choice.get("tool") or {}).get("name")), tools[0])
        args = tool_arguments((spec.get("inputSchema") or {}).get("json"))
        block = {"toolUse": {"toolUseId": new_id("tooluse_", 22), "name": spec.get("name"), "input": args}}
        return [block], "tool_use", approx_tokens(prompt), approx_tokens(orjson.dumps(args).decode())
    config = body.get("inferenceConfig") or {}
    reply = scripted_reply(cfg.name, prompt, max_tokens=config.get("maxTokens"), stop=config.get("stopSequences") or ())
    reason = "max_tokens" if reply.truncated else ("stop_sequence" if reply.stop_sequence else "end_turn")
    return [{"text": reply.text}], reason, approx_tokens(prompt), reply.tokens


async def _parsed(request: web.Request) -> tuple[_Bedrock, dict[str, Any]]:
    cfg = request.app[_CFG]
    raw = await request.read()
    _verify(request, raw, cfg)
    return cfg, _validated(request, parse_json(raw), cfg)


def _usage(inp: int, out: int) -> dict[str, int]:
    return {"inputTokens": inp, "outputTokens": out, "totalTokens": inp + out}


async def _converse(request: web.Request) -> web.Response:
    cfg, body = await _parsed(request)
    content, reason, inp, out = _answer(cfg, body)
    reply = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": reason,
        "usage": _usage(inp, out),
        "metrics": {"latencyMs": 42},
    }
    resp = web.Response(body=orjson.dumps(reply), content_type="application/json")
    resp.headers["x-amzn-RequestId"] = new_id("", 36)
    return resp


def frame(event: str, payload: dict[str, Any], *, message_type: str = "event") -> bytes:
    """One AWS event-stream message: prelude (lengths, CRC), string headers, JSON payload, message CRC."""
    kind = ":exception-type" if message_type == "exception" else ":event-type"
    headers = {kind: event, ":content-type": "application/json", ":message-type": message_type}
    hb = b"".join(
        len(k).to_bytes(1, "big") + k.encode() + b"\x07" + len(v.encode()).to_bytes(2, "big") + v.encode()
        for k, v in headers.items()
    )
    data = orjson.dumps(payload)
    prelude = (16 + len(hb) + len(data)).to_bytes(4, "big") + len(hb).to_bytes(4, "big")
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    message = prelude + hb + data
    return message + zlib.crc32(message).to_bytes(4, "big")


def _padded(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"[: 1 + len(str(payload)) % 40]}


async def _converse_stream(request: web.Request) -> web.StreamResponse:
    cfg, body = await _parsed(request)
    content, reason, inp, out = _answer(cfg, body)
    resp = web.StreamResponse(
        headers={"Content-Type": "application/vnd.amazon.eventstream", "x-amzn-RequestId": new_id("", 36)}
    )
    await resp.prepare(request)

    async def send(event: str, payload: dict[str, Any]) -> None:
        await resp.write(frame(event, _padded(payload)))
        if cfg.chunk_delay_s:
            await asyncio.sleep(cfg.chunk_delay_s)

    await send("messageStart", {"role": "assistant"})
    block = content[0]
    if "toolUse" in block:
        use = block["toolUse"]
        await send(
            "contentBlockStart",
            {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}},
        )
        raw = orjson.dumps(use["input"]).decode()
        for i in range(0, len(raw), 8):
            await send("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": raw[i : i + 8]}}})
    else:
        words = block["text"].split(" ")
        step = max(1, len(words) // cfg.stream_chunks)
        for i in range(0, len(words), step):
            piece = " ".join(words[i : i + step]) + (" " if i + step < len(words) else "")
            await send("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
    await send("contentBlockStop", {"contentBlockIndex": 0})
    await send("messageStop", {"stopReason": reason})
    await send("metadata", {"usage": _usage(inp, out), "metrics": {"latencyMs": 42}})
    await resp.write_eof()
    return resp
