"""The replayed agent workload: seeded tasks in the seeds' mix, each with its own check. Pure.

60 % simple, 30 % medium, 10 % complex. Within a class the tasks are text answers, JSON extractions
against a schema and tool calls, in the shares of ``KINDS``. Prompt and answer sizes are drawn
log-uniformly from ``SIZES``: an agent's system prompt, instructions and the document or history it
works on, from a few hundred tokens for a classification to about twelve thousand for a coding task.
Every request carries a stand-in tag (tiergate.standins.capability) naming its task, class and answer
size, so a simulated tier knows what it is being asked to do.

A task fails when the answer its agent receives fails the task's own check (``check``): text that is
there, JSON that parses and fits the task's schema, the expected tool called with arguments that
parse and fit the tool's schema. The check knows nothing of tiergate's gates.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

import jsonschema

MIX = (("simple", 0.6), ("medium", 0.3), ("complex", 0.1))
# class -> (kind, X-Tiergate-Task, share within the class)
KINDS = {
    "simple": (("text", "classify", 0.5), ("json", "triage", 0.3), ("tool", "lookup", 0.2)),
    "medium": (("text", "summarize", 0.3), ("json", "extract", 0.4), ("tool", "act", 0.3)),
    "complex": (("text", "code", 0.6), ("json", "plan", 0.2), ("tool", "orchestrate", 0.2)),
}
# class -> ((prompt tokens low, high), (answer tokens low, high), max_tokens the agent sends)
SIZES = {
    "simple": ((300, 1500), (15, 150), 512),
    "medium": ((1500, 4500), (150, 600), 1536),
    "complex": ((4000, 12000), (600, 2500), 4096),
}
TASK_TIERS = {t: tier for level, tier in (("simple", 0), ("medium", 1), ("complex", 2)) for _, t, _ in KINDS[level]}

SCHEMAS: dict[str, dict[str, Any]] = {
    "triage": {
        "type": "object",
        "properties": {"category": {"type": "string"}, "priority": {"type": "integer", "minimum": 1}},
        "required": ["category", "priority"],
    },
    "extract": {
        "type": "object",
        "properties": {
            "invoice_id": {"type": "string", "minLength": 1},
            "total": {"type": "number"},
            "currency": {"type": "string"},
            "line_items": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {"description": {"type": "string"}, "amount": {"type": "number"}},
                    "required": ["description", "amount"],
                },
            },
        },
        "required": ["invoice_id", "total", "currency", "line_items"],
    },
    "plan": {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "minItems": 3,
                "items": {
                    "type": "object",
                    "properties": {"title": {"type": "string"}, "owner": {"type": "string"}},
                    "required": ["title", "owner"],
                },
            },
            "risk": {"type": "string"},
        },
        "required": ["steps", "risk"],
    },
}
TOOLS: dict[str, dict[str, Any]] = {
    "lookup": {
        "name": "get_order_status",
        "description": "Look up an order's shipping status.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    },
    "act": {
        "name": "create_ticket",
        "description": "Open a ticket in the issue tracker.",
        "parameters": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "minLength": 1},
                "priority": {"type": "string", "enum": ["low", "normal", "high"]},
                "assignee": {"type": "string"},
            },
            "required": ["title", "priority"],
        },
    },
    "orchestrate": {
        "name": "run_shell",
        "description": "Run a shell command in the repository.",
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "minLength": 1},
                "cwd": {"type": "string"},
                "timeout_s": {"type": "integer", "minimum": 1},
            },
            "required": ["command", "cwd", "timeout_s"],
        },
    },
}
_WORDS = (
    "invoice customer order shipment refund ticket deploy branch commit function module config error retry "
    "latency budget schedule owner review summary request response database index cache queue worker token"
).split()


@dataclass(frozen=True)
class Task:
    id: str
    level: str  # simple | medium | complex
    kind: str  # text | json | tool
    task_type: str  # sent as X-Tiergate-Task
    answer_tokens: int
    body: dict[str, Any]  # the chat completion request, without its model

    def check(self, answer: Any) -> str | None:
        """None when the agent can use ``answer`` (a chat.completion object), else what is wrong with it."""
        try:
            msg = answer["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            return "no message in the answer"
        if self.kind == "tool":
            calls = msg.get("tool_calls") or []
            if not calls:
                return "no tool call"
            fn = calls[0].get("function") or {}
            tool = TOOLS[self.task_type]
            if fn.get("name") != tool["name"]:
                return f"called {fn.get('name')!r}, not {tool['name']!r}"
            return _fits(fn.get("arguments"), tool["parameters"], "tool arguments")
        text = msg.get("content")
        if not isinstance(text, str) or not text.strip():
            return "no text"
        if self.kind == "json":
            return _fits(text, SCHEMAS[self.task_type], "JSON answer")
        return None


def _fits(raw: Any, schema: dict[str, Any], what: str) -> str | None:
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return f"{what} is not JSON"
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        return f"{what} does not fit the schema: {exc.message}"
    return None


def workload(n: int, seed: int) -> list[Task]:
    """``n`` tasks: the mix's shares exactly (rounded), in a seeded random order."""
    rng = random.Random(seed)
    levels: list[str] = []
    for level, share in MIX:
        levels += [level] * round(n * share)
    levels = (levels + ["simple"] * n)[:n]
    rng.shuffle(levels)
    return [_task(f"T{seed}-{i:05d}", level, rng) for i, level in enumerate(levels)]


def _task(ident: str, level: str, rng: random.Random) -> Task:
    kinds = KINDS[level]
    kind, task_type, _ = rng.choices(kinds, weights=[k[2] for k in kinds])[0]
    (p_lo, p_hi), (a_lo, a_hi), max_tokens = SIZES[level]
    prompt_tokens, answer_tokens = _log_uniform(rng, p_lo, p_hi), _log_uniform(rng, a_lo, a_hi)
    tag = f"[[standin task={ident} class={level} answer_tokens={answer_tokens}]]"
    system = f"{tag} You are an agent working on {task_type} tasks. Follow the instructions exactly."
    # the rest of the prompt: the document, history or code the agent works on (about 4 characters a token)
    filler_tokens = max(1, prompt_tokens - len(system) // 4 - 20)
    document = " ".join(rng.choice(_WORDS) for _ in range(filler_tokens * 4 // 7))
    user = f"Task {ident}: {task_type} the following.\n\n{document}"
    body: dict[str, Any] = {
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "max_tokens": max_tokens,
    }
    if kind == "json":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": task_type, "schema": SCHEMAS[task_type], "strict": False},
        }
    elif kind == "tool":
        body["tools"] = [{"type": "function", "function": TOOLS[task_type]}]
        body["tool_choice"] = "required"
    return Task(ident, level, kind, task_type, answer_tokens, body)


def _log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))
