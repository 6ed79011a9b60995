"""tiergate recommend's pure rule: enough evidence, a high enough failure rate at the starting tier."""

from __future__ import annotations

import pytest

from tiergate.core.recommend import GateFailureRow, recommend


def fails(task: str, tier: int, n: int, gate: str = "invalid_json") -> list[GateFailureRow]:
    return [GateFailureRow(task, tier, gate)] * n


@pytest.mark.parametrize(
    ("requests", "failures", "served", "advice"),
    [
        ({"extract": 40}, fails("extract", 0, 10), {"extract": [0, 2]}, [("extract", 0, 2)]),  # 25 %: up to tier 2
        ({"extract": 40}, fails("extract", 0, 7), {"extract": [0, 2]}, []),  # 17.5 %: below the threshold
        ({"extract": 10}, fails("extract", 0, 10), {"extract": [1]}, []),  # too little evidence
        ({"extract": 40}, fails("extract", 1, 20), {"extract": [1, 2]}, []),  # failures above its tier: not its start
        ({"extract": 40}, fails("extract", 0, 20), {"extract": [0]}, [("extract", 0, 1)]),  # none above: next tier
        ({"code": 30}, fails("code", 1, 30), {"code": [3]}, [("code", 1, 3)]),
    ],
)
def test_advice(requests, failures, served, advice):
    recs = recommend({"extract": 0, "code": 1}, requests, failures, served, min_requests=20, threshold=0.2)
    assert [(r.task, r.current_tier, r.suggested_tier) for r in recs] == advice


def test_most_failing_first_with_the_evidence():
    recs = recommend(
        {"a": 0, "b": 0},
        {"a": 20, "b": 20},
        fails("a", 0, 5) + fails("b", 0, 15, "empty") + fails("b", 0, 1),
        {},
        min_requests=20,
    )
    assert [r.task for r in recs] == ["b", "a"]
    assert recs[0].gates == {"empty": 15, "invalid_json": 1} and recs[0].failure_rate == pytest.approx(0.8)
    assert recs[0].line() == "tasks.b: 0 -> 1  (16 of 20 answers at tier 0 failed a gate: empty 15, invalid_json 1)"
