"""A LiteLLM proxy config served as it is; with no config, tiers built from what runs here."""

from __future__ import annotations

import asyncio

import openai

from procs import MASTER_KEY


def test_litellm_config_served_as_is(standins, gateway):
    cheap, front = standins(name="cheap", models=["gpt-4o-mini"]), standins(name="front", models=["gpt-4o"])
    front_key = "sk-front-777"
    litellm = {
        "model_list": [
            {
                "model_name": "fast",
                "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": f"{cheap.base_url}/v1"},
                "model_info": {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7},
            },
            {
                "model_name": "smart",
                "litellm_params": {
                    "model": "openai/gpt-4o",
                    "api_base": f"{front.base_url}/v1",
                    "api_key": "os.environ/FRONT_KEY",
                },
                "model_info": {"input_cost_per_token": 2.5e-6, "output_cost_per_token": 1e-5},
            },
        ],
        "router_settings": {"num_retries": 0, "fallbacks": [{"fast": ["smart"]}]},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    gw = gateway(litellm, env_extra={"FRONT_KEY": front_key, "LITELLM_MASTER_KEY": "sk-litellm-master"})
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="sk-litellm-master", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().choices[0].message.content.startswith("[cheap]")
    assert float(raw.headers["x-tiergate-cost-usd"]) > 0
    cheap.faults({"mode": "status", "status": 500, "times": 5})
    raw = c.chat.completions.with_raw_response.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-tiergate-deployment"] == "smart"
    assert front.requests()[-1]["headers"]["authorization"] == f"Bearer {front_key}"


def test_no_config_discovers_local_runtime_and_cloud_keys(standins, monkeypatch):
    from tiergate.local import autoconfig, discovery

    local = standins(name="ollama", models=["qwen2.5:7b", "llama3.1:8b"])
    monkeypatch.setattr(discovery, "DEFAULT_PORTS", {"ollama": local.port, "llamacpp": 1})
    monkeypatch.setattr(autoconfig, "environment", lambda: {"GROQ_API_KEY": "gsk-x", "TIERGATE_MASTER_KEY": MASTER_KEY})
    cfg, summary = asyncio.run(autoconfig.discover_config())
    deps = {d.name: d for d in cfg.deployments}
    assert deps["ollama/qwen2.5:7b"].tier == 0 and cfg.providers["ollama"].local
    assert deps["groq/llama-3.1-8b-instant"].tier == 1
    assert cfg.aliases["local/fast"] == ["ollama/qwen2.5:7b", "ollama/llama3.1:8b"]
    assert f"ollama at {local.base_url}/v1 (2 models)" in summary and "cloud keys: groq" in summary
