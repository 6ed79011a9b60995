"""Responses API conversation state: store, previous_response_id, GET, DELETE, input_items, input_tokens.

A response made with ``store`` (OpenAI's default: true; Codex sends false)
is kept in the ledger's database with the whole input it answered, so every
replica reads the same state, for ``responses.store_days``. A request naming
``previous_response_id`` is answered as if it had sent that input, that
response's output and then its own input (the earlier ``instructions`` are
not carried over, as OpenAI documents), so it continues on any tier. Only the
key that stored a response can read, continue or delete it; for any other it
does not exist (404).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from tiergate.api.common import JSON, require_type
from tiergate.api.gateway import GATEWAY, Gateway
from tiergate.core.errors import BadRequest, NotFound
from tiergate.core.types import Identity
from tiergate.pipeline.answer import Answer

log = logging.getLogger("tiergate.api")

DAY_S = 86400.0
FINAL_EVENTS = (b"event: response.completed\n", b"event: response.incomplete\n")
MAX_LIST = 100


def _item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def input_items(value: Any) -> list[dict[str, Any]]:
    """A request's input as stored items, each with an id (a string input is one user message)."""
    raw = [{"role": "user", "content": value}] if isinstance(value, str) else value
    items: list[dict[str, Any]] = []
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, dict):
            continue
        item = dict(item)
        if item.get("type", "message") == "message":
            item["type"] = "message"
            if isinstance(item.get("content"), str):
                part = "output_text" if item.get("role") == "assistant" else "input_text"
                item["content"] = [{"type": part, "text": item["content"]}]
            item.setdefault("status", "completed")
        item.setdefault("id", _item_id("msg" if item["type"] == "message" else "item"))
        items.append(item)
    return items


class StoredState:
    """One request's view of the stored state: what it continues from, and whether to keep its answer."""

    def __init__(self, gw: Gateway, ident: Identity, body: dict[str, Any]) -> None:
        self.gw = gw
        self.key_name = ident.key_name
        self.store = require_type(body, "store", bool, "a boolean") is not False
        self.previous = require_type(body, "previous_response_id", str, "a response id")
        self.items: list[dict[str, Any]] | None = None  # the whole input, once known

    async def expand(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body to route: with previous_response_id, the earlier input and output come first."""
        if self.previous is None:
            if self.store:
                self.items = input_items(body.get("input"))
            return body
        row = await asyncio.to_thread(self.gw.ledger.stored_response, self.previous, key_name=self.key_name)
        if row is None:
            raise NotFound(f"Previous response with id '{self.previous}' not found.", param="previous_response_id")
        earlier = orjson.loads(row["input_items"])
        output = orjson.loads(row["response"]).get("output") or []
        self.items = [*earlier, *output, *input_items(body.get("input"))]
        return {**body, "input": self.items}

    async def keep(self, response: Any) -> None:
        """Best effort: a ledger that cannot store it costs the client its GET later, never this answer or
        its usage row (the answer settles however this ends)."""
        if not self.store or self.items is None or not isinstance(response, dict):
            return
        if not isinstance(response.get("id"), str):
            return
        try:
            await asyncio.to_thread(
                self.gw.ledger.store_response,
                response["id"],
                key_name=self.key_name,
                response=orjson.dumps({**response, "store": True}).decode(),
                input_items=orjson.dumps(self.items).decode(),
                keep_s=self.gw.config.responses.store_days * DAY_S,
            )
        except Exception:
            log.warning("could not store response %s", response["id"], exc_info=True)

    async def keep_answer(self, answer: Answer) -> None:
        """A plain answer is kept before the client has it; a stream, before its final event is relayed."""
        if not self.store:
            return
        if answer.outcome.stream is None:
            try:
                reply = orjson.loads(answer.reply.body)
            except orjson.JSONDecodeError:
                return
            await self.keep(reply)
            return
        s = answer.stream
        s.rest = self._kept(s.rest)

    async def _kept(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for ev in events:
            for marker in FINAL_EVENTS:
                i = ev.find(marker)
                if i >= 0:
                    line = ev[i + len(marker) :].split(b"\n", 1)[0]
                    if line.startswith(b"data: "):
                        try:
                            final = orjson.loads(line[6:])
                        except orjson.JSONDecodeError:
                            final = None
                        await self.keep(final.get("response") if isinstance(final, dict) else None)
            yield ev


async def _stored(request: web.Request) -> tuple[Gateway, Identity, str, Any]:
    gw = request.app[GATEWAY]
    ident = gw.keys.identify(request.headers, request.remote)
    rid = request.match_info["response_id"]
    row = await asyncio.to_thread(gw.ledger.stored_response, rid, key_name=ident.key_name)
    if row is None:
        raise NotFound(f"Response with id '{rid}' not found.", param="response_id")
    return gw, ident, rid, row


async def get_response(request: web.Request) -> web.Response:
    _, _, _, row = await _stored(request)
    return web.Response(text=row["response"], content_type=JSON)


async def delete_response(request: web.Request) -> web.Response:
    gw, ident, rid, _ = await _stored(request)
    await asyncio.to_thread(gw.ledger.delete_response, rid, key_name=ident.key_name)
    return web.Response(body=orjson.dumps({"id": rid, "object": "response", "deleted": True}), content_type=JSON)


def _limit(query: Any) -> int:
    raw = query.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST:
        raise BadRequest(f"limit: must be an integer from 1 to {MAX_LIST}", param="limit")
    return int(raw)


async def list_input_items(request: web.Request) -> web.Response:
    """OpenAI's list shape; newest first unless ``order=asc``; ``after`` an item id, ``limit`` 1-100."""
    _, _, _, row = await _stored(request)
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("order: must be asc or desc", param="order")
    items = orjson.loads(row["input_items"])
    if order == "desc":
        items.reverse()
    after = request.query.get("after")
    if after is not None:
        ids = [i.get("id") for i in items]
        if after not in ids:
            raise BadRequest(f"after: no input item {after!r} in this response", param="after")
        items = items[ids.index(after) + 1 :]
    limit = _limit(request.query)
    page = items[:limit]
    body = {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
    return web.Response(body=orjson.dumps(body), content_type=JSON)
