"""The eval command's pure parts: checks on answers and the per-target totals."""

from __future__ import annotations

import pytest

from tiergate.core.evals import Check, RunResult, check_answer, summarize
from tiergate.core.gates import AnswerView, ToolCall


@pytest.mark.parametrize(
    ("view", "check", "ok"),
    [
        (AnswerView(text=" negative "), Check("exact", "negative"), True),
        (AnswerView(text="Negative."), Check("exact", "negative"), False),
        (AnswerView(text="Due 2026-12-01."), Check("contains", "2026-12-01"), True),
        (AnswerView(text="DEF reverse"), Check("contains", "def reverse"), True),  # case-blind
        (AnswerView(text="9 runs"), Check("regex", r"\b9\b"), True),
        (AnswerView(text="19 runs"), Check("regex", r"\b9\b"), False),
        (AnswerView(text='{"name": "Ada"}'), Check("json_schema", {"type": "object", "required": ["name"]}), True),
        (AnswerView(text='{"nom": "Ada"}'), Check("json_schema", {"type": "object", "required": ["name"]}), False),
        (AnswerView(text="Ada"), Check("json_schema", {"type": "object"}), False),
        (
            AnswerView(tool_calls=[ToolCall("get_weather", '{"location": "Paris", "unit": "c"}')]),
            Check("tool_call", "get_weather"),
            True,
        ),
        (
            AnswerView(tool_calls=[ToolCall("get_weather", '{"location": "Paris", "unit": "c"}')]),
            Check("tool_call", {"name": "get_weather", "arguments": {"location": "Paris"}}),
            True,
        ),
        (
            AnswerView(tool_calls=[ToolCall("get_weather", {"location": "Lyon"})]),
            Check("tool_call", {"name": "get_weather", "arguments": {"location": "Paris"}}),
            False,
        ),
        (
            AnswerView(tool_calls=[ToolCall("get_weather", "{broken")]),
            Check("tool_call", {"name": "get_weather", "arguments": {}}),
            False,
        ),
        (AnswerView(text="sunny"), Check("tool_call", "get_weather"), False),
    ],
)
def test_checks(view, check, ok):
    assert (check_answer(view, [check]) == []) is ok


def test_summaries_per_target_in_order():
    runs = [
        RunResult("b", "t", True, [], None, 100.0, 10, 5, 0.001, "b"),
        RunResult("a", "t", False, ["x"], "empty", 50.0, 10, 0, 0.0, "a"),
        RunResult("a", "t", True, [], None, 150.0, 10, 5, 0.0, "frontier"),  # a fell back elsewhere
        RunResult("a", "t", False, ["HTTP 502"], None, 0.0, error="502"),
    ]
    a, b = summarize(runs, ["a", "b"], frozenset({"a", "b"}))
    assert (a.target, a.runs, a.passed, a.errors, a.served_elsewhere) == ("a", 3, 1, 1, 1)
    assert a.gate_failures == {"empty": 1} and a.pass_rate == pytest.approx(1 / 3)
    assert (a.latency_p50_ms, a.completion_tokens) == (100.0, 5)  # the failed request has no latency
    assert (b.runs, b.passed, b.cost_usd, b.latency_p50_ms, b.latency_p95_ms) == (1, 1, 0.001, 100.0, 100.0)
    assert summarize(runs, ["a"])[0].served_elsewhere == 0  # "a" as an alias: routed, never "elsewhere"
    [empty] = summarize([], ["c"])
    assert empty.runs == 0 and empty.pass_rate == 0.0
