"""Config errors name the field path and the allowed values; secrets come from env."""

from __future__ import annotations

import logging

import pytest

from tiergate.config.loading import config_from_dict, load_config
from tiergate.core.errors import ConfigError

BASE = {
    "providers": {"box": {"api": "openai-chat", "base_url": "http://127.0.0.1:8080/v1", "local": True}},
    "deployments": [{"name": "local-8b", "provider": "box", "model": "m", "tier": 0}],
}


def err(raw, env=None) -> str:
    with pytest.raises(ConfigError) as ei:
        config_from_dict(raw, env=env or {})
    return ei.value.message


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        # the seeds' worst pain: a provider without an api type
        (
            {**BASE, "providers": {"box": {"base_url": "http://x/v1"}}},
            ["providers.box.api", "Field required", "openai-chat", "anthropic-messages"],
        ),
        (
            {**BASE, "providers": {"box": {"api": "openai", "base_url": "http://x/v1"}}},
            ["providers.box.api", "openai-chat", "anthropic-messages"],
        ),
        (
            {**BASE, "providers": {"box": {"api": "openai-chat", "base_url": "ftp://x"}}},
            ["providers.box.base_url", "http://"],
        ),
        (
            {**BASE, "deployments": [{"name": "a", "provider": "nope", "model": "m"}]},
            ["deployments[0].provider", "unknown provider 'nope'", "box"],
        ),
        (
            {**BASE, "deployments": [{"name": "a", "provider": "box", "model": "m", "tier": 12}]},
            ["deployments[0].tier", "less than or equal to 9"],
        ),
        (
            {**BASE, "deployments": [{"name": "a", "provider": "box", "model": "m", "tiers": 1}]},
            ["deployments[0].tiers", "unknown field", "allowed fields:", "tier"],
        ),
        ({**BASE, "serverz": {}}, ["serverz", "unknown field", "allowed fields:", "providers"]),
        ({**BASE, "aliases": {"fast": ["ghost"]}}, ["aliases.fast", "unknown deployment 'ghost'", "local-8b"]),
        ({**BASE, "routing": {"fallbacks": {"local-8b": ["ghost"]}}}, ["routing.fallbacks.local-8b", "ghost"]),
        ({**BASE, "tasks": {"coding": 11}}, ["tasks", "tier must be 0..9"]),
        ({**BASE, "ledger": "mysql://x"}, ["ledger", "sqlite:///"]),
        ({**BASE, "auth": {"master_key": "env:NOPE_NOT_SET"}}, ["auth.master_key", "NOPE_NOT_SET is not set"]),
    ],
)
def test_errors_name_field_and_allowed(raw, fragments):
    message = err(raw)
    for frag in fragments:
        assert frag in message, f"{frag!r} not in {message!r}"


def test_env_secret_is_resolved_and_hidden():
    raw = {
        **BASE,
        "auth": {"master_key": "env:TG_MASTER"},
        "providers": {"box": {**BASE["providers"]["box"], "api_key": "os.environ/BOX_KEY"}},
    }
    cfg = config_from_dict(raw, env={"TG_MASTER": "sk-master-123", "BOX_KEY": "sk-box-456"})
    assert cfg.auth.master_key.get_secret_value() == "sk-master-123"
    assert cfg.providers["box"].api_key.get_secret_value() == "sk-box-456"
    assert "sk-master-123" not in repr(cfg) and "sk-box-456" not in str(cfg.model_dump())


def test_literal_secret_warns_without_leaking(caplog):
    with caplog.at_level(logging.WARNING, logger="tiergate.config"):
        config_from_dict({**BASE, "auth": {"master_key": "sk-literal-999"}}, env={})
    assert "auth.master_key: literal secret" in caplog.text
    assert "sk-literal-999" not in caplog.text


def test_master_key_defaults_to_env_var():
    cfg = config_from_dict(BASE, env={"TIERGATE_MASTER_KEY": "sk-x"})
    assert cfg.auth.master_key.get_secret_value() == "sk-x"


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("providers: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(p)


LITELLM = {
    "model_list": [
        {"model_name": "fast", "litellm_params": {"model": "ollama/llama3.1:8b", "api_base": "http://127.0.0.1:11434"}},
        {
            "model_name": "gpt-4o-mini",
            "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "os.environ/OPENAI_API_KEY"},
            "model_info": {"input_cost_per_token": 0.00000015, "output_cost_per_token": 0.0000006},
        },
        {
            "model_name": "gpt-4o-mini",
            "litellm_params": {
                "model": "openai/gpt-4o-mini",
                "api_base": "https://eu.example/v1",
                "api_key": "os.environ/OPENAI_API_KEY",
            },
        },
        {
            "model_name": "claude",
            "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_key": "os.environ/ANTHROPIC_API_KEY"},
            "model_info": {
                "input_cost_per_token": 0.000003,
                "output_cost_per_token": 0.000015,
                "max_input_tokens": 200000,
            },
        },
    ],
    "router_settings": {"num_retries": 4, "timeout": 90, "fallbacks": [{"fast": ["gpt-4o-mini"]}]},
    "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
}


def test_litellm_config_is_accepted_as_it_is():
    env = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "LITELLM_MASTER_KEY": "sk-m"}
    cfg = config_from_dict(LITELLM, env=env)
    deps = {d.name: d for d in cfg.deployments}
    assert set(deps) == {"fast", "gpt-4o-mini#1", "gpt-4o-mini#2", "claude"}
    assert cfg.aliases == {"gpt-4o-mini": ["gpt-4o-mini#1", "gpt-4o-mini#2"]}
    assert deps["fast"].tier == 0 and cfg.providers[deps["fast"].provider].local
    assert deps["gpt-4o-mini#1"].price.input_per_mtok == pytest.approx(0.15)
    assert deps["gpt-4o-mini#1"].tier == 1
    assert deps["claude"].tier == 3 and deps["claude"].context_window == 200000
    assert cfg.providers[deps["claude"].provider].api == "anthropic-messages"
    assert cfg.routing.num_retries == 4 and cfg.routing.attempt_timeout_s == 90  # LiteLLM's timeout is per call
    assert cfg.routing.fallbacks == {"fast": ["gpt-4o-mini"]}
    assert cfg.auth.master_key.get_secret_value() == "sk-m"


def test_litellm_unknown_provider_prefix_is_named():
    raw = {"model_list": [{"model_name": "x", "litellm_params": {"model": "opnai/gpt-4o"}}]}
    message = err(raw)
    assert "model_list[0].litellm_params.model: provider prefix 'opnai' is not supported; allowed: " in message
    assert "mistral" in message and "openai" in message


@pytest.mark.parametrize(
    ("gates", "fragments"),
    [
        ({"stream": "buffer"}, ["gates.stream", "auto", "hold", "prefix", "off"]),
        ({"checks": ["empty", "vibes"]}, ["gates.checks[1]", "empty", "invalid_json", "tool_schema"]),
        ({"refusal_patterns": ["(unclosed"]}, ["gates.refusal_patterns", "[0]", "not a regular expression"]),
        ({"tasks": {"coding": {"regex": ["[z-a]"]}}}, ["gates.tasks.coding.regex", "not a regular expression"]),
        ({"deployments": {"nope": {"enabled": False}}}, ["gates.deployments.nope", "unknown deployment", "local-8b"]),
        ({"aliases": {"fast": {"enabled": True}}}, ["gates.aliases.fast", "unknown alias", "auto", "local-8b"]),
        ({"tasks": {"poetry": {"min_chars": 5}}}, ["gates.tasks.poetry", "unknown task", "coding"]),
        ({"max_escalations": -1}, ["gates.max_escalations", "greater than or equal to 0"]),
        ({"apply_to": "some"}, ["gates.apply_to", "routed", "all", "none"]),
        ({"escalate_to": "up"}, ["gates.escalate_to", "next_tier", "next_candidate"]),
        ({"prefix_chars": 0}, ["gates.prefix_chars", "greater than or equal to 1"]),
        ({"typo": 1}, ["gates.typo", "unknown field", "max_escalations"]),
        ({"shadow": {"sample": 0.5}}, ["gates.shadow", "needs reference, lower or both"]),
        ({"shadow": {"lower": "tiny"}}, ["gates.shadow.lower", "unknown deployment or alias 'tiny'", "local-8b"]),
        ({"shadow": {"reference": "big"}}, ["gates.shadow.reference", "unknown deployment or alias 'big'"]),
    ],
)
def test_gate_config_errors_name_the_field_and_the_allowed_values(gates, fragments):
    message = err({**BASE, "tasks": {"coding": 1}, "gates": gates})
    for f in fragments:
        assert f in message, (f, message)


def test_gate_config_becomes_the_policy():
    cfg = config_from_dict(
        {
            **BASE,
            "tasks": {"Extraction": 0},
            "gates": {"max_escalations": 1, "min_chars": 3, "tasks": {"EXTRACTION": {"stream": "hold"}}},
        },
        env={},
    )
    policy = cfg.gates.policy()
    rule = policy.for_request("extraction", "auto", routed=True)
    assert policy.max_escalations == 1 and rule is not None and rule.stream == "hold" and rule.min_chars == 3
