"""Ollama and Gemini clients on an ``api: openai-responses`` upstream, through the chat-over-Responses bridge."""

from __future__ import annotations

import ollama
from google import genai
from google.genai import types

from procs import CHEAP_KEY, MASTER_KEY

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def config(up) -> dict:
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": {"oai": {"api": "openai-responses", "base_url": f"{up.base_url}/v1", "api_key": "env:CHEAP_KEY"}},
        "deployments": [
            {
                "name": "smart",
                "provider": "oai",
                "model": "gpt-5-mini",
                "tier": 2,
                "context_window": 400000,
                "max_output_tokens": 1000,
                "price": {"input_per_mtok": 0.25, "output_per_mtok": 2.0},
            }
        ],
        "routing": {"num_retries": 0},
    }


def test_ollama_and_gemini_clients_reach_a_responses_upstream(standins, gateway):
    up = standins(name="oai", models=["gpt-5-mini"], api_key=CHEAP_KEY)
    gw = gateway(config(up))
    o = ollama.Client(host=gw.base_url, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    r = o.chat(model="smart", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 50})
    assert r.message.content.startswith("[oai]") and r.eval_count > 0
    parts = list(
        o.chat(model="smart", messages=[{"role": "user", "content": "use tool"}], tools=[WEATHER], stream=True)
    )
    calls = [tc for p in parts for tc in (p.message.tool_calls or [])]
    assert calls[0].function.name == "get_weather" and calls[0].function.arguments == {"city": "Paris"}
    g = genai.Client(api_key=MASTER_KEY, http_options=types.HttpOptions(base_url=gw.base_url))
    chunks = list(g.models.generate_content_stream(model="smart", contents="hi"))
    assert "".join(ch.text or "" for ch in chunks).startswith("[oai]")
    assert chunks[-1].usage_metadata.candidates_token_count > 0
    assert all(rec["path"] == "/v1/responses" for rec in up.requests())
    assert up.requests()[0]["body"]["max_output_tokens"] == 50
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [x["protocol"] for x in rows] == ["ollama-chat", "ollama-chat", "gemini-generate"]
    assert all(x["deployment"] == "smart" and x["cost_usd"] > 0 for x in rows)
