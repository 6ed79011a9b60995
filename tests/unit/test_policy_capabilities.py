"""Routing decisions on real traffic, table-driven: capabilities, embeddings, privacy, local-only mapping."""

from __future__ import annotations

import pytest

from tiergate.api.needs import anthropic_messages_needs, openai_chat_needs
from tiergate.config.catalog import build_catalog
from tiergate.config.loading import config_from_dict
from tiergate.core.capabilities import capabilities_of
from tiergate.core.errors import BadRequest, ModelNotCapable, NoCandidate
from tiergate.core.privacy import header_local_only, rule_local_only
from tiergate.core.types import EMBEDDINGS, Identity, RequestFeatures
from tiergate.router.policy import Planner, WorldSnapshot, decide

RAW = {
    "providers": {
        "box": {"api": "openai-chat", "base_url": "http://127.0.0.1:8080/v1", "local": True},
        "embedbox": {"api": "openai-chat", "base_url": "http://127.0.0.1:8090/v1", "local": True},
        "co": {"api": "openai-chat", "base_url": "https://api.example/v1"},
        "anthro": {"api": "anthropic-messages", "base_url": "https://api.anthropic.example"},
    },
    "deployments": [
        {"name": "local-8b", "provider": "box", "model": "llama3.1:8b", "tier": 0, "context_window": 32000},
        {"name": "local-vl", "provider": "box", "model": "qwen2.5-vl:7b", "tier": 0, "context_window": 32000},
        {"name": "local-embed", "provider": "embedbox", "model": "nomic-embed-text", "tier": 0},
        {
            "name": "cloud-embed",
            "provider": "co",
            "model": "text-embedding-3-small",
            "tier": 1,
            "price": {"input_per_mtok": 0.02},
        },
        {
            "name": "mini",
            "provider": "co",
            "model": "gpt-4o-mini",
            "tier": 1,
            "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
            "context_window": 128000,
        },
        {
            "name": "sonnet",
            "provider": "anthro",
            "model": "claude-sonnet-4-5",
            "tier": 3,
            "price": {"input_per_mtok": 3, "output_per_mtok": 15},
            "context_window": 200000,
        },
        {"name": "plain", "provider": "co", "model": "text-only-model", "tier": 1, "capabilities": ["chat"]},
    ],
    "aliases": {
        "cloud/frontier": ["sonnet"],
        "embed/local": ["local-embed"],
        "embed/any": ["local-embed", "cloud-embed"],
    },
    "model_map": {"claude-*": "cloud/frontier"},
    "tasks": {"coding": 1},
}
CAT = build_catalog(config_from_dict(RAW, env={}))
WORLD = WorldSnapshot()
EMERGENCY = WorldSnapshot(local_only_reason="emergency mode on (cli)")


def plan(model: str, *, needs=frozenset({"chat"}), world=WORLD, local_only=False, task=None):
    f = RequestFeatures(model=model, prompt_tokens_est=50, needs=needs, local_only=local_only, task=task)
    return decide(f, CAT, world)


def names(p) -> list[str]:
    return [c.deployment for c in p.candidates]


@pytest.mark.parametrize(
    ("model", "declared", "expected"),
    [
        ("nomic-embed-text", None, {"embeddings"}),
        ("text-embedding-3-small", None, {"embeddings"}),
        ("bge-m3", None, {"embeddings"}),
        ("llama3.1:8b", None, {"chat", "tools", "json_schema"}),
        ("gpt-4o-mini", None, {"chat", "tools", "json_schema", "vision"}),
        ("o3-mini", None, {"chat", "tools", "json_schema", "vision", "reasoning"}),
        ("claude-sonnet-4-5", None, {"chat", "tools", "json_schema", "vision", "reasoning"}),
        ("qwen2.5-vl:7b", None, {"chat", "tools", "json_schema", "vision"}),
        ("deepseek-r1:14b", None, {"chat", "tools", "json_schema", "reasoning"}),
        ("anything", frozenset({"chat"}), {"chat"}),
    ],
)
def test_capabilities_from_config_else_the_model_family(model, declared, expected):
    assert capabilities_of(model, declared=declared) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, {"chat"}),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, {"chat", "tools"}),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
            {"chat", "json_schema"},
        ),
        ({"response_format": {"type": "json_object"}}, {"chat"}),
        ({"reasoning_effort": "low"}, {"chat"}),  # a control a model without it ignores, not a need
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this"},
                            {"type": "image_url", "image_url": {"url": "data:..."}},
                        ],
                    }
                ]
            },
            {"chat", "vision"},
        ),
    ],
)
def test_what_an_openai_body_needs(body, expected):
    assert openai_chat_needs(body, body.get("messages", [])) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, {"chat"}),
        ({"tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}, {"chat", "tools"}),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, {"chat"}),  # Claude Code sends it every turn
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
                        ],
                    }
                ]
            },
            {"chat", "vision"},
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [
                                    {
                                        "type": "image",
                                        "source": {"type": "base64", "media_type": "image/png", "data": "x"},
                                    }
                                ],
                            }
                        ],
                    }
                ]
            },
            {"chat", "vision"},
        ),
    ],
)
def test_what_an_anthropic_body_needs(body, expected):
    assert anthropic_messages_needs(body, body.get("messages", [])) == expected


# --------------------------------------------------------------------------- capabilities in routing
def test_a_candidate_without_a_needed_capability_is_skipped_with_the_reason():
    p = plan("auto", needs=frozenset({"chat", "vision"}))
    assert names(p)[0] == "local-vl"
    skipped = {s.deployment: s.reason for s in p.skipped}
    assert skipped["local-8b"] == "lacks vision" and skipped["local-embed"].startswith("lacks chat")


def test_tools_skip_a_chat_only_deployment_but_escalate_past_it():
    p = plan("plain", needs=frozenset({"chat", "tools"}))
    assert "plain" not in names(p) and {s.deployment: s.reason for s in p.skipped}["plain"] == "lacks tools"


def test_nothing_capable_is_a_400_naming_what_is_missing():
    with pytest.raises(ModelNotCapable, match="lacks embeddings"):
        plan("sonnet", needs=EMBEDDINGS)
    with pytest.raises(ModelNotCapable):
        plan("local-8b", needs=EMBEDDINGS)


# --------------------------------------------------------------------------- embeddings
def test_embeddings_auto_go_to_the_local_embedding_model_and_never_to_chat():
    p = plan("auto", needs=EMBEDDINGS)
    assert names(p) == ["local-embed"]


def test_embeddings_never_change_model_unasked():
    assert names(plan("local-embed", needs=EMBEDDINGS)) == ["local-embed"]  # no escalation to cloud-embed
    assert names(plan("embed/local", needs=EMBEDDINGS)) == ["local-embed"]
    assert names(plan("embed/any", needs=EMBEDDINGS)) == ["local-embed", "cloud-embed"]  # declared interchangeable


def test_embeddings_local_only_keeps_them_local():
    raw = {**RAW, "routing": {"embeddings_local_only": True}}
    cat = build_catalog(config_from_dict(raw, env={}))
    f = RequestFeatures(model="embed/any", prompt_tokens_est=5, needs=EMBEDDINGS)
    p = decide(f, cat, WORLD)
    assert names(p) == ["local-embed"]
    assert "embeddings stay local" in {s.deployment: s.reason for s in p.skipped}["cloud-embed"]


# --------------------------------------------------------------------------- local-only serves any model locally
@pytest.mark.parametrize("model", ["sonnet", "cloud/frontier", "claude-sonnet-4-5", "claude-opus-4-1", "mini"])
def test_emergency_serves_named_cloud_models_locally(model):
    p = plan(model, world=EMERGENCY)
    assert names(p)[0] in {"local-8b", "local-vl"}
    assert all(CAT.deployments[n].local for n in names(p))
    assert "served by a local deployment" in p.candidates[0].reason


def test_local_only_picks_a_local_deployment_with_the_needed_capability():
    p = plan("sonnet", needs=frozenset({"chat", "vision"}), local_only=True)
    assert names(p) == ["local-vl"]


def test_local_only_with_no_capable_local_deployment_says_which_capability_is_missing():
    with pytest.raises(NoCandidate, match="lacks reasoning"):
        plan("sonnet", needs=frozenset({"chat", "reasoning"}), world=EMERGENCY)


def test_local_only_embeddings_are_not_swapped_for_another_models_vectors():
    with pytest.raises(NoCandidate):
        plan("cloud-embed", needs=EMBEDDINGS, world=EMERGENCY)


def test_the_planner_memo_keeps_needs_apart():
    planner = Planner(CAT)
    chat = planner.decide(RequestFeatures(model="auto", prompt_tokens_est=5), WORLD)
    vision = planner.decide(
        RequestFeatures(model="auto", prompt_tokens_est=5, needs=frozenset({"chat", "vision"})), WORLD
    )
    assert names(chat)[0] != names(vision)[0] == "local-vl"


# --------------------------------------------------------------------------- privacy
@pytest.mark.parametrize(
    ("value", "local"),
    [
        (None, False),
        ("", False),
        ("none", False),
        ("off", False),
        ("false", False),
        ("local-only", True),
        ("LOCAL-ONLY", True),
        ("local", True),
        ("local_only", True),
        ("true", True),
        ("strict", True),
        (" yes ", True),
    ],
)
def test_privacy_header_values(value, local):
    assert header_local_only(value) is local


@pytest.mark.parametrize("value", ["cloud", "locl", "maybe", "2", "local-only, please"])
def test_an_unknown_privacy_value_is_a_400_naming_the_allowed_ones(value):
    with pytest.raises(BadRequest, match="allowed: local-only"):
        header_local_only(value)


@pytest.mark.parametrize(
    ("ident", "model", "expect"),
    [
        (Identity(key_name="hr-bot"), "auto", "key hr-bot"),
        (Identity(key_name="k", agent="payroll-2"), "auto", "agent payroll-2"),
        (Identity(key_name="k", task="pii-extraction"), "auto", "task pii-extraction"),
        (Identity(key_name="k"), "local/private", "model local/private"),
        (Identity(key_name="k", agent="coder"), "auto", None),
    ],
)
def test_privacy_rules_from_config(ident, model, expect):
    rules = config_from_dict(
        {
            "privacy": {
                "local_only_keys": ["hr-*"],
                "local_only_agents": ["payroll-*"],
                "local_only_tasks": ["pii*"],
                "local_only_models": ["local/private"],
            }
        },
        env={},
    ).privacy
    why = rule_local_only(rules, ident, model)
    assert (why is None) if expect is None else (expect in why)
