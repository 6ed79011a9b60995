"""The ``bedrock-converse`` protocol: AWS Bedrock's Converse API, for OpenAI chat clients (and, through the
existing bridges, Anthropic, Responses, Ollama and Gemini ones).

``POST {base}/model/{modelId}/converse`` and ``/converse-stream``, signed with
SigV4 by botocore (service ``bedrock``; a session token when the credentials
have one), or with a Bedrock API key as ``Authorization: Bearer``. The body
and reply are translated by ``translate_bedrock``; a stream is AWS event-stream
frames (length-prefixed, CRC-checked: botocore's decoder), each bounded by the
provider's ``max_event_kb``, turned into OpenAI chunks and metered as an
OpenAI stream. An ``exception`` frame before the first event is a failed
attempt (fail over); after it, the stream ends with its error.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import orjson

from tiergate.adapters.base import UpstreamReply, UpstreamStream, error_from_response, post_for_body
from tiergate.adapters.openai_chat import _OpenAIStream
from tiergate.adapters.translate_bedrock import StreamTranslator, chat_completion, converse_request
from tiergate.adapters.transport import UpstreamReplyStream, UpstreamTransport
from tiergate.adapters.upstream_http import USER_AGENT
from tiergate.adapters.usage import billed, bound_of, doubt_note, openai_reported, stream_meter
from tiergate.core.catalog import Deployment
from tiergate.core.errors import AttemptError, TranslationError
from tiergate.core.types import NO_HINTS, ClientHints, StreamStatus

API = "bedrock-converse"
EVENTSTREAM = "application/vnd.amazon.eventstream"
PRELUDE = 12  # total length, headers length, prelude CRC
UNKNOWN_MODEL = "The provided model identifier is invalid"
# a stream's exception frames, as the HTTP status the same error has on the plain API
EXCEPTION_STATUS = {
    "throttlingException": 429,
    "serviceUnavailableException": 503,
    "internalServerException": 500,
    "modelTimeoutException": 504,
    "validationException": 400,
    "modelStreamErrorException": 502,
}


def signed_headers(d: Deployment, url: str, data: bytes, accept: str) -> dict[str, str]:
    """The request's headers, signed: a Bedrock API key as Bearer, else SigV4 over the URL, headers and body."""
    headers = {"Content-Type": "application/json", "Accept": accept, "User-Agent": USER_AGENT, **d.headers}
    if d.api_key:
        return {**headers, "Authorization": f"Bearer {d.api_key}"}
    if d.aws is None:
        return headers
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method="POST", url=url, data=data, headers=headers)
    creds = Credentials(d.aws.access_key, d.aws.secret_key, d.aws.session_token)
    SigV4Auth(creds, "bedrock", d.aws.region).add_auth(req)
    return dict(req.headers.items())


def _url(d: Deployment, op: str) -> str:
    return f"{d.base_url}/model/{quote(d.model, safe='')}/{op}"


def _bedrock_message(err: AttemptError) -> AttemptError:
    """Bedrock's ``{"message": ...}`` (with ``x-amzn-ErrorType``) as the attempt's message."""
    try:
        obj = orjson.loads(err.body or b"")
    except orjson.JSONDecodeError:
        return err
    message = obj.get("message") or obj.get("Message") if isinstance(obj, dict) else None
    if isinstance(message, str):
        err.message = message[:300]
        if message.startswith(UNKNOWN_MODEL):  # a 400 there, but it means "not served here": the next candidate
            err.status = 404
    return err


def _translated(body: dict[str, Any], d: Deployment, output_cap: int | None) -> tuple[dict[str, Any], list[str]]:
    try:
        return converse_request(body, max_tokens_limit=d.max_output_tokens, output_cap=output_cap)
    except ValueError as exc:
        raise TranslationError(f"cannot be sent to Bedrock: {exc}") from None


def _notes(dropped: list[str]) -> list[str]:
    return [f"not sent to {API}: {', '.join(sorted(set(dropped)))}"] if dropped else []


class BedrockConverseAdapter:
    api = API

    def __init__(self, client: UpstreamTransport) -> None:
        self._client = client

    async def complete(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamReply:
        payload, dropped = _translated(body, d, output_cap)
        data, url, t0 = orjson.dumps(payload), _url(d, "converse"), time.perf_counter()
        try:
            raw, _ = await post_for_body(
                self._client,
                url,
                data,
                signed_headers(d, url, data, "application/json"),
                timeout_s=timeout_s,
                max_bytes=d.limits.max_response_bytes,
            )
        except AttemptError as err:
            raise _bedrock_message(err) from None
        upstream_ms = (time.perf_counter() - t0) * 1000
        try:
            chat = chat_completion(
                orjson.loads(raw), model=d.model, ident=f"chatcmpl-{uuid.uuid4().hex[:24]}", created=int(time.time())
            )
        except (orjson.JSONDecodeError, ValueError):
            raise AttemptError("protocol", "upstream sent a body that is not a Converse reply") from None
        reported = openai_reported(chat["usage"], bound_of(d))
        usage = billed(reported, sent_bytes=len(data))
        notes = _notes(dropped) + doubt_note(reported, chat["usage"])
        return UpstreamReply(200, orjson.dumps(chat), "application/json", usage, upstream_ms, notes=notes)

    async def stream(
        self,
        d: Deployment,
        body: dict[str, Any],
        *,
        timeout_s: float,
        hints: ClientHints = NO_HINTS,
        output_cap: int | None = None,
    ) -> UpstreamStream:
        payload, dropped = _translated(body, d, output_cap)
        data, url, t0 = orjson.dumps(payload), _url(d, "converse-stream"), time.perf_counter()
        resp = await self._client.post(url, data, signed_headers(d, url, data, EVENTSTREAM), timeout_s=timeout_s)
        translator = StreamTranslator(
            model=d.model, ident=f"chatcmpl-{uuid.uuid4().hex[:24]}", created=int(time.time())
        )
        events = _openai_events(resp, translator, d.limits.max_event_bytes)
        try:
            if resp.status >= 400:
                raise _bedrock_message(await error_from_response(resp))
            ctype = resp.headers.get("content-type", "")
            if not ctype.startswith(EVENTSTREAM):
                raise AttemptError("protocol", f"upstream answered a stream request with {ctype[:60] or 'no type'}")
            first = await events.__anext__()
        except BaseException as exc:
            resp.close()
            if isinstance(exc, StopAsyncIteration):
                raise AttemptError("dropped", "upstream closed the stream before the first event") from None
            raise
        resp.idle_timeout(d.limits.stream_idle_timeout_s or timeout_s, total_s=d.limits.stream_timeout_s)
        opts = body.get("stream_options")
        injected = not (isinstance(opts, dict) and opts.get("include_usage"))
        meter, status = stream_meter(len(data), d), StreamStatus()
        relay = _OpenAIStream(events, meter, status, injected=injected, resp=resp)
        return UpstreamStream(
            first_event=relay.inspect(first) or b"",
            rest=relay.rest(),
            usage=meter.usage,
            content_type="text/event-stream",
            upstream_ms_to_first=(time.perf_counter() - t0) * 1000,
            close=resp.close,
            status=status,
            notes=_notes(dropped),
        )


def split_frames(pending: bytes, max_frame: int) -> tuple[list[bytes], bytes]:
    """(whole event-stream frames, what is left): a frame's length is its first four bytes; one longer than
    ``max_frame`` is refused before it is read."""
    frames = []
    while len(pending) >= PRELUDE:
        total = int.from_bytes(pending[:4], "big")
        if total < PRELUDE + 4 or total > max_frame:
            raise AttemptError("protocol", f"upstream sent an event-stream frame of {total} bytes (max_event_kb)")
        if len(pending) < total:
            break
        frames.append(pending[:total])
        pending = pending[total:]
    return frames, pending


def _decoded(frame: bytes) -> tuple[Mapping[str, Any], Any]:
    """(headers, JSON payload) of one whole frame, its CRCs checked by botocore."""
    from botocore.eventstream import EventStreamBuffer
    from botocore.exceptions import EventStreamError

    buf = EventStreamBuffer()
    buf.add_data(frame)
    try:
        (message,) = list(buf)
    except (EventStreamError, ValueError) as exc:
        raise AttemptError("protocol", f"upstream sent a broken event-stream frame: {type(exc).__name__}") from None
    try:
        payload = orjson.loads(message.payload) if message.payload else {}
    except orjson.JSONDecodeError:
        raise AttemptError("protocol", "an event-stream frame's payload is not JSON") from None
    return message.headers, payload


async def _openai_events(
    resp: UpstreamReplyStream, translator: StreamTranslator, max_frame: int
) -> AsyncIterator[bytes]:
    pending = b""
    async for chunk in resp.chunks():
        frames, pending = split_frames(pending + chunk, max_frame)
        for frame in frames:
            headers, payload = _decoded(frame)
            kind = str(headers.get(":event-type") or headers.get(":exception-type") or "")
            if headers.get(":message-type") != "event":
                message = payload.get("message") if isinstance(payload, dict) else None
                status = EXCEPTION_STATUS.get(kind, 502)
                raise AttemptError("status", f"{kind}: {message or 'error'}"[:300], status=status)
            for ev in translator.event(kind, payload if isinstance(payload, dict) else {}):
                yield ev
    if pending:
        raise AttemptError("dropped", "upstream ended the stream inside an event-stream frame")
