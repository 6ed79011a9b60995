"""Table tests of the pure swap decisions: eviction, the thrash guard, idle TTL, serve order,
restoring residents, and placing a request on a loaded local model."""

from __future__ import annotations

import pytest

from tiergate.core.types import Candidate, RoutePlan
from tiergate.local.swap_policy import (
    CannotFit,
    LoadPlan,
    LocalOption,
    ModelView,
    Placement,
    SwapGuard,
    expired_idle,
    place_request,
    plan_load,
    residents_to_restore,
    serve_order,
    served_first,
)


def V(name, mb, state="stopped", *, busy=0, pinned=False, attached=False, used=0.0, ttl=None, at=0.0, asked=False):
    """A model view; ``at``: when its load completed, ``asked``: a request brought it in."""
    return ModelView(name, mb, state, busy, pinned, attached, used, ttl, at, asked)


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


def G(now, *, residency=0.0, max_swaps=None, window=600.0, recent=()):
    return SwapGuard(now, residency, max_swaps, window, tuple(recent))


GUARD_CASES = [
    # (id, models, guard, expected evict tuple or CannotFit(wait_for, permanent, held, retry_at), reason fragment)
    (
        "a model a request brought in stays its minimum residency",
        [V("a", 6000, "ready", at=100, asked=True), V("b", 6000)],
        G(110, residency=30),
        CannotFit("b", "", (), False, True, 130),
        "swap held: a (loaded 10s ago) stays at least min_residency_s 30s",
    ),
    (
        "after its residency it may be evicted",
        [V("a", 6000, "ready", at=100, asked=True), V("b", 6000)],
        G(130, residency=30),
        ("a",),
        "evicts a",
    ),
    (
        "the default or a model loaded at start is not protected (it cost no swap)",
        [V("a", 6000, "ready", at=100, asked=False), V("b", 6000)],
        G(101, residency=30),
        ("a",),
        "evicts a",
    ),
    (
        "a protected model is passed over for an older idle one",
        [
            V("young", 4000, "ready", used=9, at=95, asked=True),
            V("old", 4000, "ready", used=5, asked=True),
            V("c", 4000),
        ],
        G(100, residency=30),
        ("old",),
        "evicts old",
    ),
    (
        "a busy model inside its residency is not drained either",
        [V("a", 6000, "ready", busy=1, at=100, asked=True), V("b", 6000)],
        G(105, residency=30),
        CannotFit("b", "", (), False, True, 130),
        "swap held: a (loaded 5s ago)",
    ),
    (
        "residency never stops a load that fits",
        [V("a", 4000, "ready", at=100, asked=True), V("b", 4000)],
        G(100, residency=30),
        (),
        "fits",
    ),
    (
        "the swap rate bound holds a swap",
        [V("a", 6000, "ready"), V("b", 6000)],
        G(50, max_swaps=3, window=100, recent=(10, 20, 30)),
        CannotFit("b", "", (), False, True, 110),
        "swap held: 3 swaps in the last 100s (max_swaps 3); it would evict a",
    ),
    (
        "swaps older than the window do not count",
        [V("a", 6000, "ready"), V("b", 6000)],
        G(110, max_swaps=3, window=100, recent=(10, 20, 30)),
        ("a",),
        "evicts a",
    ),
    (
        "the hold ends when enough swaps leave the window",
        [V("a", 6000, "ready"), V("b", 6000)],
        G(50, max_swaps=2, window=100, recent=(10, 20, 30)),
        CannotFit("b", "", (), False, True, 120),
        "3 swaps in the last 100s (max_swaps 2)",
    ),
    (
        "the rate bound never stops a load that fits",
        [V("a", 4000, "ready"), V("b", 4000)],
        G(50, max_swaps=1, window=100, recent=(40,)),
        (),
        "fits",
    ),
    (
        "the rate bound holds draining a busy model for a swap",
        [V("a", 6000, "ready", busy=1), V("b", 6000)],
        G(50, max_swaps=1, window=100, recent=(40,)),
        CannotFit("b", "", (), False, True, 140),
        "it would evict a",
    ),
    (
        "waiting for a model already unloading is not a swap",
        [V("a", 6000, "unloading"), V("b", 6000)],
        G(50, max_swaps=1, window=100, recent=(40,)),
        CannotFit("b", "", ("a",)),
        "waiting for a (unloading)",
    ),
    (
        "no bound",
        [V("a", 6000, "ready"), V("b", 6000)],
        G(50, max_swaps=None, recent=(10, 20, 30, 40)),
        ("a",),
        "evicts a",
    ),
]


@pytest.mark.parametrize("models,guard,expected,reason", [c[1:] for c in GUARD_CASES], ids=[c[0] for c in GUARD_CASES])
def test_plan_load_with_the_swap_guard(models, guard, expected, reason):
    requested = models[-1].name
    plan = plan_load(models, requested, budget_mb=10000, guard=guard)
    if isinstance(expected, CannotFit):
        assert isinstance(plan, CannotFit), plan
        assert (plan.wait_for, plan.permanent, plan.held, plan.retry_at) == (
            expected.wait_for,
            expected.permanent,
            expected.held,
            expected.retry_at,
        )
    else:
        assert isinstance(plan, LoadPlan), plan
        assert plan.evict == expected
    assert reason in plan.reason


def Opt(deployment, tier, model=None):
    return LocalOption(deployment, model, tier)


# The setup: small (tier 0, the default) and big (tier 1) share a budget that holds one;
# cloud-cheap is tier 0 and cloud-mid tier 1. ``ideal`` is each request's plan as if both were loaded.
CLASSIFY = [Opt("local-small", 0, "small"), Opt("cloud-cheap", 0), Opt("local-big", 1, "big"), Opt("cloud-mid", 1)]
CODE = [Opt("local-big", 1, "big"), Opt("cloud-mid", 1)]
CLOUD = {"cloud-cheap", "cloud-mid"}

PLACE_CASES = [
    # (id, ideal, available, states, by_tier, expected Placement(serve, load))
    (
        "the loaded big model serves a classification: no swap back to the default",
        CLASSIFY,
        CLOUD | {"local-big"},
        {"small": "stopped", "big": "ready"},
        True,
        ("local-big", None),
    ),
    (
        "while big loads, a classification does not bring the default back",
        CLASSIFY,
        CLOUD,
        {"small": "unloading", "big": "loading"},
        True,
        (None, None),
    ),
    (
        "a load queued counts as loading",
        CLASSIFY,
        CLOUD,
        {"small": "stopped", "big": "queued"},
        True,
        (None, None),
    ),
    (
        "coding with only the default loaded loads big (the one swap)",
        CODE,
        {"cloud-mid"},
        {"small": "ready", "big": "stopped"},
        True,
        (None, "big"),
    ),
    (
        "while big loads, coding goes on to the cloud without asking again",
        CODE,
        {"cloud-mid"},
        {"small": "unloading", "big": "loading"},
        True,
        (None, "big"),
    ),
    (
        "the default is loaded again when no local model reaches the tier",
        CLASSIFY,
        CLOUD,
        {"small": "stopped", "big": "failed"},
        True,
        (None, "small"),
    ),
    (
        "a loaded model below the preferred tier does not serve",
        [Opt("local-big", 1, "big"), Opt("local-small", 0, "small"), Opt("cloud-mid", 1)],
        {"local-small", "cloud-mid"},
        {"small": "ready", "big": "stopped"},
        True,
        (None, "big"),
    ),
    (
        "the first loaded model in plan order serves",
        [Opt("local-a", 0, "a"), Opt("local-b", 1, "b"), Opt("local-c", 1, "c")],
        {"local-b", "local-c"},
        {"a": "stopped", "b": "ready", "c": "ready"},
        True,
        ("local-b", None),
    ),
    (
        "a request naming its deployment gets that model loaded",
        CLASSIFY,
        CLOUD | {"local-big"},
        {"small": "stopped", "big": "ready"},
        False,
        (None, "small"),
    ),
    (
        "the preferred model is serving: nothing to do",
        CLASSIFY,
        CLOUD | {"local-small"},
        {"small": "ready", "big": "stopped"},
        True,
        (None, None),
    ),
    (
        "the preferred deployment is not a managed local model: nothing to do",
        [Opt("cloud-cheap", 0), Opt("local-big", 1, "big")],
        {"local-big"},
        {"big": "ready"},
        True,
        (None, None),
    ),
    ("no candidates", [], set(), {}, True, (None, None)),
]


@pytest.mark.parametrize(
    "ideal,available,states,by_tier,expected", [c[1:] for c in PLACE_CASES], ids=[c[0] for c in PLACE_CASES]
)
def test_place_request(ideal, available, states, by_tier, expected):
    place = place_request(ideal, available=available, states=states, by_tier=by_tier)
    assert (place.serve, place.load) == expected


def test_served_first_moves_the_loaded_model_to_the_front_and_says_why():
    plan = RoutePlan(
        "auto",
        "auto",
        (Candidate("cloud-cheap", 0, "cheapest"), Candidate("local-big", 1, "escalation"), Candidate("m", 1, "x")),
    )
    place = Placement(serve="local-big", reason="big is loaded")
    moved = served_first(plan, place)
    assert [c.deployment for c in moved.candidates] == ["local-big", "cloud-cheap", "m"]
    assert moved.candidates[0].reason == "escalation; big is loaded"
    assert [c.deployment for c in plan.candidates] == ["cloud-cheap", "local-big", "m"]  # the plan is not changed
    assert served_first(plan, Placement()) is plan
    assert served_first(plan, Placement(serve="cloud-cheap")) is plan
    assert served_first(plan, Placement(serve="not-in-plan")) is plan


ROUTED = {
    "providers": {"cloudco": {"api": "openai-chat", "base_url": "https://cloud.example/v1"}},
    "deployments": [
        {"name": "claude-direct", "provider": "cloudco", "model": "c-1", "tier": 1, "context_window": 8000},
    ],
    "aliases": {"local/fast": ["claude-direct"]},
    "model_map": {"claude-*haiku*": "local/fast", "claude-*": "task/coding"},
}


@pytest.mark.parametrize(
    "model,by_tier",
    [
        ("auto", True),
        ("", True),
        ("task/coding", True),
        (" auto ", True),
        ("claude-sonnet-4-5", True),  # model_map -> task/coding
        ("claude-3-haiku", False),  # model_map -> an alias
        ("local/fast", False),
        ("claude-direct", False),  # a deployment's name: model_map (claude-*) is only for unknown names
    ],
)
def test_which_requests_are_routed_by_tier(model, by_tier):
    """Only these may be placed on another loaded local model (the executor's place_request input)."""
    from tiergate.config.catalog import build_catalog
    from tiergate.config.loading import config_from_dict
    from tiergate.router.local_placement import routed_by_tier as _routed_by_tier

    assert _routed_by_tier(model, build_catalog(config_from_dict(ROUTED, env={}))) is by_tier
