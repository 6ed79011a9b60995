"""The wire side of ``tiergate eval``: an eval task as an OpenAI chat request, and what its answer says.

The eval command is a client of a running gateway over HTTP, like any
agent; its request bodies are written here and its answers read with the
gates' reader (adapters/gate_views), so an eval sees an answer exactly as
the quality gates do.
"""

from __future__ import annotations

from typing import Any

import orjson

from tiergate.adapters.gate_requests import expectations
from tiergate.adapters.gate_views import reply_view
from tiergate.config.evals import EvalTask
from tiergate.core.gates import AnswerView, GateFailure, GateRule, judge


def eval_request(task: EvalTask, target: str) -> dict[str, Any]:
    messages = ([{"role": "system", "content": task.system}] if task.system else []) + [
        {"role": "user", "content": task.prompt}
    ]
    body: dict[str, Any] = {"model": target, "messages": messages, "max_tokens": task.max_tokens}
    if task.answer_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": task.name.replace(" ", "_")[:64], "schema": task.answer_schema},
        }
    elif task.json_object:
        body["response_format"] = {"type": "json_object"}
    if task.tools:
        body["tools"] = task.tools
    return body


def read_answer(body: dict[str, Any], reply: bytes) -> tuple[AnswerView, GateFailure | None, int, int]:
    """(the answer's view, the gate it fails, prompt tokens, completion tokens); ValueError when the reply
    is not a chat completion."""
    view = reply_view("openai-chat", reply)
    doc = orjson.loads(reply) if view is not None else None
    if view is None or not isinstance(doc, dict) or not isinstance(doc.get("choices"), list):
        raise ValueError("the reply is not a chat completion")
    usage: dict[str, Any] = doc["usage"] if isinstance(doc.get("usage"), dict) else {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    failure = judge(view, expectations("openai-chat", body), GateRule())
    return view, failure, prompt if isinstance(prompt, int) else 0, completion if isinstance(completion, int) else 0
