"""``api: ollama``: Ollama clients reach an upstream that is itself Ollama in its native API, passed through.

The upstream is the Ollama stand-in (``python -m tiergate.standins --protocol ollama``); the client is the
official ollama library. What the upstream gets is the client's body with only the model rewritten (and the
output cap), so Ollama-only fields (``num_ctx``, ``think``, ``format``) survive; usage comes from its counters.
"""

from __future__ import annotations

import ollama
import pytest

from procs import MASTER_KEY

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def config(native, cloud=None) -> dict:
    providers = {"home": {"api": "ollama", "base_url": native.base_url, "local": True}}
    deployments = [
        {
            "name": "home-qwen",
            "provider": "home",
            "model": "qwen3:8b",
            "tier": 0,
            "context_window": 32768,
            "max_output_tokens": 100,
        },
        {"name": "home-embed", "provider": "home", "model": "nomic-embed-text", "tier": 0, "context_window": 8192},
    ]
    if cloud is not None:
        providers["cloud"] = {"api": "openai-chat", "base_url": f"{cloud.base_url}/v1"}
        deployments.append(
            {
                "name": "cheap",
                "provider": "cloud",
                "model": "gpt-4o-mini",
                "tier": 1,
                "context_window": 128000,
                "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
            }
        )
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": providers,
        "deployments": deployments,
        "routing": {"num_retries": 0},
    }


@pytest.fixture
def native(standins):
    return standins("ollama", name="home", models=["qwen3:8b", "nomic-embed-text"])


def client(gw) -> ollama.Client:
    return ollama.Client(host=gw.base_url, headers={"Authorization": f"Bearer {MASTER_KEY}"})


def test_chat_is_passed_through_with_ollamas_own_fields(native, gateway):
    gw = gateway(config(native))
    c = client(gw)
    body = dict(
        model="home-qwen",
        messages=[{"role": "user", "content": "why is the sky blue?"}],
        options={"num_ctx": 8192, "top_k": 20, "num_predict": 500},
        think=True,
        format="json",
        keep_alive="10m",
    )
    r = c.chat(**body)
    assert r.message.content.startswith("[home]") and r.eval_count > 0 and r.done_reason == "stop"
    sent = native.requests()[0]["body"]
    assert sent["model"] == "qwen3:8b" and sent["stream"] is False
    assert sent["options"] == {"num_ctx": 8192, "top_k": 20, "num_predict": 100}  # clamped to the deployment's cap
    assert sent["think"] is True and sent["format"] == "json" and sent["keep_alive"] == "10m"
    parts = list(c.chat(**{**body, "options": {}}, stream=True))
    assert "".join(p.message.content for p in parts).startswith("[home]") and parts[-1].done
    assert native.requests()[1]["body"]["stream"] is True
    tools = list(
        c.chat(model="home-qwen", messages=[{"role": "user", "content": "use tool"}], tools=[WEATHER], stream=True)
    )
    calls = [tc for p in tools for tc in (p.message.tool_calls or [])]
    assert calls[0].function.name == "get_weather" and isinstance(calls[0].function.arguments, dict)
    gen = c.generate(model="home-qwen", prompt="Why?", system="terse")
    assert gen.response.startswith("[home]") and native.requests()[-1]["path"] == "/api/generate"
    e = c.embed(model="home-embed", input=["a", "b"])
    assert len(e.embeddings) == 2 and native.requests()[-1]["body"]["model"] == "nomic-embed-text"
    assert len(c.embeddings(model="home-embed", prompt="a").embedding) == len(e.embeddings[0])
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [x["deployment"] for x in rows][:3] == ["home-qwen"] * 3
    assert rows[0]["completion_tokens"] == r.eval_count and rows[0]["prompt_tokens"] == r.prompt_eval_count
    assert rows[1]["completion_tokens"] == parts[-1].eval_count and not rows[1]["usage_estimated"]


def test_a_failing_ollama_upstream_fails_over_to_a_cloud_tier(native, standins, gateway):
    cloud = standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(config(native, cloud))
    native.faults({"mode": "status", "status": 503, "times": 2})
    c = client(gw)
    r = c.chat(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert r.message.content.startswith("[cheap]")  # translated onto OpenAI chat for the cloud tier
    parts = list(c.chat(model="auto", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "".join(p.message.content for p in parts).startswith("[cheap]")
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [(x["deployment"], x["fallbacks"]) for x in rows] == [("cheap", 1), ("cheap", 1)]
