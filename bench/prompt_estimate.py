"""Microseconds per request to estimate a prompt, before and after issue 14 item 5.

Before: the whole JSON body's bytes / 4 (``estimate_tokens_from_bytes(len(raw))``). After: the text the model
reads (``core.tokens.chat_prompt`` / ``messages_prompt``), on the same ~2 KB chat body: a system prompt, a
few turns, a tool call and its result. Each figure is the best of several repeats of this thread's CPU time
(the least disturbed by other work on the machine).

    .venv/bin/python bench/prompt_estimate.py [--number 100000] [--repeat 9]
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Callable

import orjson

from tiergate.core.money import estimate_tokens_from_bytes
from tiergate.core.tokens import chat_prompt, messages_prompt

TURN = "Refactor the parser so that each token carries its source span; keep the public API. "
CHAT = {
    "model": "auto",
    "max_tokens": 512,
    "stream": True,
    "temperature": 0.2,
    "messages": [
        {"role": "system", "content": "You are a careful senior engineer. Answer concisely, with code when useful."},
        {"role": "user", "content": TURN * 5},
        {"role": "assistant", "content": TURN * 4},
        {"role": "user", "content": [{"type": "text", "text": TURN * 4}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "p.py"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": TURN * 4},
        {"role": "user", "content": "Now write the tests."},
    ],
}
MESSAGES = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 512,
    "system": CHAT["messages"][0]["content"],
    "messages": [
        {"role": "user", "content": TURN * 5},
        {"role": "assistant", "content": TURN * 4},
        {"role": "user", "content": [{"type": "text", "text": TURN * 4}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read_file", "input": {"p": "p"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": TURN * 4}]},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "Now write the tests."},
    ],
}


def best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    """CPU time of this thread, not wall time: a busy machine delays the run but does not inflate it."""
    return min(timeit.repeat(fn, number=number, repeat=repeat, timer=time.thread_time)) / number * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=100_000, help="calls per timing")
    ap.add_argument("--repeat", type=int, default=9, help="timings; the best is shown")
    args = ap.parse_args()
    for name, body, count in (("OpenAI chat", CHAT, chat_prompt), ("Anthropic messages", MESSAGES, messages_prompt)):
        raw = orjson.dumps(body)
        before = best_us(lambda raw=raw: estimate_tokens_from_bytes(len(raw)), args.number, args.repeat)
        after = best_us(lambda body=body, count=count: count(body), args.number, args.repeat)
        print(
            f"{name:18} {len(raw):5d} B   before {before:6.2f} us ({estimate_tokens_from_bytes(len(raw))} tokens)"
            f"   after {after:6.2f} us ({count(body).tokens} tokens)"
        )


if __name__ == "__main__":
    main()
