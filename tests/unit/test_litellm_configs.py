"""LiteLLM proxy configs in the forms LiteLLM documents (tests/data/litellm/) mean here what they mean there:
each entry's provider, key, base URL, price, tier, window and capabilities; every setting either becomes its
tiergate equivalent or is named in the one warning; bad values name the LiteLLM field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tiergate.config.catalog import build_catalog
from tiergate.config.litellm import tier_for, translate_litellm
from tiergate.config.litellm_import import render_native
from tiergate.config.litellm_providers import PREFIXES, base_url_for
from tiergate.config.loading import check_config_dict, read_config_file
from tiergate.core.catalog import UNPRICED

DATA = Path(__file__).parent.parent / "data" / "litellm"
KEYS = "OPENAI_API_KEY ANTHROPIC_API_KEY GROQ_API_KEY GEMINI_API_KEY LITELLM_MASTER_KEY OPENAI_KEY_B OPENROUTER_API_KEY"
ENV = {k: f"sk-{k.lower()}" for k in KEYS.split()} | {"LITELLM_DB_URL": "postgresql://u@db/ledger"}
ENV |= {"DATABASE_URL": "postgresql://u@db/spend", "FINETUNE_KEY": "sk-ft", "MISTRAL_API_KEY": "sk-mistral"}
ENV |= {"AZURE_API_KEY_EU": "azure-key-eu"}


def load(name: str, env: dict[str, str] | None = None):
    cfg, problems = check_config_dict(
        read_config_file(DATA / name), env=ENV if env is None else env, exists=Path.is_file
    )
    errors = [str(p) for p in problems if not p.warning]
    assert cfg is not None and not errors, errors
    return cfg, build_catalog(cfg), [str(p) for p in problems if p.warning]


def ignored(warnings: list[str]) -> str:
    (line,) = [w for w in warnings if w.startswith("LiteLLM settings with no meaning here, ignored: ")]
    return line


def test_seed_004_as_written_keeps_its_meaning():
    cfg, cat, warnings = load("seed004_hybrid.yaml")
    tiers = {n: (d.tier, d.local) for n, d in cat.deployments.items()}
    assert tiers == {
        "local/fast": (0, True),
        "local/quality": (0, True),
        "local/embed": (0, True),
        "cloud/fast": (1, False),  # Groq llama 8B: $0.08/Mtok out
        "cloud/mid": (2, False),  # Gemini 2.5 Flash: $2.50
        "cloud/frontier#5": (3, False),  # Sonnet 4.5: $15
        "cloud/frontier#6": (3, False),  # Opus: $25
    }
    assert all(d.priced and d.output_per_mtok > 0 for d in cat.deployments.values() if not d.local)
    assert cat.deployments["cloud/frontier#6"].price_source == "genai-prices:anthropic/claude-opus-4-6"
    assert cat.deployments["local/embed"].capabilities == {"embeddings"}
    assert cat.deployments["cloud/mid"].context_window == 1_048_576  # the database's window, not a default
    assert cat.deployments["local/fast"].api_key is None  # `api_key: none` is LiteLLM's placeholder
    assert cat.aliases == {"cloud/frontier": ("cloud/frontier#5", "cloud/frontier#6")}
    assert dict(cat.balanced) == {"cloud/frontier": (1.0, 1.0)}  # routing_strategy: simple-shuffle, even shares
    assert dict(cat.fallbacks) == {"local/fast": ("cloud/fast",), "local/quality": ("cloud/mid",)}
    assert (cfg.routing.num_retries, cfg.routing.attempt_timeout_s) == (2, 120)
    ((budget),) = cfg.budgets
    assert (budget.scope, budget.window, budget.limit_usd, budget.action) == ("global", "month", 100, "reject")
    assert (
        cfg.ledger_url == "postgresql://u@db/ledger"
        and cfg.auth.master_key.get_secret_value() == ENV["LITELLM_MASTER_KEY"]
    )
    assert warnings == []


def test_a_group_is_balanced_across_entries_each_with_its_own_key_and_base_url():
    cfg, cat, warnings = load("load_balancing.yaml")
    members = cat.aliases["gpt-4o-mini"]
    assert [cat.deployments[n].base_url for n in members] == [
        "https://api.openai.com/v1",
        "https://api.openai.com/v1",
        "https://openrouter.ai/api/v1",
    ]
    # environment_variables: set for the config, as LiteLLM sets them
    assert [cat.deployments[n].api_key for n in members] == [
        "sk-from-config-a",
        ENV["OPENAI_KEY_B"],
        ENV["OPENROUTER_API_KEY"],
    ]
    # simple-shuffle weighs by the first entry's rpm; entries without one weigh 0 (failover only), as in LiteLLM
    assert dict(cat.balanced) == {"gpt-4o-mini": (30.0, 0.0, 0.0)}
    # ... and the first entry's rpm is that deployment's own quota, counted where requests are routed
    assert [(c.kind, c.cap) for c in cat.deployments[members[0]].rate] == [("rpm", 30), ("tpm", 20000)]
    assert [cat.deployments[n].rate for n in members[1:]] == [(), ()]
    assert cat.aliases["gpt-4"] == members  # router_settings.model_group_alias
    # mistralai/... is an OpenRouter model id, as LiteLLM reads it
    assert cat.deployments["mistral-7b-instruct"].base_url == "https://openrouter.ai/api/v1"
    assert cat.deployments["mistral-7b-instruct"].model == "mistralai/mistral-7b-instruct"
    # fallbacks, then context-window fallbacks, then content-policy fallbacks, in that order
    assert dict(cat.fallbacks) == {
        "gpt-4o-mini": ("big-context", "mistral-7b-instruct"),
        "mistral-7b-instruct": ("big-context",),
    }
    r = cfg.routing
    # router_settings win over litellm_settings, as the Router's own settings do in LiteLLM
    assert (r.num_retries, r.attempt_timeout_s, r.breaker_failures, r.breaker_cooldown_s) == (2, 30, 3, 30)
    line = ignored(warnings)
    for name in ("router_settings.redis_host", "router_settings.redis_port"):
        assert name in line
    assert "routing_strategy" not in line and "fallbacks" not in line and "allowed_fails" not in line
    assert "rpm" not in line  # simple-shuffle's weights: its whole meaning there


def test_providers_by_prefix_reach_their_documented_endpoints():
    _, cat, warnings = load("providers.yaml")
    want = {
        "mistral": "https://api.mistral.ai/v1",
        "together": "https://api.together.xyz/v1",
        "fireworks": "https://api.fireworks.ai/inference/v1",
        "grok": "https://api.x.ai/v1",
        "cerebras": "https://api.cerebras.ai/v1",
        "sonar": "https://api.perplexity.ai",
        "deepinfra": "https://api.deepinfra.com/v1/openai",
        "nim": "https://integrate.api.nvidia.com/v1",
        "sambanova": "https://api.sambanova.ai/v1",
        "openrouter": "https://openrouter.ai/api/v1",
        "groq": "https://api.groq.com/openai/v1",
        "deepseek": "https://api.deepseek.com/v1",
        "kimi": "https://api.moonshot.ai/v1",
        "gemini": "https://generativelanguage.googleapis.com/v1beta/openai",
        "vllm-hosted": "https://vllm.example.com/v1",
        "vllm-here": "http://localhost:8000/v1",
        "lmstudio": "http://localhost:1234/v1",
        "ollama": "http://localhost:11434/v1",  # LiteLLM's api_base is Ollama's root; its OpenAI API is /v1
        "ollama-chat": "http://127.0.0.1:11434/v1",
        "llamafile": "http://127.0.0.1:8080/v1",
    }
    assert {n: d.base_url for n, d in cat.deployments.items()} == want
    local = {n for n, d in cat.deployments.items() if d.local}
    assert local == {"vllm-here", "lmstudio", "ollama", "ollama-chat", "llamafile"}  # vllm.example.com is not
    assert all(cat.deployments[n].tier == 0 for n in local)
    assert all(cat.deployments[n].tier >= 1 for n in set(want) - local)
    assert cat.deployments["mistral"].api_key == "sk-mistral"  # from MISTRAL_API_KEY, as LiteLLM reads it
    assert cat.deployments["ollama"].model == "llama3.1:8b"
    assert cat.deployments["fireworks"].model == "accounts/fireworks/models/llama-v3p1-8b-instruct"
    assert "model_list[1].litellm_params.api_key: not set and TOGETHERAI_API_KEY is not in the environment" in warnings
    assert cat.deployments["grok"].price_source == "genai-prices:x-ai/grok-3-mini"


def test_embedding_and_other_modes():
    _, cat, warnings = load("embeddings.yaml")
    assert cat.deployments["text-embedding-3-small"].capabilities == {"embeddings"}
    assert cat.deployments["local-embed"].capabilities == {"embeddings"}
    assert "dall-e-3" not in cat.deployments
    chat = cat.deployments["chat"]
    assert "vision" in chat.capabilities and chat.context_window == 32768
    assert chat.price_source == UNPRICED and chat.tier == 1  # a cloud model nobody prices: tier 1, named
    assert cat.unpriced() == ["chat"]
    line = ignored(warnings)
    assert "model_list[2].model_info.mode=image_generation (dall-e-3: entry left out)" in line
    assert "model_list[3].litellm_params.{max_tokens, temperature} (not applied to requests)" in line


def test_quickstart_leaves_out_by_name_what_it_cannot_serve():
    _, cat, warnings = load("quickstart.yaml")
    assert list(cat.deployments) == ["gpt-4o", "vllm-models"]
    azure = cat.deployments["gpt-4o"]
    assert (azure.api, azure.base_url, azure.model) == (
        "azure-openai",
        "https://example-eu.openai.azure.com",
        "gpt-4o-eu",
    )
    assert azure.api_version == "2024-10-21" and azure.api_key == ENV["AZURE_API_KEY_EU"]
    line = ignored(warnings)
    for name in (
        "model_list[1].litellm_params.aws_region_name (bedrock-claude-v1: no region: set it (e.g. us-east-1) or "
        "AWS_REGION_NAME; entry left out)",
        "model_list[3] (model '*': provider chosen by the client; entry left out)",
        "litellm_settings.success_callback",
        "general_settings.alerting",
    ):
        assert name in line
    assert "drop_params" not in line and "model_info.version" not in line


def test_wildcard_routes_pass_the_client_model_through():
    _, cat, _ = load("wildcards.yaml")
    assert list(cat.deployments) == ["local"] and cat.wildcards == ("openai/*", "*")
    d = cat.deployments["openai/gpt-4o-mini"]
    assert (d.model, d.base_url, d.api_key) == ("gpt-4o-mini", "https://api.openai.com/v1", ENV["OPENAI_API_KEY"])
    assert d.price_source == "genai-prices:openai/gpt-4o-mini" and d.context_window == 128_000
    c = cat.deployments["claude-sonnet-4-5"]
    assert (c.model, c.api, c.base_url) == ("claude-sonnet-4-5", "anthropic-messages", "https://api.anthropic.com")
    assert "vision" in c.capabilities
    assert "local" in cat.deployments and cat.deployments["local"].model == "qwen2.5:7b"  # exact names first


def test_budgets_and_the_spend_database():
    cfg, cat, warnings = load("budgets.yaml")
    ((b),) = cfg.budgets
    assert (b.window, b.limit_usd) == ("month", 25)
    assert cfg.ledger_url == ENV["DATABASE_URL"]
    assert cat.deployments["claude"].rates.output == pytest.approx(4.0)
    assert "general_settings.store_model_in_db" in ignored(warnings)


def test_tiergate_sections_sit_beside_a_litellm_config():
    raw = read_config_file(DATA / "seed004_hybrid.yaml")
    raw |= {
        "tasks": {"coding": 1, "reasoning": 3},
        "budgets": [{"scope": "agent", "match": "researcher", "limit_usd": 5}],
        "guardian": {"session_max_usd": 2},
        "privacy": {"local_only_agents": ["hr-*"]},
        "routing": {"embeddings_local_only": True},
        "local_models": {"budget_mb": 1000, "models": [{"name": "q", "gguf": "/m/q.gguf", "memory_mb": 500}]},
    }
    cfg, problems = check_config_dict(raw, env=ENV, exists=Path.is_file)
    assert cfg is not None, problems
    assert cfg.tasks == {"coding": 1, "reasoning": 3}
    assert [b.scope for b in cfg.budgets] == ["global", "agent"]  # LiteLLM's max_budget and the tiergate one
    assert cfg.guardian.session_max_usd == 2 and cfg.privacy.local_only_agents == ["hr-*"]
    assert cfg.routing.embeddings_local_only and cfg.routing.num_retries == 2  # merged with router_settings


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"router_settings": {"routing_strategy": "fastest"}},
            "router_settings.routing_strategy: unknown strategy 'fastest'; allowed: cost-based-routing, latency-based",
        ),
        (
            {"general_settings": {"max_budget": 10, "budget_duration": "2d"}},
            "general_settings.budget_duration: '2d' has no tiergate window; allowed: 1h, 60m, 1d, 24h, 7d, ",
        ),
        ({"litellm_settings": {"max_budget": 10}}, "litellm_settings.max_budget: without budget_duration "),
        ({"router_settings": {"num_retries": 50}}, "router_settings.num_retries: must be an integer from 0 to 10"),
        ({"router_settings": {"fallbacks": {"a": "b"}}}, "router_settings.fallbacks: must be a list of {model_name"),
        ({"general_settingz": {}}, "general_settingz: unknown top-level key in a LiteLLM config; allowed: "),
    ],
)
def test_bad_settings_name_the_litellm_field_and_what_is_allowed(raw, message):
    base = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/gpt-4o-mini"}}]}
    cfg, problems = check_config_dict(base | raw, env=ENV, exists=Path.is_file)
    assert cfg is None and any(str(p).startswith(message) for p in problems), problems


@pytest.mark.parametrize("quota", [0, -5, 2.5, "60", True])
def test_an_entrys_rpm_or_tpm_must_be_a_whole_number(quota):
    entry = {"model_name": "m", "litellm_params": {"model": "openai/gpt-4o-mini", "tpm": quota}}
    cfg, problems = check_config_dict({"model_list": [entry]}, env=ENV, exists=Path.is_file)
    want = f"model_list[0].litellm_params.tpm: expected a whole number above 0, got {quota!r}"
    assert cfg is None and any(want in str(p) for p in problems), problems


@pytest.mark.parametrize(
    ("price", "local", "tier"),
    [(None, True, 0), (30.0, True, 0), (None, False, 1), (0.0, False, 1), (1.0, False, 1), (1.01, False, 2)]
    + [(5.0, False, 2), (15.0, False, 3)],
)
def test_tier_rule(price, local, tier):
    assert tier_for(price, local=local) == tier


@pytest.mark.parametrize(
    ("prefix", "api_base", "url"),
    [
        ("ollama", "http://localhost:11434", "http://localhost:11434/v1"),
        ("ollama", "http://localhost:11434/", "http://localhost:11434/v1"),
        ("ollama_chat", "http://gpu-box:11434/v1", "http://gpu-box:11434/v1"),
        ("ollama", None, "http://127.0.0.1:11434/v1"),
        ("openai", "https://proxy.example/openai", "https://proxy.example/openai"),  # taken as written
        ("lm_studio", "http://localhost:1234", "http://localhost:1234/v1"),
    ],
)
def test_base_urls(prefix, api_base, url):
    assert base_url_for(PREFIXES[prefix], api_base) == url


def test_a_vendor_key_never_goes_to_another_server():
    raw = {
        "model_list": [
            {"model_name": "m", "litellm_params": {"model": "openai/llama", "api_base": "https://other.example/v1"}}
        ]
    }
    (prov,) = translate_litellm(raw, {"OPENAI_API_KEY": "sk-real"}).config["providers"].values()
    assert "api_key" not in prov


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.yaml")))
def test_import_litellm_writes_a_native_config_that_means_the_same(name):
    """The native file import-litellm writes builds the same catalog as the LiteLLM file served as it is."""
    raw = read_config_file(DATA / name)
    text = render_native(raw, source=name)
    native = yaml.safe_load(text)
    assert "model_list" not in native and "providers" in native
    env = {**ENV, **{str(k): str(v) for k, v in (raw.get("environment_variables") or {}).items()}}
    env |= {k: f"sk-{k.lower()}" for k in ("MISTRAL_API_KEY", "TOGETHERAI_API_KEY", "FIREWORKS_AI_API_KEY")}
    env |= {k: f"sk-{k.lower()}" for k in ("XAI_API_KEY", "CEREBRAS_API_KEY", "PERPLEXITYAI_API_KEY")}
    env |= {k: f"sk-{k.lower()}" for k in ("DEEPINFRA_API_KEY", "NVIDIA_NIM_API_KEY", "SAMBANOVA_API_KEY")}
    env |= {k: f"sk-{k.lower()}" for k in ("DEEPSEEK_API_KEY", "MOONSHOT_API_KEY")}
    a, _ = check_config_dict(raw, env=env, exists=Path.is_file)
    b, problems = check_config_dict(native, env=env, exists=Path.is_file)
    assert a is not None and b is not None, problems
    ca, cb = build_catalog(a), build_catalog(b)
    assert {n: d for n, d in ca.deployments.items()} == {n: d for n, d in cb.deployments.items()}
    assert (ca.aliases, ca.fallbacks, ca.balanced, ca.wildcards) == (
        cb.aliases,
        cb.fallbacks,
        cb.balanced,
        cb.wildcards,
    )
    assert (a.routing, a.budgets, a.auth, a.ledger_url) == (b.routing, b.budgets, b.auth, b.ledger_url)
    for dep in b.deployments:  # each says where it came from and why its tier
        assert f"({dep.name.split('#')[0]}: " in text or "*" in dep.name
    ignored_lines = [
        p for p in check_config_dict(raw, env=env, exists=Path.is_file)[1] if p.warning and "ignored" in str(p)
    ]
    if ignored_lines:
        assert "# LiteLLM settings with no meaning here, left out:" in text


@pytest.mark.parametrize(
    ("base", "version", "path", "url"),
    [
        (
            "https://r.openai.azure.com",
            "2024-10-21",
            "/chat/completions",
            "https://r.openai.azure.com/openai/deployments/my%20dep/chat/completions?api-version=2024-10-21",
        ),
        (
            "https://r.openai.azure.com",
            "2024-10-21",
            "/embeddings",
            "https://r.openai.azure.com/openai/deployments/my%20dep/embeddings?api-version=2024-10-21",
        ),
        (
            "https://r.openai.azure.com/openai/v1",
            None,
            "/chat/completions",
            "https://r.openai.azure.com/openai/v1/chat/completions",
        ),
    ],
)
def test_azure_urls(base, version, path, url):
    from tiergate.adapters.azure_openai import azure_url
    from tiergate.core.catalog import Deployment

    d = Deployment("x", "p", "azure-openai", base, "my dep", 1, False, 8192, None, 0, 0, api_version=version)
    assert azure_url(d, path) == url


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ({"base_url": "https://r.openai.azure.com"}, "api_version: required for azure-openai at a resource endpoint"),
        (
            {"base_url": "https://r.openai.azure.com", "api_version": "2024-06-01"},
            "api_version: 2024-06-01 predates 2024-09-01",
        ),
    ],
)
def test_azure_provider_errors_name_the_field(provider, message):
    raw = {
        "providers": {"az": {"api": "azure-openai", **provider}},
        "deployments": [{"name": "d", "provider": "az", "model": "m"}],
    }
    cfg, problems = check_config_dict(raw, env={}, exists=Path.is_file)
    assert cfg is None and any(str(p).startswith(f"providers.az.{message}") for p in problems), problems


def test_every_prefix_is_documented_in_providers_md():
    from tiergate.config.litellm_providers import UNSERVED_PREFIXES

    text = (Path(__file__).parent.parent.parent / "docs" / "providers.md").read_text()
    assert [p for p in PREFIXES if f"| `{p}/` |" not in text] == []
    assert [p for p in UNSERVED_PREFIXES if f"`{p}/`" not in text] == []


def test_cost_based_routing_tries_a_groups_members_cheapest_first():
    cfg, cat, warnings = load("cost_based_routing.yaml")
    members = cat.aliases["gpt-3.5-turbo"]
    assert [cat.deployments[n].model for n in members] == [
        "llama-3.1-8b-instant",  # $0.05 + $0.08 per Mtok (price database)
        "my-finetune",  # $0.1 + $0.2 (its model_info)
        "gpt-4o-mini",  # $0.15 + $0.6
        "gpt-4o",  # $2.5 + $10
        "unlisted-model",  # nothing prices it: last, and named
    ]
    assert cfg.routing.cheapest_first == ["gpt-3.5-turbo"] and not cat.balanced  # failover in that order
    assert [cat.deployments[n].model for n in cat.unpriced()] == ["unlisted-model"]  # check-config names it
    assert not any("routing_strategy" in w for w in warnings), warnings  # it has its meaning: not ignored
