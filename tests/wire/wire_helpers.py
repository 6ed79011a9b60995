"""Shared helpers for the wire tests: fixtures, SSE splitting, and the official SDKs as oracles."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx2 as httpx  # the transport the installed openai/anthropic SDKs are built on
import orjson

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def fixture_names(prefix: str, suffix: str = ".json") -> list[str]:
    return sorted(p.name for p in FIXTURES.glob(f"{prefix}*{suffix}") if not p.name.endswith(".expected.json"))


def split_events(data: bytes) -> list[bytes]:
    """Whole SSE events, as the adapter's iter_sse_events yields them."""
    data = data.replace(b"\r\n", b"\n")
    return [part + b"\n\n" for part in data.split(b"\n\n") if part.strip()]


def anthropic_events(data: bytes) -> list[list[Any]]:
    """Anthropic SSE bytes -> [[event name, parsed data], ...]; checks name == data.type."""
    out = []
    for event in split_events(data):
        lines = event.decode().strip().split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), event
        name, payload = lines[0][7:], orjson.loads(lines[1][6:])
        assert payload["type"] == name
        out.append([name, payload])
    return out


def openai_events(data: bytes) -> list[Any]:
    """OpenAI SSE bytes -> [parsed chunk | "[DONE]", ...]."""
    out = []
    for event in split_events(data):
        text = event.decode().strip()
        assert text.startswith("data: ") and "\n" not in text, event
        out.append("[DONE]" if text == "data: [DONE]" else orjson.loads(text[6:]))
    return out


def parsed_arguments(openai_body: dict) -> dict:
    """A copy with every tool call's arguments string parsed, so JSON is compared, not spelling."""
    body = copy.deepcopy(openai_body)
    messages = body.get("messages") or [c["message"] for c in body.get("choices", [])]
    for msg in messages:
        for call in msg.get("tool_calls") or ():
            call["function"]["arguments"] = orjson.loads(call["function"]["arguments"])
    return body


def _transport(body: bytes, content_type: str) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, content=body)

    return httpx.Client(transport=httpx.MockTransport(handler))


def anthropic_client(body: bytes, content_type: str = "text/event-stream"):
    """The official anthropic SDK, answered by ``body`` whatever it asks."""
    import anthropic

    return anthropic.Anthropic(
        api_key="test", base_url="http://upstream.test", http_client=_transport(body, content_type), max_retries=0
    )


def openai_client(body: bytes, content_type: str = "text/event-stream"):
    """The official openai SDK, answered by ``body`` whatever it asks."""
    import openai

    return openai.OpenAI(
        api_key="test", base_url="http://upstream.test/v1", http_client=_transport(body, content_type), max_retries=0
    )
