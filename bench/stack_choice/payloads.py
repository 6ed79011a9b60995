"""Deterministic request/response bodies used by the stack-choice benchmark.

Nothing here is random: every run sends the same bytes, so rounds and
machines compare.
"""

from __future__ import annotations

import json

_SYSTEM = (
    "You are a careful coding agent working inside a repository. Follow the "
    "user's instructions exactly, prefer small diffs, explain what you change "
    "and why, and never invent file contents you have not read. When a tool "
    "is needed, call it with precise arguments."
)

_TURNS = [
    (
        "user",
        "The CI job test-unit fails on main since this morning. Here is "
        "the tail of the log: FAILED tests/unit/test_policy.py::"
        "test_escalates_on_timeout - AssertionError: expected tier "
        "'mid', got 'cheap'. Can you find the cause?",
    ),
    (
        "assistant",
        "The policy reads the timeout from the world snapshot, but "
        "the fixture builds the snapshot before the breaker records "
        "the failure. I will read router/policy.py and the fixture "
        "to confirm before proposing a change.",
    ),
    (
        "user",
        "Go ahead, and keep the change minimal. Also check whether the "
        "same ordering bug affects the fallback path for local tiers.",
    ),
]

_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file of the repository.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    }
]


def chat_request(target_bytes: int = 1536, stream: bool = False) -> dict:
    """An OpenAI chat.completions request of about ``target_bytes``.

    The 1.5 KB body is a system prompt, a short multi-turn exchange and one
    tool; bigger bodies repeat realistic assistant/user turns (an agent with a
    long context) until the size is reached.
    """
    messages = [{"role": "system", "content": _SYSTEM}]
    messages += [{"role": r, "content": c} for r, c in _TURNS]
    body = {
        "model": "gpt-4o-mini",
        "messages": messages,
        "temperature": 0.2,
        "max_tokens": 512,
        "tools": _TOOLS,
        "user": "agent-7f3a/session-0192",
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}

    def size() -> int:
        return len(json.dumps(body, separators=(",", ":")))

    i = 0
    while size() < target_bytes - 200:
        r, c = _TURNS[i % len(_TURNS)]
        messages.append({"role": r, "content": f"[{i}] {c}"})
        i += 1
    # pad the last user message to land close to the target size
    short = target_bytes - size()
    if short > 0:
        messages[-1]["content"] += " " + ("Please be thorough. " * (short // 20 + 1))[: short - 1]
    return body


CHAT_COMPLETION = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "The fixture builds the snapshot before the breaker "
                "records the failure, so the policy still sees the "
                "cheap tier as healthy. Build it after recording "
                "the failure.",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 412,
        "completion_tokens": 58,
        "total_tokens": 470,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
    "service_tier": "default",
    "system_fingerprint": "fp_06737a9306",
}


def completion_bytes() -> bytes:
    return json.dumps(CHAT_COMPLETION, separators=(",", ":")).encode()


def sse_chunks(n: int = 20) -> list[bytes]:
    """``n`` chat.completion.chunk SSE events, then usage and ``[DONE]``."""
    words = (
        "The fixture builds the snapshot before the breaker records the "
        "failure so the policy sees the cheap tier healthy fix ordering"
    ).split()
    out = []
    for i in range(n):
        delta = {"content": words[i % len(words)] + " "}
        if i == 0:
            delta = {"role": "assistant", "content": ""}
        ev = {
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion.chunk",
            "created": 1741569952,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_06737a9306",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": "stop" if i == n - 1 else None}
            ],
        }
        out.append(b"data: " + json.dumps(ev, separators=(",", ":")).encode() + b"\n\n")
    usage = {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [],
        "usage": {"prompt_tokens": 412, "completion_tokens": n, "total_tokens": 412 + n},
    }
    out.append(b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


if __name__ == "__main__":
    for size in (1536, 51200):
        print(size, len(json.dumps(chat_request(size), separators=(",", ":")).encode()))
    print("completion", len(completion_bytes()))
    print("sse events", len(sse_chunks()), sum(map(len, sse_chunks())))
