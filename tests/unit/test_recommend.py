"""tiergate recommend's pure rule: enough evidence, a high enough failure rate at the starting tier."""

from __future__ import annotations

import pytest

from tiergate.core.recommend import GateFailureRow, ShadowRow, lowering, recommend


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


def shadows(task: str, served: int, asked: int, agreed: int, disagreed: int = 0) -> list[ShadowRow]:
    return [ShadowRow(task, served, asked, True)] * agreed + [ShadowRow(task, served, asked, False)] * disagreed


@pytest.mark.parametrize(
    ("rows", "advice"),
    [
        (shadows("extract", 1, 0, 19, 1), [("extract", 1, 0, 20, 19)]),  # 95 % of 20: start at tier 0
        (shadows("extract", 1, 0, 17, 3), []),  # 85 %: below the agreement asked for
        (shadows("extract", 1, 0, 10), []),  # too little evidence
        (shadows("code", 3, 1, 20) + shadows("code", 2, 0, 20), [("code", 2, 0, 20, 20)]),  # the lowest tier
        (shadows("code", 3, 1, 20) + shadows("code", 3, 0, 5, 15), [("code", 2, 1, 20, 20)]),  # tier 0 disagreed
        (shadows("code", 3, 2, 30), []),  # tier 2 is where code starts: nothing lower asked
        (shadows("extract", 0, 0, 30), []),  # a local answer's own shadow: not evidence about a lower tier
        (shadows("classify", 1, 0, 30), []),  # starts at tier 0: nothing to lower (and not above it)
        (shadows("unlisted", 2, 0, 30), []),  # not in tasks:
        (shadows("extract", 3, 1, 30), []),  # tier 1 asked is extract's own tier, not a lower one
    ],
)
def test_lowering_advice(rows, advice):
    recs = lowering({"extract": 1, "code": 2, "classify": 0}, rows, min_requests=20, agreement=0.9)
    assert [(r.task, r.current_tier, r.suggested_tier, r.compared, r.agreed) for r in recs] == advice


def test_lowering_line_gives_the_evidence():
    [rec] = lowering({"extract": 1}, shadows("extract", 1, 0, 19, 1), min_requests=20)
    assert rec.agreement == pytest.approx(0.95)
    assert rec.line() == (
        "tasks.extract: 1 -> 0  (19 of 20 answers served at tier 1+ were matched at tier 0 in shadow comparisons)"
    )
