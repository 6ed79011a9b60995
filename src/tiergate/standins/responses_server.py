"""The OpenAI stand-in's ``POST /v1/responses``: OpenAI's Responses API, as the official SDK reads it.

Written from OpenAI's API reference, independently of the gateway's own
translators (a test oracle must not share the code it checks). The fake
model is the one the chat endpoint uses: the same words for the same
prompt, a function call when ``tool_choice`` asks for one or the last user
text says "use tool". Reasoning models (``o*``, ``gpt-5*``, or a request
with ``reasoning``) also answer with a reasoning item; with ``include:
["reasoning.encrypted_content"]`` it carries an opaque ``encrypted_content``
that the stand-in checks when the item comes back in a later input, as the
real API refuses reasoning it did not make. ``previous_response_id`` is
refused: this stand-in stores nothing, so a gateway must send the whole
conversation itself.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

import orjson
from aiohttp import web

from .fake_model import approx_tokens, scripted_reply, split_text, text_of, tool_arguments
from .faults import ApiError, EventStream, json_response, new_id

REASONING_MODELS = re.compile(r"^(o\d|gpt-5)")
SUMMARY = "Thinking about the question."


def _seal(item_id: str) -> str:
    return "enc_" + hashlib.sha256(b"standin:" + item_id.encode()).hexdigest()[:32]


def _input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    return [i if isinstance(i, dict) else {} for i in raw]


def _check_reasoning(items: list[dict[str, Any]]) -> None:
    for i, item in enumerate(items):
        if item.get("type") == "reasoning" and item.get("encrypted_content") is not None:
            if item.get("encrypted_content") != _seal(str(item.get("id"))):
                raise ApiError(
                    400,
                    f"The encrypted content for item {item.get('id')} could not be verified.",
                    param=f"input[{i}]",
                    code="invalid_encrypted_content",
                )


def _last_user_text(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        if item.get("role") == "user":
            return text_of(item.get("content"))
        if item.get("type") in ("function_call_output", "function_call"):
            return ""
    return ""


def _pick_tool(body: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any] | None:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        for t in tools:
            if t.get("name") == choice.get("name"):
                return t
        raise ApiError(400, f"Tool choice '{choice.get('name')}' not found in 'tools' parameter.", param="tool_choice")
    if choice == "required" or "use tool" in _last_user_text(items).lower():
        return tools[0]
    return None


def _usage(prompt: int, completion: int, reasoning: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def _envelope(body: dict[str, Any], rid: str, created: int) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


async def responses(
    request: web.Request, body: dict[str, Any], *, name: str, stream_chunks: int, delay_s: float
) -> web.StreamResponse:
    if body.get("previous_response_id") is not None:
        raise ApiError(
            404,
            f"Previous response with id '{body['previous_response_id']}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    items = _input_items(body)
    _check_reasoning(items)
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or limit < 16):
        raise ApiError(
            400,
            "Invalid 'max_output_tokens': integer below minimum value. "
            f"Expected a value >= 16, but got {limit} instead.",
            param="max_output_tokens",
            code="integer_below_min_value",
        )
    prompt_text = (body.get("instructions") or "") + "".join(
        text_of(i.get("content")) + str(i.get("output") or "") for i in items
    )
    rid, created = new_id("resp_", 48), int(time.time())
    reasoning = bool(REASONING_MODELS.match(body["model"])) or body.get("reasoning") is not None
    include = body.get("include") or []
    output: list[dict[str, Any]] = []
    thought_tokens = 0
    if reasoning:
        rs_id = new_id("rs_", 48)
        rs: dict[str, Any] = {"id": rs_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": SUMMARY}]}
        if "reasoning.encrypted_content" in include:
            rs["encrypted_content"] = _seal(rs_id)
        output.append(rs)
        thought_tokens = approx_tokens(SUMMARY)
    fn = _pick_tool(body, items)
    if fn is not None:
        arguments = orjson.dumps(tool_arguments(fn.get("parameters"))).decode()
        output.append(
            {
                "id": new_id("fc_", 48),
                "type": "function_call",
                "status": "completed",
                "arguments": arguments,
                "call_id": new_id("call_"),
                "name": fn.get("name"),
            }
        )
        completion, truncated = approx_tokens(str(fn.get("name")) + arguments), False
    else:
        reply = scripted_reply(name, prompt_text, max_tokens=limit)
        text_part = {"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}
        output.append(
            {
                "id": new_id("msg_", 48),
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [text_part],
            }
        )
        completion, truncated = reply.tokens, reply.truncated
    final = {
        **_envelope(body, rid, created),
        "status": "incomplete" if truncated else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "output": output,
        "usage": _usage(approx_tokens(prompt_text), completion + thought_tokens, thought_tokens),
    }
    if not body.get("stream"):
        return json_response(final)
    return await _stream(request, body, final, stream_chunks=stream_chunks, delay_s=delay_s)


async def _stream(
    request: web.Request, body: dict[str, Any], final: dict[str, Any], *, stream_chunks: int, delay_s: float
) -> web.StreamResponse:
    out = EventStream(request, delay_s)
    await out.open()
    seq = 0

    async def event(kind: str, last: bool = False, **payload: Any) -> None:
        nonlocal seq
        data = orjson.dumps({"type": kind, "sequence_number": seq, **payload})
        seq += 1
        await out.send(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n", final=last)

    start = {**final, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    await event("response.created", response=start)
    await event("response.in_progress", response=start)
    for index, item in enumerate(final["output"]):
        ids: dict[str, Any] = {"output_index": index, "item_id": item["id"]}
        if item["type"] == "message":
            text = item["content"][0]["text"]
            await event(
                "response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []}
            )
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            await event("response.content_part.added", **ids, content_index=0, part=empty)
            for piece in split_text(text, stream_chunks):
                await event("response.output_text.delta", **ids, content_index=0, delta=piece, logprobs=[])
            await event("response.output_text.done", **ids, content_index=0, text=text, logprobs=[])
            await event("response.content_part.done", **ids, content_index=0, part=item["content"][0])
        elif item["type"] == "function_call":
            await event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for piece in split_text(item["arguments"], 4):
                await event("response.function_call_arguments.delta", **ids, delta=piece)
            await event("response.function_call_arguments.done", **ids, arguments=item["arguments"])
        else:  # reasoning: its summary streamed as one part
            await event("response.output_item.added", output_index=index, item={**item, "summary": []})
            part = item["summary"][0]
            await event("response.reasoning_summary_part.added", **ids, summary_index=0, part={**part, "text": ""})
            await event("response.reasoning_summary_text.delta", **ids, summary_index=0, delta=part["text"])
            await event("response.reasoning_summary_text.done", **ids, summary_index=0, text=part["text"])
            await event("response.reasoning_summary_part.done", **ids, summary_index=0, part=part)
        await event("response.output_item.done", output_index=index, item=item)
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    await event(kind, last=True, response=final)
    return await out.close()
