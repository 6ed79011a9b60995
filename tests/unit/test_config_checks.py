"""check-config finds every problem at once, in one path style; names are only offered when they can be served."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tiergate.api.auth import identity_from_headers
from tiergate.config.catalog import build_catalog
from tiergate.config.checks import Problem, field_path, unreachable_tasks
from tiergate.config.loading import check_config_dict, config_from_dict, yaml_error_message
from tiergate.core.types import RequestFeatures
from tiergate.local.autoconfig import DEFAULT_TASKS, build_raw_config
from tiergate.local.discovery import DiscoveredRuntime
from tiergate.router.policy import WorldSnapshot, decide

KEY = {"master_key": "env:TG_KEY"}
ENV = {"TG_KEY": "sk-test"}
BOX = {"box": {"api": "openai-chat", "base_url": "http://127.0.0.1:8080/v1", "local": True}}
CLOUD = {"cloud": {"api": "openai-chat", "base_url": "https://cloud.example/v1"}}
LOCAL = {"name": "local-8b", "provider": "box", "model": "llama", "tier": 0}
EMBED = {"name": "nomic", "provider": "box", "model": "nomic-embed-text-v1.5"}
STRONG = {"name": "strong", "provider": "cloud", "model": "big", "tier": 3}
GOOD = {"auth": KEY, "providers": BOX, "deployments": [LOCAL]}
GGUF = "/models/qwen.gguf"
MANAGED = {
    "local_models": {"budget_mb": 8000, "models": [{"name": "qwen", "gguf": GGUF, "memory_mb": 4000}]},
    "deployments": [{"name": "local-qwen", "local_model": "qwen"}],
}


def check(raw, *, env=ENV, files=()) -> list[Problem]:
    _, problems = check_config_dict(raw, env=env, exists=lambda p: str(p) in files)
    return problems


# (config, [(path, fragment of the message, is a warning)]): every problem of the config, nothing else
CASES = [
    pytest.param(GOOD, [], id="valid"),
    pytest.param({}, [("", "the config is empty", False)], id="empty file"),
    pytest.param(
        {"auth": KEY, "server": {"port": 4001}},
        [("deployments", "none configured: every request would get 503", False)],
        id="no deployments",
    ),
    pytest.param(
        {**GOOD, "tasks": {"classification": 0, "coding": 1, "reasoning": 3}},
        [
            ("tasks.coding", "needs tier>=1, but the highest deployment tier is 0 (local-8b)", False),
            ("tasks.reasoning", "needs tier>=3", False),
        ],
        id="tasks above every tier",
    ),
    pytest.param(
        {**GOOD, "providers": {**BOX, **CLOUD}, "deployments": [LOCAL, STRONG], "tasks": {"reasoning": 3}},
        [],
        id="task tier reached",
    ),
    pytest.param(
        {"auth": KEY, **MANAGED},
        [("local_models.models[0].gguf", f"file not found: {GGUF}; local-qwen cannot be served", False)],
        id="missing gguf",
    ),
    pytest.param(
        {
            "auth": KEY,
            **MANAGED,
            "local_models": {"budget_mb": 8000, "models": [{"name": "qwen", "gguf": "qwen.gguf", "memory_mb": 1}]},
        },
        [("local_models.models[0].gguf", "a relative path is read from the directory serve runs in", False)],
        id="missing relative gguf",
    ),
    pytest.param(
        {**GOOD, "auth": {**KEY, "required": False}},
        [("auth.required", "anyone who can reach 127.0.0.1:4000", True)],
        id="auth off",
    ),
    pytest.param(
        {**GOOD, "auth": {}},
        [("auth.master_key", "not set: serve starts only if the ledger already holds virtual keys", True)],
        id="no master key",
    ),
    pytest.param(
        {**GOOD, "auth": {"master_key": "sk-literal"}},
        [("auth.master_key", "literal secret in config; prefer env:NAME", True)],
        id="literal secret",
    ),
    pytest.param(
        {**GOOD, "deployments": [LOCAL, EMBED], "aliases": {"embed/local": ["local-8b"], "vectors": ["nomic"]}},
        [("aliases.embed/local", "named for embeddings, but none of its members can embed (local-8b: chat", False)],
        id="embeddings alias to a chat-only deployment",
    ),
    pytest.param(
        {
            **GOOD,
            "deployments": [LOCAL, EMBED, {**LOCAL, "name": "both", "capabilities": ["chat", "embeddings"]}],
            "aliases": {"embed/local": ["both"], "smart": ["local-8b", "both"]},
        },
        [],
        id="a member that chats and embeds mixes nothing",
    ),
    pytest.param(
        {
            **GOOD,
            "deployments": [LOCAL, EMBED],
            "aliases": {"group": ["nomic", "local-8b"]},
            "routing": {"balance": ["group"]},
        },
        [
            (
                "aliases.group",
                "embedding-only deployments (nomic) and chat-only ones (local-8b): embeddings for this model group",
                True,
            )
        ],
        id="model group of an embedding and a chat deployment",
    ),
    pytest.param(
        {
            **GOOD,
            "deployments": [LOCAL, EMBED],
            "aliases": {"vectors": ["nomic"]},
            "model_map": {"claude-*": "vectors"},
        },
        [("model_map.claude-*", "maps to vectors, which only embeds (nomic): chat requests for claude-*", False)],
        id="chat names mapped to an embedding model",
    ),
    pytest.param(
        {
            **GOOD,
            "deployments": [LOCAL, EMBED],
            "routing": {"fallbacks": {"nomic": ["local-8b"], "local-8b": ["nomic"]}},
        },
        [
            (
                "routing.fallbacks.nomic",
                "nomic only serves embeddings, but its fallback local-8b only serves chat",
                True,
            ),
            (
                "routing.fallbacks.local-8b",
                "local-8b only serves chat, but its fallback nomic only serves embeddings",
                True,
            ),
        ],
        id="fallbacks across embeddings and chat",
    ),
    pytest.param(
        {**GOOD, "aliases": {"fast": []}},
        [("aliases.fast", "names no deployment", False)],
        id="alias to nothing",
    ),
    pytest.param(
        {
            **GOOD,
            "deployments": [LOCAL, {"name": "x", "provider": "nope", "model": "m"}],
            "aliases": {"fast": ["ghost"]},
            "routing": {"fallbacks": {"local-8b": ["phantom"]}, "balance": ["fast", "slow"], "cheapest_first": ["x"]},
        },
        [
            ("deployments[1].provider", "unknown provider 'nope'; allowed: box", False),
            ("aliases.fast", "unknown deployment 'ghost'; allowed: local-8b, x", False),
            ("routing.fallbacks.local-8b", "unknown deployment or alias 'phantom'", False),
            ("routing.balance[1]", "unknown alias 'slow'; allowed: fast", False),
            ("routing.cheapest_first[0]", "unknown alias 'x'; allowed: fast", False),
        ],
        id="every dangling name at once",
    ),
    pytest.param(
        {
            **GOOD,
            **MANAGED,
            "deployments": [
                LOCAL,
                LOCAL,
                {"name": "y", "provider": "box"},
                {**LOCAL, "name": "z", "local_model": "qwen"},
            ],
        },
        [
            ("deployments", "duplicate names local-8b", False),
            ("deployments[2]", "provider and model are required (or local_model)", False),
            ("deployments[3]", "give either provider or local_model, not both", False),
        ],
        id="deployment rows",
    ),
    pytest.param(
        {
            **GOOD,
            "providers": {**BOX, "cloud": {"api": "openai", "base_url": "https://cloud.example/v1"}},
            "deployments": [LOCAL, {"name": "big", "provider": "clod", "model": "m", "tier": "high"}],
            "aliases": {"fast": []},
            "model_map": {"claude-*": "ghost"},
        },
        [
            ("providers.cloud.api", "allowed values: openai-chat, anthropic-messages", False),
            ("deployments[1].tier", "Input should be a valid integer", False),
            ("deployments[1].provider", "unknown provider 'clod'; allowed: box, cloud", False),
            ("aliases.fast", "names no deployment", False),
            ("model_map.claude-*", "unknown target 'ghost'; allowed: auto, task/<type>, big, fast, local-8b", False),
        ],
        id="field errors and dangling names in one run",
    ),
    pytest.param(
        {**GOOD, "auth": {"master_key": "env:TG_UNSET"}, "deployments": [{**LOCAL, "tier": 12}], "serverz": {}},
        [
            ("auth.master_key", "environment variable TG_UNSET is not set", False),
            ("deployments[0].tier", "less than or equal to 9", False),
            ("serverz", "unknown field; allowed fields: ", False),
        ],
        id="unset variable and field errors together",
    ),
    pytest.param(
        {**GOOD, "local_models": {"budget_mb": 100, "models": [{"name": "q", "gguf": GGUF, "memory_mb": 200}]}},
        [("local_models.models[0].memory_mb", "200 exceeds budget_mb 100", False)],
        id="a nested validator's path joins the field path",
    ),
    pytest.param(
        {**GOOD, "tasks": {"coding": 0, "CODING": 0}},
        [("tasks", "given twice (task names ignore case)", False)],
        id="task names ignore case",
    ),
    pytest.param(
        {**GOOD, "limits": [{"scope": "key", "match": "a", "rpm": 1}, {"scope": "key", "match": "a", "tpm": 9}]},
        [("limits", "two limits share scope and match key:a; put rpm, tpm", False)],
        id="duplicate limits",
    ),
    pytest.param(
        {"model_list": [], "general_settingz": {}},
        [("general_settingz", "unknown top-level key in a LiteLLM config; allowed: alerts, aliases, auth, ", False)],
        id="a LiteLLM config",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_every_problem_in_one_run(raw, expected):
    problems = check(raw)
    got = [(p.path, p.warning) for p in problems]
    assert got == [(path, warning) for path, _, warning in expected], problems
    for p, (_, fragment, _) in zip(problems, expected, strict=True):
        assert fragment in p.message, p
        assert "['" not in str(p) and "{'" not in str(p), f"a Python repr in {p}"


def test_a_present_gguf_is_no_problem():
    assert check({"auth": KEY, **MANAGED}, files=(GGUF,)) == []


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("deployments", 0, "provider"), "deployments[0].provider"),
        (("aliases", "local/fast", 1), "aliases.local/fast[1]"),
        (("local_models", "models", 2, "gguf"), "local_models.models[2].gguf"),
        ((), ""),
    ],
)
def test_one_path_style(loc, path):
    assert field_path(loc) == path


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("providers: [unclosed\n", "c.yaml:2:1", "while parsing a flow sequence at line 1"),
        ("a: 1\nb: : 2\n", "c.yaml:2:4", "mapping values are not allowed here"),
        ("a:\n\tb: 1\n", "c.yaml:2:1", "found character '\\t' that cannot start any token"),
    ],
)
def test_yaml_errors_name_the_file_and_line(text, where, what):
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as exc:
        message = yaml_error_message(Path("c.yaml"), exc)
    assert message.startswith(f"{where}: not valid YAML: ") and what in message, message
    assert "<unicode string>" not in message


@pytest.mark.parametrize(
    ("tasks", "tiers", "unreachable"),
    [
        ({"coding": 1, "classification": 0}, [0, 0], {"coding": 1}),
        ({"coding": 1}, [0, 1], {}),
        ({"coding": 0}, [], {"coding": 0}),
    ],
)
def test_unreachable_tasks(tasks, tiers, unreachable):
    assert unreachable_tasks(tasks, tiers) == unreachable


def catalog(raw):
    return build_catalog(config_from_dict(raw, env=ENV))


def test_models_list_only_what_can_be_served():
    local_only = catalog({**GOOD, "tasks": {"classification": 0, "coding": 1}, "aliases": {"fast": ["local-8b"]}})
    assert local_only.model_names() == ["auto", "task/classification", "fast", "local-8b"]
    both = catalog({**GOOD, "providers": {**BOX, **CLOUD}, "deployments": [LOCAL, STRONG], "tasks": {"coding": 1}})
    assert both.model_names() == ["auto", "task/coding", "local-8b", "strong"]


def test_zero_config_with_only_a_local_server_offers_only_tier_0_tasks():
    local = [DiscoveredRuntime("ollama", "http://127.0.0.1:11434/v1", ("qwen2.5:7b",))]
    raw = build_raw_config(local, {})
    assert raw["tasks"] == {t: tier for t, tier in DEFAULT_TASKS.items() if tier == 0}
    assert "task/coding" not in catalog(raw).model_names()
    with_cloud = build_raw_config(local, {"OPENAI_API_KEY": "sk-o"})
    assert with_cloud["tasks"] == DEFAULT_TASKS  # gpt-4o is tier 3: every default task is reachable


@pytest.mark.parametrize(
    ("header", "task"), [("CODING", "coding"), (" Coding ", "coding"), ("coding", "coding"), ("", None)]
)
def test_task_header_ignores_case(header, task):
    assert identity_from_headers("k", None, {"X-Tiergate-Task": header}).task == task


def test_config_task_names_ignore_case():
    assert config_from_dict({**GOOD, "tasks": {"Coding": 0}}, env=ENV).tasks == {"coding": 0}


TIERED = {**GOOD, "providers": {**BOX, **CLOUD}, "deployments": [LOCAL, STRONG], "tasks": {"coding": 3, "chat": 0}}


@pytest.mark.parametrize(
    ("model", "task", "warning", "first"),
    [
        ("auto", "coding", None, "strong"),
        ("task/CODING", "coding", None, "strong"),
        ("auto", "codng", "unknown task 'codng'; known: coding, chat; routed as tier>=0", "local-8b"),
        ("task/codng", "codng", "unknown task 'codng'; known: coding, chat; routed as tier>=0", "local-8b"),
        ("strong", "codng", "unknown task 'codng'; known: coding, chat", "strong"),  # a label, not a route
        ("auto", None, None, "local-8b"),
    ],
)
def test_an_unknown_task_is_routed_as_tier_0_with_a_warning(model, task, warning, first):
    plan = decide(RequestFeatures(model=model, task=task), catalog(TIERED), WorldSnapshot())
    assert plan.warning == warning
    assert plan.candidates[0].deployment == first
