"""The stand-ins' simulated capability (bench/savings' tiers): tags, profiles, seeded failure draws."""

from __future__ import annotations

import pytest

from tiergate.standins.capability import (
    JSON_FAILURES,
    TEXT_FAILURES,
    TOOL_FAILURES,
    Capability,
    Profile,
    TaskTag,
    answer_text,
    failure,
    task_tag,
)


@pytest.mark.parametrize(
    ("prompt", "tag"),
    [
        ("sys [[standin task=T1 class=medium answer_tokens=250]] rest", TaskTag("T1", "medium", 250)),
        ("[[standin class=simple task=a answer_tokens=0]]", TaskTag("a", "simple", 1)),  # at least one token
        ("[[standin task=T1 class=hard answer_tokens=5]]", None),  # not a class
        ("[[standin task=T1 class=simple answer_tokens=lots]]", None),
        ("[[standin class=simple answer_tokens=5]]", None),  # no task
        ("no tag at all", None),
    ],
)
def test_task_tag(prompt, tag):
    assert task_tag(prompt) == tag


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"profiles": {"m": {"fail": {"simple": 1.5}}}}, "fail.simple must be a number in [0, 1]"),
        ({"profiles": {"m": {"fail": {"trivial": 0.1}}}}, "fail maps classes"),
        ({"profiles": {"m": {"speed": 1}}}, "unknown profile keys ['speed']"),
        ({"profiles": {"m": {"first_s": -1}}}, "first_s must be a number >= 0"),
        ({"profiles": {"m": {"starve_below": "x"}}}, "starve_below must be an integer"),
        ({"seed": "x", "profiles": {}}, "seed must be an integer"),
        ({"seed": 1}, "expected"),
        ([], "expected"),
    ],
)
def test_bad_capability_is_refused_naming_the_field(raw, error):
    with pytest.raises(ValueError, match=error.replace("[", r"\[").replace("]", r"\]")):
        Capability.parse(raw)


def test_failures_follow_the_class_rate_and_are_fixed_by_seed_model_and_task():
    cap = Capability.parse(
        {"seed": 3, "profiles": {"small": {"fail": {"simple": 0.1, "complex": 0.8}}, "*": {"fail": {}}}}
    )
    tags = [TaskTag(f"T{i}", level, 10) for i in range(2000) for level in ("simple", "complex")]
    drawn = {t: failure(cap, "small", t, wants_json=False, calls_tool=False) for t in tags}
    simple = sum(drawn[t] is not None for t in tags if t.level == "simple") / 2000
    complex_ = sum(drawn[t] is not None for t in tags if t.level == "complex") / 2000
    assert 0.08 < simple < 0.12 and 0.77 < complex_ < 0.83
    assert {k for k in drawn.values() if k} == set(TEXT_FAILURES)
    assert drawn == {t: failure(cap, "small", t, wants_json=False, calls_tool=False) for t in tags}  # replayable
    other = Capability.parse({"seed": 4, "profiles": {"small": {"fail": {"simple": 0.1, "complex": 0.8}}}})
    assert drawn != {t: failure(other, "small", t, wants_json=False, calls_tool=False) for t in tags}
    assert all(failure(cap, "big", t, wants_json=False, calls_tool=False) is None for t in tags)  # "*": no fails


@pytest.mark.parametrize(
    ("wants_json", "calls_tool", "kinds"),
    [(False, False, TEXT_FAILURES), (True, False, JSON_FAILURES), (False, True, TOOL_FAILURES)],
)
def test_the_way_a_task_fails_is_one_its_request_can_show(wants_json, calls_tool, kinds):
    cap = Capability(1, {"m": Profile({"medium": 1.0})})
    seen = {
        failure(cap, "m", TaskTag(f"T{i}", "medium", 5), wants_json=wants_json, calls_tool=calls_tool)
        for i in range(300)
    }
    assert seen == set(kinds)


def test_answer_text_has_the_tasks_length_in_tokens():
    assert answer_text("cloud", "T1", 250).split()[0] == "[cloud]"
    assert len(answer_text("cloud", "T1", 250).split()) == 250
    assert Profile(first_s=0.5, per_token_s=0.01).delay_s(100) == pytest.approx(1.5)
