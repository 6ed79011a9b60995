"""Request bodies for the gateway benchmark (deterministic, ~1.5 KB each).

The OpenAI chat request is bench/stack_choice/payloads.chat_request, so the
two benchmarks send the same bytes; the Anthropic Messages and OpenAI
Responses requests carry the same system prompt, turns and tool in their
own shapes.
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
STACK = os.path.join(os.path.dirname(HERE), "stack_choice")
if STACK not in sys.path:
    sys.path.append(STACK)  # after bench/gateway: its upstream.py is not this one

import payloads  # noqa: E402


def dumps(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def chat_body(model: str, *, stream: bool = False, size: int = 1536) -> bytes:
    body = payloads.chat_request(size, stream=stream)
    body["model"] = model
    return dumps(body)


def anthropic_body(model: str, *, size: int = 1536) -> bytes:
    tool = payloads._TOOLS[0]["function"]
    turns = [(r, c) for r, c in payloads._TURNS]
    messages = [{"role": r, "content": c} for r, c in turns]
    body = {
        "model": model,
        "system": payloads._SYSTEM,
        "messages": messages,
        "max_tokens": 512,
        "temperature": 0.2,
        "tools": [{"name": tool["name"], "description": tool["description"], "input_schema": tool["parameters"]}],
        "metadata": {"user_id": "agent-7f3a"},
    }
    i = 0
    # keep user/assistant alternating, ending on a user turn
    while len(dumps(body)) < size - 200:
        messages.append({"role": "assistant", "content": f"[{i}] " + payloads._TURNS[1][1]})
        messages.append({"role": "user", "content": f"[{i}] " + payloads._TURNS[2][1]})
        i += 1
    short = size - len(dumps(body))
    if short > 0:
        messages[-1]["content"] += " " + ("Please be thorough. " * (short // 20 + 1))[: short - 1]
    return dumps(body)


def responses_body(model: str, *, size: int = 1536) -> bytes:
    """The same conversation as a Responses request, as Codex shapes one (store false, items, a function tool)."""
    tool = payloads._TOOLS[0]["function"]
    items: list[dict] = [{"role": r, "content": c} for r, c in payloads._TURNS]
    body = {
        "model": model,
        "instructions": payloads._SYSTEM,
        "input": items,
        "max_output_tokens": 512,
        "temperature": 0.2,
        "store": False,
        "tools": [
            {
                "type": "function",
                "name": tool["name"],
                "description": tool["description"],
                "parameters": tool["parameters"],
                "strict": False,
            }
        ],
    }
    i = 0
    while len(dumps(body)) < size - 200:
        items.append({"role": "assistant", "content": f"[{i}] " + payloads._TURNS[1][1]})
        items.append({"role": "user", "content": f"[{i}] " + payloads._TURNS[2][1]})
        i += 1
    short = size - len(dumps(body))
    if short > 0:
        items[-1]["content"] += " " + ("Please be thorough. " * (short // 20 + 1))[: short - 1]
    return dumps(body)


if __name__ == "__main__":
    print(
        "chat",
        len(chat_body("auto")),
        "anthropic",
        len(anthropic_body("claude-sonnet-4-5")),
        "responses",
        len(responses_body("auto")),
    )
