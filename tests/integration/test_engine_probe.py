"""Capabilities asked of the real llama.cpp engine at start: /props overrules the model family's guess."""

from __future__ import annotations

import openai
import pytest

from procs import MASTER_KEY, start_engine

IMAGE = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
LOOK = [
    {
        "role": "user",
        "content": [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": IMAGE}}],
    }
]


@pytest.fixture(scope="module")
def llama():
    proc = start_engine(ctx=1024, parallel=1)  # SmolLM2, no multimodal projector: /props says vision false
    yield proc
    proc.stop_blocking()


def config(llama, cloud, *, declared=None) -> dict:
    local = {"name": "local-gemma", "provider": "box", "model": "gemma-3-4b-it", "tier": 0, "context_window": 8192}
    if declared is not None:
        local["capabilities"] = declared
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": {
            "box": {"api": "openai-chat", "base_url": llama.base_url, "local": True},
            "cheapco": {"api": "openai-chat", "base_url": f"{cloud.base_url}/v1", "api_key": "env:CHEAP_KEY"},
        },
        "deployments": [
            local,  # the name says gemma-3 (a vision family); the engine serving it cannot see
            {"name": "cloud-4o", "provider": "cheapco", "model": "gpt-4o", "tier": 1, "context_window": 128000},
        ],
    }


def test_engine_without_vision_is_not_sent_images(llama, standins, gateway):
    cloud = standins(name="cloud", models=["gpt-4o"])
    gw = gateway(config(llama, cloud))
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    seen = c.chat.completions.with_raw_response.create(model="auto", messages=LOOK, max_tokens=8)
    assert seen.headers["x-tiergate-deployment"] == "cloud-4o"  # local-gemma lacks vision, as its engine says
    text = c.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert text.headers["x-tiergate-deployment"] == "local-gemma"  # and still serves text
    named = c.chat.completions.with_raw_response.create(model="local-gemma", messages=LOOK, max_tokens=8)
    assert named.headers["x-tiergate-deployment"] == "cloud-4o"  # escalated past it, never tried
    gw.stop()
    assert gw.ledger_rows("kind='attempt'") == []  # the engine was never sent an image it would fail on
    rows = gw.ledger_rows("kind='request'")
    assert [r["deployment"] for r in rows] == ["cloud-4o", "local-gemma", "cloud-4o"]
    assert "skipped local-gemma (lacks vision)" in rows[2]["reason"]


PIXEL = IMAGE.split(",", 1)[1]


def test_ollama_show_decides_what_its_models_can_do(standins, gateway):
    """Ollama's /api/show is the engine's word: a gemma3 without a projector is not sent images, and a model
    whose name says nothing is an embedder because Ollama says so."""
    import ollama

    home = standins(
        protocol="ollama",
        name="home",
        models=["gemma3", "house-vectors"],
        capabilities={"gemma3": ["completion"], "house-vectors": ["embedding"]},
    )
    cloud = standins(name="cloud", models=["gpt-4o"])
    gw = gateway(
        {
            "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
            "providers": {
                "home": {"api": "ollama", "base_url": home.base_url, "local": True},
                "cheapco": {"api": "openai-chat", "base_url": f"{cloud.base_url}/v1", "api_key": "env:CHEAP_KEY"},
            },
            "deployments": [
                {"name": "local-gemma", "provider": "home", "model": "gemma3", "tier": 0, "context_window": 8192},
                {"name": "local-vectors", "provider": "home", "model": "house-vectors", "tier": 0},
                {"name": "cloud-4o", "provider": "cheapco", "model": "gpt-4o", "tier": 1, "context_window": 128000},
            ],
        }
    )
    c = ollama.Client(host=gw.base_url, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    c.chat(model="auto", messages=[{"role": "user", "content": "what is this?", "images": [PIXEL]}])
    c.chat(model="auto", messages=[{"role": "user", "content": "hi"}])
    vectors = c.embed(model="local-vectors", input="hello")
    assert len(vectors.embeddings) == 1 and vectors.embeddings[0]
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [r["deployment"] for r in rows] == ["cloud-4o", "local-gemma", "local-vectors"]
    assert gw.ledger_rows("kind='attempt'") == []  # nothing was sent where it would fail
