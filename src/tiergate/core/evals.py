"""``tiergate eval``: does a model do a suite's tasks? Pure: answers and checks in, verdicts and totals out.

A suite is a list of tasks, each with declarative checks on its answer:
``exact``, ``contains``, ``regex``, ``json_schema`` and ``tool_call`` (a
tool's name and a subset of its arguments). Each run of a task also faces
the quality gates (core.gates), as a routed request would, so the result
says both whether the answer was right and whether tiergate would have
escalated it. The CLI sends the requests and renders the totals.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import regex

from tiergate.core.gates import PATTERN_TIMEOUT_S, AnswerView, schema_problem


@dataclass(frozen=True, slots=True)
class Check:
    kind: str  # exact | contains | regex | json_schema | tool_call
    value: Any


@dataclass(slots=True)
class RunResult:
    """One run of one task on one target."""

    target: str
    task: str
    passed: bool
    failures: list[str]
    gate: str | None  # the quality gate the answer failed, if any
    latency_ms: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    served_by: str | None = None  # the deployment that answered (a target may fall back elsewhere)
    error: str | None = None  # the request itself failed


def _contains(args: Any, want: Any) -> bool:
    """``want`` is a subset of ``args``: objects by key, everything else equal."""
    if isinstance(want, Mapping):
        return isinstance(args, Mapping) and all(k in args and _contains(args[k], v) for k, v in want.items())
    return bool(args == want)


def check_answer(view: AnswerView, checks: Iterable[Check]) -> list[str]:
    """Why the answer fails each check it fails; empty when it passes all."""
    text = view.text.strip()
    out: list[str] = []
    for c in checks:
        if c.kind == "exact" and text != str(c.value).strip():
            out.append(f"exact: wanted {str(c.value)[:40]!r}, got {text[:40]!r}")
        elif c.kind == "contains" and str(c.value).lower() not in text.lower():
            out.append(f"contains: {str(c.value)[:40]!r} not in the answer")
        elif c.kind == "regex":
            try:
                found = regex.search(str(c.value), text, timeout=PATTERN_TIMEOUT_S * 10) is not None
            except TimeoutError:
                found = False
            if not found:
                out.append(f"regex: {c.value!r} does not match")
        elif c.kind == "json_schema":
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                out.append("json_schema: the answer is not JSON")
                continue
            problem = schema_problem(value, c.value)
            if problem is not None:
                out.append(f"json_schema: {problem}")
        elif c.kind == "tool_call":
            want = c.value if isinstance(c.value, Mapping) else {"name": c.value}
            if not any(_call_matches(call.name, call.arguments, want) for call in view.tool_calls):
                called = ", ".join(call.name for call in view.tool_calls) or "none"
                out.append(f"tool_call: wanted {want.get('name')!r}; called {called}")
    return out


def _call_matches(name: str, arguments: Any, want: Mapping[str, Any]) -> bool:
    if name != want.get("name"):
        return False
    if "arguments" not in want:
        return True
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return False
    return _contains(arguments, want["arguments"])


@dataclass(slots=True)
class TargetSummary:
    target: str
    runs: int = 0
    passed: int = 0
    gate_failures: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    served_elsewhere: int = 0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def pass_rate(self) -> float:
        return self.passed / self.runs if self.runs else 0.0


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarize(
    results: Iterable[RunResult], targets: Sequence[str], deployments: frozenset[str] = frozenset()
) -> list[TargetSummary]:
    """One summary per target, in the order given. ``served_elsewhere`` counts only for a target that is
    itself a deployment (``auto`` and an alias are served by whichever deployment they route to)."""
    by: dict[str, list[RunResult]] = {t: [] for t in targets}
    for r in results:
        by.setdefault(r.target, []).append(r)
    out = []
    for target, rows in by.items():
        s = TargetSummary(target, runs=len(rows))
        s.passed = sum(r.passed for r in rows)
        s.errors = sum(r.error is not None for r in rows)
        if target in deployments:
            s.served_elsewhere = sum(r.served_by is not None and r.served_by != target for r in rows)
        for r in rows:
            if r.gate:
                s.gate_failures[r.gate] = s.gate_failures.get(r.gate, 0) + 1
        latencies = sorted(r.latency_ms for r in rows if r.error is None)
        s.latency_p50_ms, s.latency_p95_ms = _percentile(latencies, 50), _percentile(latencies, 95)
        s.prompt_tokens = sum(r.prompt_tokens for r in rows)
        s.completion_tokens = sum(r.completion_tokens for r in rows)
        s.cost_usd = sum(r.cost_usd for r in rows)
        out.append(s)
    return out
