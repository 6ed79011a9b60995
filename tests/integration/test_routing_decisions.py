"""Routing decisions on real traffic, through the real gateway and a real llama.cpp engine (issue 15).

Two llama.cpp servers run SmolLM2: one started with embeddings, one without.
The cloud tiers are stand-ins. Clients are the official openai and anthropic SDKs.
"""

from __future__ import annotations

import anthropic
import openai
import pytest

from procs import MASTER_KEY, bundled_gguf, wait_until

MSG = [{"role": "user", "content": "hi"}]


def _config(smol, cloud, claude) -> dict:
    row = {"gguf": str(smol), "memory_mb": 400, "pinned": True, "context": 256, "threads": 1, "parallel": 1}
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "local_models": {
            "budget_mb": 2000,
            "default": "chat",
            "models": [
                {"name": "chat", **row},
                {"name": "embed", **row, "extra_args": ["--embedding", "--pooling", "mean"]},
            ],
        },
        "providers": {
            "cloudco": {"api": "openai-chat", "base_url": f"{cloud.base_url}/v1"},
            "anthro": {"api": "anthropic-messages", "base_url": claude.base_url, "api_key": "sk-ant-test"},
        },
        "deployments": [
            {"name": "local-chat", "local_model": "chat", "tier": 0, "max_output_tokens": 16},
            # says it embeds, but its server was started without --embedding: llama.cpp answers 501
            {"name": "other-claims", "local_model": "chat", "tier": 0, "capabilities": ["chat", "embeddings"]},
            {"name": "local-embed", "local_model": "embed", "tier": 0, "capabilities": ["embeddings"]},
            {
                "name": "cloud",
                "provider": "cloudco",
                "model": "gpt-4o-mini",
                "tier": 1,
                "context_window": 128000,
                "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
            },
            {
                "name": "sonnet",
                "provider": "anthro",
                "model": "claude-sonnet-4-5",
                "tier": 3,
                "context_window": 200000,
                "price": {"input_per_mtok": 3, "output_per_mtok": 15},
            },
        ],
        "aliases": {"cloud/frontier": ["sonnet"]},
        "tasks": {"coding": 1},
        "routing": {"num_retries": 2, "retry_backoff_s": 0.05, "breaker_failures": 1, "breaker_cooldown_s": 60},
    }


@pytest.fixture
def fleet(standins, gateway):
    smol = bundled_gguf()
    cloud = standins(name="cloud", models=["gpt-4o-mini"])
    claude = standins("anthropic", name="claude", models=["claude-sonnet-4-5"])
    gw = gateway(_config(smol, cloud, claude))
    oai = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=120)
    assert wait_until(
        lambda: (
            oai.chat.completions.with_raw_response.create(model="local-chat", messages=MSG, max_tokens=2).headers[
                "x-tiergate-deployment"
            ]
            == "local-chat"
        ),
        timeout=120,
    )
    return gw, oai, cloud


def _deployment(raw) -> str:
    return raw.headers["x-tiergate-deployment"]


def test_embeddings_stay_on_the_embedding_model_and_never_take_down_chat(fleet):
    gw, oai, cloud = fleet
    raw = oai.embeddings.with_raw_response.create(model="auto", input="the quick brown fox")
    assert _deployment(raw) == "local-embed"
    assert len(raw.parse().data[0].embedding) > 10

    with pytest.raises(openai.BadRequestError) as err:  # a chat-only deployment cannot embed: a 400, not a 503
        oai.embeddings.create(model="local-chat", input="x")
    assert err.value.body["code"] == "model_not_capable" and "lacks embeddings" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="sonnet", input="x")

    # a deployment that claims embeddings but answers 501: not retried, no other model's vectors, and its
    # chat keeps being served locally (breaker_failures is 1: a 501 counted as a failure would open it)
    before = len(cloud.requests())
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as err:
            oai.embeddings.create(model="other-claims", input="x")
        assert err.value.status_code == 503
    raw = oai.chat.completions.with_raw_response.create(model="other-claims", messages=MSG, max_tokens=2)
    assert _deployment(raw) == "other-claims"
    assert len(cloud.requests()) == before  # nothing went to the paid tier
    rows = gw.rows_when("kind='attempt' AND deployment='other-claims'", 3)
    assert len(rows) == 3 and {r["status"] for r in rows} == {501}


def test_emergency_mode_serves_what_claude_code_asks_for_locally(fleet):
    gw, oai, _ = fleet
    claude = anthropic.Anthropic(base_url=gw.base_url, api_key=MASTER_KEY, max_retries=0, timeout=120)
    gw.cli("emergency", "on", "--reason", "bill spike")

    def served_locally() -> bool:
        raw = claude.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=8, messages=MSG)
        return _deployment(raw).startswith("local-chat")

    assert wait_until(served_locally, timeout=30)
    for model in ("cloud/frontier", "sonnet", "gpt-4o-mini"):
        raw = claude.messages.with_raw_response.create(model=model, max_tokens=8, messages=MSG)
        assert _deployment(raw).startswith("local-chat"), (model, raw.headers["x-tiergate-reason"])
        assert "emergency mode on (bill spike)" in raw.headers["x-tiergate-reason"]
        assert raw.parse().content[0].type == "text"
    gw.cli("emergency", "off")


def test_privacy_fails_closed(fleet):
    gw, oai, cloud = fleet
    before = len(cloud.requests())
    for value in ("local", "local_only", "true", "strict", "LOCAL-ONLY"):
        raw = oai.chat.completions.with_raw_response.create(
            model="cloud", messages=MSG, max_tokens=2, extra_headers={"X-Tiergate-Privacy": value}
        )
        assert _deployment(raw).startswith("local-chat"), value
    assert len(cloud.requests()) == before
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="cloud", messages=MSG, extra_headers={"X-Tiergate-Privacy": "cloud-is-fine"})
    assert "allowed: local-only" in err.value.body["message"]
    claude = anthropic.Anthropic(base_url=gw.base_url, api_key=MASTER_KEY, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as aerr:
        claude.messages.create(model="sonnet", max_tokens=8, messages=MSG, extra_headers={"X-Tiergate-Privacy": "?"})
    assert aerr.value.body["type"] == "error" and "X-Tiergate-Privacy" in aerr.value.body["error"]["message"]
