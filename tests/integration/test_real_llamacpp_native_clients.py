"""Ollama's and Gemini's own APIs over a real llama.cpp engine (SmolLM2), with the official client libraries."""

from __future__ import annotations

import ollama
import pytest

from procs import MASTER_KEY, start_engine


@pytest.fixture(scope="module")
def llama():
    proc = start_engine(ctx=2048, parallel=2)
    yield proc
    proc.stop_blocking()


def config(llama) -> dict:
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": {"box": {"api": "openai-chat", "base_url": llama.base_url, "local": True}},
        "deployments": [
            {
                "name": "local-smol",
                "provider": "box",
                "model": "smollm2",
                "tier": 0,
                "context_window": 1024,
                "max_output_tokens": 64,
            }
        ],
    }


def test_ollama_library_chats_and_streams_on_the_real_engine(llama, gateway):
    gw = gateway(config(llama))
    c = ollama.Client(host=gw.base_url, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    r = c.chat(model="auto", messages=[{"role": "user", "content": "Say hello."}], options={"num_predict": 12})
    assert r.done and r.message.content.strip() and 0 < r.eval_count <= 12 and r.prompt_eval_count > 0
    parts = list(
        c.chat(
            model="local-smol",
            messages=[{"role": "user", "content": "Count to three."}],
            options={"num_predict": 12},
            stream=True,
        )
    )
    assert sum(1 for p in parts if p.message.content) >= 2  # token by token, as the engine produces them
    assert parts[-1].done and parts[-1].eval_count > 0
    g = c.generate(model="local-smol", prompt="The capital of France is", options={"num_predict": 8, "temperature": 0})
    assert g.response.strip() and g.eval_count > 0
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [r["protocol"] for r in rows] == ["ollama-chat", "ollama-chat", "ollama-generate"]
    assert all(r["status"] == 200 and r["usage_estimated"] == 0 and r["deployment"] == "local-smol" for r in rows)
    assert rows[0]["completion_tokens"] == r.eval_count and rows[2]["completion_tokens"] == g.eval_count


def test_google_genai_generates_and_streams_on_the_real_engine(llama, gateway):
    from google import genai
    from google.genai import types

    gw = gateway(config(llama))
    c = genai.Client(api_key=MASTER_KEY, http_options=types.HttpOptions(base_url=gw.base_url, api_version="v1beta"))
    cfg = types.GenerateContentConfig(max_output_tokens=12, temperature=0)
    r = c.models.generate_content(model="local-smol", contents="Say hello.", config=cfg)
    assert r.text.strip() and 0 < r.usage_metadata.candidates_token_count <= 12
    chunks = list(c.models.generate_content_stream(model="auto", contents="Count to three.", config=cfg))
    assert sum(1 for ch in chunks if ch.text) >= 2 and chunks[-1].usage_metadata.candidates_token_count > 0
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [x["protocol"] for x in rows] == ["gemini-generate", "gemini-generate"]
    assert all(x["usage_estimated"] == 0 for x in rows)
    assert rows[0]["completion_tokens"] == r.usage_metadata.candidates_token_count
