"""Table tests of the pure swap decisions: eviction, idle TTL, serve order, restoring residents."""

from __future__ import annotations

import pytest

from tiergate.local.swap_policy import (
    CannotFit,
    LoadPlan,
    ModelView,
    expired_idle,
    plan_load,
    residents_to_restore,
    serve_order,
)


def V(name, mb, state="stopped", *, busy=0, pinned=False, attached=False, used=0.0, ttl=None):
    return ModelView(name, mb, state, busy, pinned, attached, used, ttl)


PLAN_CASES = [
    # (id, models, budget, requested, expected evict tuple or CannotFit(wait_for, permanent), reason fragment)
    ("fits in free memory", [V("a", 4000, "ready"), V("b", 5000)], 10000, "b", (), "fits: needs 5000 MB, 6000 MB free"),
    ("exactly fits", [V("a", 5000, "ready"), V("b", 5000)], 10000, "b", (), "fits"),
    (
        "evicts the least recently used idle model",
        [V("a", 4000, "ready", used=10), V("b", 4000, "ready", used=5), V("c", 4000)],
        10000,
        "c",
        ("b",),
        "evicts b (least recently used idle)",
    ),
    (
        "evicts several, oldest first, only as many as needed",
        [V("a", 3000, "ready", used=1), V("b", 3000, "ready", used=2), V("c", 3000, "ready", used=3), V("d", 6000)],
        10000,
        "d",
        ("a", "b"),
        "evicts a, b",
    ),
    (
        "never evicts a busy model: skips to the next idle one",
        [V("a", 4000, "ready", busy=1, used=1), V("b", 4000, "ready", used=9), V("c", 4000)],
        10000,
        "c",
        ("b",),
        "evicts b",
    ),
    (
        "only busy models could make room: wait for them",
        [V("a", 6000, "ready", busy=2), V("b", 6000)],
        10000,
        "b",
        CannotFit("b", "", ("a",)),
        "waiting for a (2 requests in flight) to free memory: needs 6000 MB, 4000 MB free",
    ),
    (
        "idle ones are not evicted while a busy one must still go",
        [V("a", 3000, "ready", used=1), V("b", 5000, "ready", busy=1, used=2), V("c", 9000)],
        10000,
        "c",
        CannotFit("c", "", ("b",)),
        "waiting for b (1 request in flight)",
    ),
    (
        "a model being unloaded is waited for first",
        [V("a", 5000, "unloading", used=9), V("b", 5000, "ready", busy=1, used=1), V("c", 5000)],
        10000,
        "c",
        CannotFit("c", "", ("a",)),
        "waiting for a (unloading)",
    ),
    (
        "never evicts a pinned model",
        [V("p", 6000, "ready", pinned=True, used=0), V("a", 3000, "ready", used=5), V("b", 4000)],
        10000,
        "b",
        ("a",),
        "evicts a",
    ),
    (
        "pinned memory stays reserved while the pinned model restarts",
        [V("p", 6000, "failed", pinned=True), V("b", 5000)],
        10000,
        "b",
        CannotFit("b", "", (), True),
        "only 4000 MB of the 10000 MB budget is not held by pinned or attached",
    ),
    (
        "attached servers hold their memory and are never evicted",
        [V("r", 2000, "ready", attached=True), V("a", 4000, "ready", used=1), V("b", 6000)],
        10000,
        "b",
        ("a",),
        "evicts a",
    ),
    (
        "bigger than the whole budget",
        [V("a", 12000)],
        10000,
        "a",
        CannotFit("a", "", (), True),
        "needs 12000 MB but only 10000 MB",
    ),
    (
        "a loading model holds memory and cannot be evicted",
        [V("a", 6000, "loading"), V("b", 6000)],
        10000,
        "b",
        CannotFit("b", "", ("a",)),
        "waiting for a (loading)",
    ),
    (
        "failed and queued models hold nothing",
        [V("a", 6000, "failed"), V("q", 6000, "queued"), V("b", 6000)],
        10000,
        "b",
        (),
        "fits",
    ),
    (
        "ties in last use evict by name",
        [V("b", 5000, "ready", used=1), V("a", 5000, "ready", used=1), V("c", 5000)],
        10000,
        "c",
        ("a",),
        "evicts a",
    ),
    ("already loaded", [V("a", 5000, "ready")], 10000, "a", (), "already ready"),
]


@pytest.mark.parametrize(
    "models,budget,requested,expected,reason", [c[1:] for c in PLAN_CASES], ids=[c[0] for c in PLAN_CASES]
)
def test_plan_load(models, budget, requested, expected, reason):
    plan = plan_load(models, requested, budget_mb=budget)
    assert plan.model == requested
    if isinstance(expected, CannotFit):
        assert isinstance(plan, CannotFit), plan
        assert (plan.wait_for, plan.permanent) == (expected.wait_for, expected.permanent)
    else:
        assert isinstance(plan, LoadPlan), plan
        assert plan.evict == expected
    assert reason in plan.reason


EXPIRY_CASES = [
    ("past ttl", [V("a", 1, "ready", used=0, ttl=60)], 61, (), ["a"]),
    ("exactly at ttl", [V("a", 1, "ready", used=0, ttl=60)], 60, (), ["a"]),
    ("not yet", [V("a", 1, "ready", used=0, ttl=60)], 59, (), []),
    ("busy never expires", [V("a", 1, "ready", busy=1, used=0, ttl=60)], 999, (), []),
    ("no ttl never expires", [V("a", 1, "ready", used=0)], 1e9, (), []),
    ("pinned never expires", [V("a", 1, "ready", pinned=True, used=0, ttl=1)], 999, (), []),
    ("kept (the default) never expires", [V("d", 1, "ready", used=0, ttl=1)], 999, ("d",), []),
    ("only ready models", [V("a", 1, "loading", ttl=1), V("b", 1, "stopped", ttl=1)], 999, (), []),
    ("oldest first", [V("a", 1, "ready", used=5, ttl=1), V("b", 1, "ready", used=2, ttl=1)], 99, (), ["b", "a"]),
]


@pytest.mark.parametrize("models,now,keep,expected", [c[1:] for c in EXPIRY_CASES], ids=[c[0] for c in EXPIRY_CASES])
def test_expired_idle(models, now, keep, expected):
    assert expired_idle(models, now, keep=keep) == expected


ORDER_CASES = [
    (
        "grouped by model, oldest group first",
        [("b", 1), ("c", 2), ("b", 3), ("c", 4)],
        set(),
        [("b", 1), ("b", 3), ("c", 2), ("c", 4)],
    ),
    (
        "loaded model's group first",
        [("b", 1), ("c", 2), ("b", 3), ("c", 4)],
        {"c"},
        [("c", 2), ("c", 4), ("b", 1), ("b", 3)],
    ),
    ("within a group by arrival", [("a", 9), ("a", 3), ("a", 5)], set(), [("a", 3), ("a", 5), ("a", 9)]),
    ("empty", [], {"a"}, []),
]


@pytest.mark.parametrize("queue,loaded,expected", [c[1:] for c in ORDER_CASES], ids=[c[0] for c in ORDER_CASES])
def test_serve_order(queue, loaded, expected):
    assert serve_order(queue, loaded) == expected


RESTORE_CASES = [
    ("pinned stopped comes back", [V("p", 5, pinned=True)], 10, None, ["p"]),
    ("pinned loading is left alone", [V("p", 5, "loading", pinned=True)], 10, None, []),
    ("default comes back when it fits", [V("d", 5), V("x", 5, "ready")], 10, "d", ["d"]),
    ("default never evicts to come back", [V("d", 6), V("x", 5, "ready")], 10, "d", []),
    ("default waits while a failed model cools down", [V("d", 5, "failed")], 10, "d", []),
    ("no default", [V("d", 5)], 10, None, []),
    ("pinned and default", [V("p", 3, pinned=True), V("d", 5)], 10, "d", ["p", "d"]),
]


@pytest.mark.parametrize(
    "models,budget,default,expected", [c[1:] for c in RESTORE_CASES], ids=[c[0] for c in RESTORE_CASES]
)
def test_residents_to_restore(models, budget, default, expected):
    assert residents_to_restore(models, budget, default=default) == expected
