"""The same gateway on /v1/responses: budgets, rate limits, the guardian and task routing as on chat completions."""

from __future__ import annotations

import openai
import pytest

from procs import MASTER_KEY, wait_until


def config(local, cloud, **extra) -> dict:
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": {
            "box": {"api": "openai-chat", "base_url": f"{local.base_url}/v1", "local": True},
            "cloudco": {"api": "openai-chat", "base_url": f"{cloud.base_url}/v1"},
        },
        "deployments": [
            {"name": "local-8b", "provider": "box", "model": "llama-8b", "tier": 0, "context_window": 4096},
            {
                "name": "cloud",
                "provider": "cloudco",
                "model": "gpt-4o-mini",
                "tier": 1,
                "context_window": 128000,
                "price": {"input_per_mtok": 100, "output_per_mtok": 100},  # pricey: a few requests exhaust $0.01
            },
        ],
        "tasks": {"chat": 0, "coding": 1},
        "routing": {"num_retries": 0},
        **extra,
    }


def client(gw, **headers) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0, default_headers=headers)


def call(c, model: str = "task/coding", **kw):
    try:
        return c.responses.with_raw_response.create(
            model=model, input="write a release plan", max_output_tokens=20, **kw
        )
    except openai.APIStatusError as exc:
        return exc


def test_task_routing_and_a_rejecting_budget(standins, gateway):
    local, cloud = standins(name="local", models=["llama-8b"]), standins(name="cloud", models=["gpt-4o-mini"])
    gw = gateway(config(local, cloud, budgets=[{"scope": "global", "window": "day", "limit_usd": 0.01}]))
    c = client(gw)
    first = call(c)
    assert first.headers["x-tiergate-deployment"] == "cloud" and "task=coding" in first.headers["x-tiergate-reason"]
    assert float(first.headers["x-tiergate-cost-usd"]) > 0
    chat = call(c, model="task/chat")
    assert chat.headers["x-tiergate-deployment"] == "local-8b"  # free: the budget does not stop it
    results = [call(c) for _ in range(12)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert refused and all(r.status_code == 429 and r.body["code"] == "budget_exceeded" for r in refused)
    gw.stop()
    rows = gw.ledger_rows("kind='request' AND protocol='openai-responses'")
    assert sum(r["cost_usd"] for r in rows) <= 0.01 and {r["status"] for r in rows} == {200, 429}


def test_rate_limit_and_the_guardian(standins, gateway):
    local, cloud = standins(name="local", models=["llama-8b"]), standins(name="cloud", models=["gpt-4o-mini"])
    gw = gateway(
        config(
            local,
            cloud,
            limits=[{"scope": "agent", "match": "fast-bot", "rpm": 2}],
            guardian={"session_max_usd": 0.005},
        )
    )
    fast = client(gw, **{"X-Tiergate-Agent": "fast-bot"})
    got = [call(fast, model="task/chat") for _ in range(4)]
    limited = [r for r in got if isinstance(r, Exception)]
    assert limited and all(r.status_code == 429 for r in limited)
    spender = client(gw, **{"X-Tiergate-Session": "run-7"})
    results = [call(spender) for _ in range(8)]  # ~$0.002 each on the pricey tier: stopped past $0.005
    assert isinstance(results[-1], openai.PermissionDeniedError) and "session_max_usd" in results[-1].message
    with pytest.raises(openai.PermissionDeniedError):
        client(gw, **{"X-Tiergate-Session": "run-7"}).responses.create(
            model="task/coding", input="x", max_output_tokens=20, stream=True
        )
    assert wait_until(lambda: gw.ledger_rows("session='run-7'") != [], timeout=10)
