"""``api: google-generative-ai``: Gemini clients reach Gemini's own API through tiergate, passed through.

The upstream is the Gemini stand-in (``--protocol gemini``), which checks its own key; the client is
google-genai with a tiergate key. Fields only Gemini takes (thinkingConfig, safetySettings) reach it, thought
parts come back, usageMetadata is billed, the vendor key never leaves tiergate's config.
"""

from __future__ import annotations

import json

from google import genai
from google.genai import types

from procs import CHEAP_KEY, MASTER_KEY, http


def config(up) -> dict:
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": {
            "google": {"api": "google-generative-ai", "base_url": f"{up.base_url}/v1beta", "api_key": "env:CHEAP_KEY"}
        },
        "deployments": [
            {
                "name": "flash",
                "provider": "google",
                "model": "gemini-2.5-flash",
                "tier": 1,
                "context_window": 1000000,
                "max_output_tokens": 500,
                "price": {"input_per_mtok": 0.3, "output_per_mtok": 2.5},
            },
            {
                "name": "gembed",
                "provider": "google",
                "model": "gemini-embedding-001",
                "tier": 1,
                "context_window": 2048,
            },
        ],
        "routing": {"num_retries": 0},
    }


def test_generate_stream_embed_are_passed_through(standins, gateway):
    up = standins("gemini", name="gemini", models=["gemini-2.5-flash", "gemini-embedding-001"], api_key=CHEAP_KEY)
    gw = gateway(config(up))
    c = genai.Client(api_key=MASTER_KEY, http_options=types.HttpOptions(base_url=gw.base_url, api_version="v1beta"))
    cfg = types.GenerateContentConfig(
        max_output_tokens=4000,
        thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=128),
        safety_settings=[types.SafetySetting(category="HARM_CATEGORY_HARASSMENT", threshold="BLOCK_NONE")],
    )
    r = c.models.generate_content(model="flash", contents="Why is the sky blue?", config=cfg)
    assert r.text.startswith("[gemini]") and r.candidates[0].content.parts[0].thought
    sent = up.requests()[0]
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent["headers"]["x-goog-api-key"] == CHEAP_KEY  # the vendor key, never the client's
    assert sent["body"]["generationConfig"]["maxOutputTokens"] == 500  # clamped to the deployment's limit
    assert sent["body"]["generationConfig"]["thinkingConfig"] == {"include_thoughts": True, "thinking_budget": 128}
    assert sent["body"]["safetySettings"] and "model" not in sent["body"]
    chunks = list(c.models.generate_content_stream(model="flash", contents="Why is the sky blue?", config=cfg))
    assert "".join(ch.text or "" for ch in chunks) == r.text
    assert up.requests()[1]["path"].endswith(":streamGenerateContent?alt=sse")
    e = c.models.embed_content(model="gembed", contents=["a", "b"])
    assert len(e.embeddings) == 2 and up.requests()[-1]["path"].endswith(":batchEmbedContents")
    assert {q["model"] for q in up.requests()[-1]["body"]["requests"]} == {"models/gemini-embedding-001"}
    # without alt=sse the client gets one JSON array, re-framed from the upstream's SSE
    body = json.dumps({"contents": [{"parts": [{"text": "hi"}]}]}).encode()
    status, _, raw = http(
        "POST",
        f"{gw.base_url}/v1beta/models/flash:streamGenerateContent",
        body=body,
        headers={"x-goog-api-key": MASTER_KEY, "Content-Type": "application/json"},
    )
    arr = json.loads(raw)
    assert status == 200 and arr[-1]["candidates"][0]["finishReason"] == "STOP"
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [x["deployment"] for x in rows] == ["flash", "flash", "gembed", "flash"]
    meta = r.usage_metadata
    assert rows[0]["prompt_tokens"] == meta.prompt_token_count
    assert rows[0]["completion_tokens"] == meta.candidates_token_count + meta.thoughts_token_count
    assert rows[1]["completion_tokens"] == rows[0]["completion_tokens"] and not rows[1]["usage_estimated"]
    assert all(x["cost_usd"] > 0 for x in rows if x["deployment"] == "flash")
