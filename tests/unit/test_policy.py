"""Routing policy, table-driven: (request, world) -> ordered candidates with reasons."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiergate.config.catalog import build_catalog
from tiergate.config.loading import config_from_dict
from tiergate.core.catalog import Catalog
from tiergate.core.errors import ContextTooLarge, ModelNotFound, NoCandidate
from tiergate.core.types import CHAT, RequestFeatures
from tiergate.router.policy import WorldSnapshot, decide

RAW = {
    "providers": {
        "box": {"api": "openai-chat", "base_url": "http://127.0.0.1:8080/v1", "local": True},
        "box2": {"api": "openai-chat", "base_url": "http://127.0.0.1:8081/v1", "local": True},
        "cheapco": {"api": "openai-chat", "base_url": "https://cheap.example/v1"},
        "midco": {"api": "openai-chat", "base_url": "https://mid.example/v1"},
        "anthro": {"api": "anthropic-messages", "base_url": "https://api.anthropic.example"},
    },
    "deployments": [
        {"name": "local-8b", "provider": "box", "model": "llama-8b", "tier": 0, "context_window": 8192},
        {
            "name": "local-3b",
            "provider": "box2",
            "model": "llama-3b",
            "tier": 0,
            "context_window": 4096,
            "max_output_tokens": 512,
        },
        {
            "name": "cheap",
            "provider": "cheapco",
            "model": "mini",
            "tier": 1,
            "context_window": 128000,
            "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
        },
        {
            "name": "cheaper",
            "provider": "cheapco",
            "model": "nano",
            "tier": 1,
            "context_window": 16000,
            "price": {"input_per_mtok": 0.05, "output_per_mtok": 0.2},
        },
        {
            "name": "mid",
            "provider": "midco",
            "model": "mid-1",
            "tier": 2,
            "context_window": 128000,
            "price": {"input_per_mtok": 1, "output_per_mtok": 5},
        },
        {
            "name": "sonnet",
            "provider": "anthro",
            "model": "claude-sonnet",
            "tier": 3,
            "context_window": 200000,
            "price": {"input_per_mtok": 3, "output_per_mtok": 15},
        },
    ],
    "aliases": {"local/fast": ["local-3b", "local-8b"], "cloud/frontier": ["sonnet"]},
    "tasks": {"classification": 0, "coding": 1, "reasoning": 3},
    "routing": {"fallbacks": {"local-8b": ["mid"]}},
    "model_map": {"claude-*haiku*": "local/fast", "claude-*": "task/coding"},
}
CAT = build_catalog(config_from_dict(RAW, env={}))
ALL = WorldSnapshot()
OPENAI_ONLY = WorldSnapshot(reachable_apis=frozenset({"openai-chat"}))


def names(plan):
    return [c.deployment for c in plan.candidates]


@pytest.mark.parametrize(
    ("features", "world", "expected"),
    [
        # auto with no task: tier 0 cheapest first (equal price -> by name), then escalation up the tiers
        (RequestFeatures("auto"), ALL, ["local-3b", "local-8b", "cheaper", "cheap", "mid", "sonnet"]),
        # a task's minimum tier: coding starts at tier 1, cheapest first
        (RequestFeatures("auto", task="coding"), ALL, ["cheaper", "cheap", "mid", "sonnet"]),
        (RequestFeatures("task/reasoning"), ALL, ["sonnet"]),
        # an unknown task is treated as tier 0
        (RequestFeatures("task/poetry"), ALL, ["local-3b", "local-8b", "cheaper", "cheap", "mid", "sonnet"]),
        # alias order is the user's order, then escalation from the alias's tier
        (RequestFeatures("local/fast"), ALL, ["local-3b", "local-8b", "cheaper", "cheap", "mid", "sonnet"]),
        # a deployment, then its LiteLLM-style fallbacks, then same tier, then up
        (RequestFeatures("local-8b"), ALL, ["local-8b", "mid", "local-3b", "cheaper", "cheap", "sonnet"]),
        # requesting by upstream model id works too
        (RequestFeatures("mini"), ALL, ["cheap", "cheaper", "mid", "sonnet"]),
        # privacy: never leaves local providers
        (RequestFeatures("auto", task="reasoning", local_only=False), ALL, ["sonnet"]),
        (RequestFeatures("auto", local_only=True), ALL, ["local-3b", "local-8b"]),
        # privacy outranks a task's tier floor: served by the strongest local model rather than refused
        (RequestFeatures("task/reasoning", local_only=True), ALL, ["local-3b", "local-8b"]),
        # context window: a 16.5k-token need skips the windows of 4k, 8k and 16k
        (RequestFeatures("auto", prompt_tokens_est=15500, max_tokens=1000), ALL, ["cheap", "mid", "sonnet"]),
        # max_tokens is clamped to a deployment's output limit before the window check (128k from Claude Code):
        # local-3b (limit 512) fits; the 128k windows without a limit cannot hold 3k + 128k; sonnet's 200k can
        (RequestFeatures("local/fast", prompt_tokens_est=3000, max_tokens=128000), ALL, ["local-3b", "sonnet"]),
        # model_map: vendor names a client cannot change are mapped by glob, first match wins
        (
            RequestFeatures("claude-3-5-haiku-20241022"),
            ALL,
            ["local-3b", "local-8b", "cheaper", "cheap", "mid", "sonnet"],
        ),
        (RequestFeatures("claude-sonnet-4-5"), ALL, ["cheaper", "cheap", "mid", "sonnet"]),
        # open breakers are skipped
        (
            RequestFeatures("auto"),
            WorldSnapshot(unavailable={"local-3b": "breaker open"}),
            ["local-8b", "cheaper", "cheap", "mid", "sonnet"],
        ),
        # a protocol the client cannot reach is skipped
        (RequestFeatures("auto", task="coding"), OPENAI_ONLY, ["cheaper", "cheap", "mid"]),
    ],
)
def test_candidate_order(features, world, expected):
    assert names(decide(features, CAT, world)) == expected


def test_escalation_can_be_disabled():
    raw = {**RAW, "routing": {"escalate": False}}
    cat = build_catalog(config_from_dict(raw, env={}))
    assert names(decide(RequestFeatures("local/fast"), cat, ALL)) == ["local-3b", "local-8b"]


def test_reasons_explain_each_candidate_and_skip():
    plan = decide(
        RequestFeatures("auto", task="coding"), CAT, WorldSnapshot(unavailable={"cheaper": "breaker open (x)"})
    )
    assert plan.candidates[0].deployment == "cheap"
    assert "task=coding needs tier>=1" in plan.candidates[0].reason
    assert plan.candidates[1].reason == "escalation to tier 2"
    assert [(s.deployment, s.reason) for s in plan.skipped] == [("cheaper", "breaker open (x)")]


def test_local_only_with_all_local_down_is_an_error_not_the_cloud():
    world = WorldSnapshot(unavailable={"local-3b": "breaker open", "local-8b": "breaker open"})
    with pytest.raises(NoCandidate, match="local-only"):
        decide(RequestFeatures("auto", local_only=True), CAT, world)


def test_unknown_model_lists_what_exists():
    with pytest.raises(ModelNotFound) as ei:
        decide(RequestFeatures("gpt-9"), CAT, ALL)
    assert "local/fast" in ei.value.message and ei.value.status == 404


def test_prompt_too_big_for_every_window_is_a_400():
    with pytest.raises(ContextTooLarge) as ei:
        decide(RequestFeatures("auto", prompt_tokens_est=300000), CAT, ALL)
    assert ei.value.status == 400


def test_decide_is_deterministic():
    f = RequestFeatures("auto", prompt_tokens_est=50)
    assert decide(f, CAT, ALL) == decide(f, CAT, ALL)


def test_model_map_explains_itself():
    plan = decide(RequestFeatures("claude-sonnet-4-5"), CAT, ALL)
    assert plan.candidates[0].reason.startswith("model_map claude-sonnet-4-5 -> task/coding; task=coding")


# ---------------------------------------------------------------- the memoised planner used per request
def _with_prices(**tier1: tuple[float, float]) -> Catalog:
    raw = {
        **RAW,
        "deployments": [
            {**d, "price": {"input_per_mtok": tier1[d["name"]][0], "output_per_mtok": tier1[d["name"]][1]}}
            if d["name"] in tier1
            else d
            for d in RAW["deployments"]
        ],
    }
    return build_catalog(config_from_dict(raw, env={}))


@pytest.mark.parametrize(
    ("prices", "independent"),
    [
        ({}, True),  # cheaper is cheaper on both input and output
        ({"cheap": (0.15, 0.6), "cheaper": (0.15, 0.6)}, True),  # equal: by name, whatever the tokens
        ({"cheap": (0.10, 0.6), "cheaper": (0.15, 0.2)}, False),  # cheap on input, cheaper on output
    ],
)
def test_order_is_token_independent(prices, independent):
    from tiergate.router.policy import order_is_token_independent

    assert order_is_token_independent(_with_prices(**prices)) is independent


CROSSED = _with_prices(cheap=(0.10, 0.6), cheaper=(0.15, 0.2))
WORLDS = [
    ALL,
    OPENAI_ONLY,
    WorldSnapshot(unavailable={"cheaper": "breaker open"}),
    WorldSnapshot(local_only_reason="emergency mode on (by hand)"),
    WorldSnapshot(tier_cap=1, tier_cap_reason="downgraded to tier<=1: budget"),
    WorldSnapshot(context_reroute_at=0.5),
]
REQUESTS = [
    RequestFeatures("auto"),
    RequestFeatures("auto", task="coding"),
    RequestFeatures("auto", task="coding", local_only=True),
    RequestFeatures("task/reasoning"),
    RequestFeatures("local/fast"),
    RequestFeatures("local-8b"),
    RequestFeatures("claude-3-5-haiku"),
    RequestFeatures("claude-sonnet-4"),
    RequestFeatures("nope"),
    RequestFeatures("auto", task="coding", prompt_tokens_est=10, max_tokens=4000),  # output-heavy
    RequestFeatures("auto", task="coding", prompt_tokens_est=12000, max_tokens=1),  # input-heavy; past nano's window
    RequestFeatures("auto", prompt_tokens_est=5000, max_tokens=100),  # past local-3b's window
]


def _outcome(fn):
    try:
        return fn()
    except Exception as exc:  # the same error is part of "the same result"
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("catalog", [CAT, CROSSED], ids=["token-independent", "crossed-prices"])
def test_planner_gives_exactly_what_decide_gives(catalog):
    from tiergate.router.policy import Planner

    planner = Planner(catalog)
    assert planner.memoise is (catalog is CAT)
    for _ in range(2):  # the second pass is served from the memo
        for world in WORLDS:
            for f in REQUESTS:
                assert _outcome(partial(planner.decide, f, world)) == _outcome(partial(decide, f, catalog, world)), (
                    f,
                    world,
                )
    # crossed prices: the order really does follow the tokens, so memoising it would be wrong
    out_heavy, in_heavy = (
        RequestFeatures("auto", task="coding", prompt_tokens_est=p, max_tokens=m) for p, m in ((10, 4000), (4000, 1))
    )
    if catalog is CROSSED:
        assert (
            names(planner.decide(out_heavy, ALL))[0] == "cheaper" and names(planner.decide(in_heavy, ALL))[0] == "cheap"
        )


_MODELS = ["auto", "task/coding", "task/reasoning", "local/fast", "local-8b", "mini", "claude-sonnet-4", "nope"]
_WINDOWS = [0, 3000, 4096, 4097, 8000, 8192, 12000, 16000, 16001, 64000, 128000, 128001, 200000, 200001]


_SHAPES = st.tuples(
    st.sampled_from(_MODELS),
    st.sampled_from([None, "coding", "poetry"]),
    st.booleans(),
    st.sampled_from([frozenset(), frozenset({"tools"}), frozenset({"vision"})]),
)
_WORLDS = st.builds(
    WorldSnapshot,
    unavailable=st.sampled_from([{}, {}, {"cheaper": "breaker open"}, {"cheap": "blocked by a budget"}]),
    reachable_apis=st.sampled_from([ALL.reachable_apis, OPENAI_ONLY.reachable_apis]),
    local_only_reason=st.sampled_from([None, None, None, "emergency mode on (by hand)"]),
    tier_cap=st.sampled_from([None, None, None, 1]),
    context_reroute_at=st.sampled_from([None, None, 0.5, 0.9]),
)


@given(
    st.lists(_SHAPES, min_size=1, max_size=3),
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.sampled_from(_WINDOWS) | st.integers(0, 250_000),
            st.none() | st.sampled_from([1, 512, 4000, 100_000]),
            _WORLDS,
        ),
        min_size=1,
        max_size=40,
    ),
)
@settings(max_examples=300, deadline=None)
def test_a_planner_reusing_plans_gives_what_decide_gives_whatever_comes_in_between(shapes, requests):
    """The memo hands back whole plans while nothing can skip a deployment: any sequence of requests and
    worlds (a breaker opening, a prompt past a window, a client reaching fewer apis) gets decide's answer."""
    from tiergate.router.policy import Planner

    planner = Planner(CAT)
    for shape, prompt, max_tokens, world in requests:
        model, task, local_only, needs = shapes[shape % len(shapes)]
        f = RequestFeatures(model, task, prompt, max_tokens=max_tokens, local_only=local_only, needs=CHAT | needs)
        # first the same shape, tiny, in a world that skips nothing: its plan is what the memo would reuse
        tiny, calm = replace(f, prompt_tokens_est=0, max_tokens=None), replace(world, unavailable={})
        assert _outcome(partial(planner.decide, tiny, calm)) == _outcome(partial(decide, tiny, CAT, calm))
        assert _outcome(partial(planner.decide, f, world)) == _outcome(partial(decide, f, CAT, world)), (f, world)


@pytest.mark.parametrize("memoised", [True, False])
def test_a_balanced_alias_takes_turns_by_weight_and_keeps_the_rest_for_failover(memoised):
    from tiergate.router.policy import Planner

    raw = {
        "auth": {"required": False},
        "providers": {p: {"api": "openai-chat", "base_url": f"https://{p}.example/v1"} for p in ("a", "b", "c")},
        "deployments": [
            {"name": "a", "provider": "a", "model": "m", "tier": 1, "weight": 3},
            {"name": "b", "provider": "b", "model": "m", "tier": 1},
            {"name": "c", "provider": "c", "model": "m", "tier": 1, "weight": 0},
            {"name": "other", "provider": "c", "model": "m2", "tier": 2},
        ],
        "aliases": {"group": ["a", "b", "c"], "plain": ["a", "b"]},
        "routing": {"balance": ["group"], "fallbacks": {"group": ["other"]}},
    }
    if not memoised:  # prices that make the order depend on the request's tokens: every request planned afresh
        raw["deployments"][0]["price"] = {"input_per_mtok": 1, "output_per_mtok": 9}
        raw["deployments"][1]["price"] = {"input_per_mtok": 9, "output_per_mtok": 1}
    planner = Planner(build_catalog(config_from_dict(raw, env={})))
    assert planner.memoise is memoised
    plans = [names(planner.decide(RequestFeatures("group"), ALL)) for _ in range(8)]
    assert [p[0] for p in plans].count("a") == 6 and [p[0] for p in plans].count("b") == 2  # 3 : 1, c never first
    assert plans[0] == ["a", "b", "c", "other"] and ["b", "c", "a", "other"] in plans  # the rest in turn, then fallback
    assert {tuple(names(planner.decide(RequestFeatures("plain"), ALL))) for _ in range(3)} == {("a", "b", "c", "other")}
    assert names(decide(RequestFeatures("group"), planner.catalog, ALL)) == ["a", "b", "c", "other"]  # decide: pure
