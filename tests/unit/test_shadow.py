"""Shadow comparisons, pure: when two answers agree, and the day's shadow budget."""

from __future__ import annotations

import pytest

from tiergate.core.gates import AnswerView, ToolCall
from tiergate.core.shadow import ShadowBudget, agree


@pytest.mark.parametrize(
    ("a", "b", "mode", "same"),
    [
        (AnswerView(text="Paris"), AnswerView(text=" paris\n"), "exact", True),
        (AnswerView(text="Paris, France"), AnswerView(text="Paris"), "exact", False),
        (AnswerView(text='{"a": 1, "b": [2]}'), AnswerView(text='{"b":[2],"a":1}'), "json", True),
        (AnswerView(text='{"a": 1}'), AnswerView(text='{"a": 2}'), "json", False),
        (AnswerView(text="{broken"), AnswerView(text="{broken"), "json", False),
        (
            AnswerView(tool_calls=[ToolCall("f", '{"x": 1}')]),
            AnswerView(tool_calls=[ToolCall("f", {"x": 1})]),
            "exact",
            True,
        ),
        (
            AnswerView(tool_calls=[ToolCall("f", '{"x": 1}')]),
            AnswerView(tool_calls=[ToolCall("g", '{"x": 1}')]),
            "exact",
            False,
        ),
        (AnswerView(tool_calls=[ToolCall("f", "{}")]), AnswerView(text="f()"), "exact", False),
    ],
)
def test_agreement(a, b, mode, same):
    assert agree(a, b, mode) is same


def test_the_budget_holds_per_day_and_rolls_over():
    day = 86400.0
    b = ShadowBudget(0.01)
    assert b.fits(0.01, 10 * day)
    b.spend(0.008, 10 * day)
    assert not b.fits(0.003, 10 * day + 5) and b.fits(0.002, 10 * day + 5)
    b.spend(-0.008, 10 * day + 6)  # a comparison that failed gives its hold back
    assert b.fits(0.01, 10 * day + 7)
    b.spend(0.01, 10 * day + 8)
    assert not b.fits(0.0001, 11 * day - 1) and b.fits(0.01, 11 * day)  # a new UTC day
