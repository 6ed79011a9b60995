"""A deployment's own rpm/tpm (a provider quota, LiteLLM's per-entry rpm/tpm) through the real gateway.

A deployment at its quota is skipped for the next candidate; only when every candidate is at its quota does
the client get a 429 in its own error format, with Retry-After. tpm counts the prompt estimate when a request
is routed there and the completion when it ends.
"""

from __future__ import annotations

import openai
import pytest

from procs import CHEAP_KEY, MASTER_KEY, start_gateway

MSG = [{"role": "user", "content": "hi"}]


def quota_config(a, b, a_quota: dict, b_quota: dict | None = None) -> dict:
    def dep(name: str, up) -> dict:
        return {"name": name, "provider": name, "model": "gpt-4o-mini", "tier": 1, "context_window": 8192}

    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": {
            "a": {"api": "openai-chat", "base_url": f"{a.base_url}/v1", "api_key": "env:CHEAP_KEY"},
            "b": {"api": "openai-chat", "base_url": f"{b.base_url}/v1", "api_key": "env:CHEAP_KEY"},
        },
        "deployments": [{**dep("a", a), **a_quota}, {**dep("b", b), **(b_quota or {})}],
        "aliases": {"pool": ["a", "b"]},
        "routing": {"num_retries": 0},
    }


def served_by(client: openai.OpenAI) -> str:
    r = client.chat.completions.with_raw_response.create(model="pool", messages=MSG, max_tokens=20)
    return r.headers["x-tiergate-deployment"]


@pytest.fixture
def pair(standins):
    return standins(name="a", models=["gpt-4o-mini"]), standins(name="b", models=["gpt-4o-mini"])


def test_a_deployment_at_its_rpm_passes_requests_to_the_next_member(pair, gateway):
    a, b = pair
    gw = gateway(quota_config(a, b, {"rpm": 2}))
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    assert [served_by(client) for _ in range(5)] == ["a", "a", "b", "b", "b"]
    assert len(a.requests()) == 2  # never sent a third: the quota is held before the call, not after a 429
    rows = gw.rows_when("kind='request' AND deployment='b'", 3)
    assert all("rate limit: deployment a allows 2 requests per minute" in r["reason"] for r in rows), rows


def test_when_every_candidate_is_at_its_quota_the_client_gets_429_with_retry_after(pair, gateway):
    a, b = pair
    gw = gateway(quota_config(a, b, {"rpm": 1}, {"rpm": 1}))
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    assert [served_by(client) for _ in range(2)] == ["a", "b"]
    with pytest.raises(openai.RateLimitError) as err:
        served_by(client)
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 60
    assert "every candidate is at its rate limit" in err.value.message
    assert "deployment a allows 1 requests per minute" in err.value.message
    (row,) = gw.rows_when("kind='request' AND status=429", 1)
    assert row["cost_usd"] == 0


def test_tpm_counts_the_completion_when_the_request_ends(pair, gateway):
    a, b = pair
    gw = gateway(quota_config(a, b, {"tpm": 1000}))
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    a.faults({"mode": "usage", "usage": {"completion_tokens": 1000}})  # a long answer, as the upstream says
    assert served_by(client) == "a"
    # the prompts alone (a few tokens) would fit again; with the 1000 completion tokens counted, a's minute is full
    assert served_by(client) == "b"


def test_one_request_larger_than_the_tpm_still_fits_an_empty_minute(pair, gateway):
    a, b = pair
    gw = gateway(quota_config(a, b, {"tpm": 1}))
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    assert [served_by(client) for _ in range(2)] == ["a", "b"]


def test_two_replicas_on_redis_hold_a_quota_once(pair, tmp_path, redis_prefix):
    a, b = pair
    cfg = quota_config(a, b, {"rpm": 3})
    cfg.update(state="redis://127.0.0.1:6379/0", state_prefix=redis_prefix)
    replicas = []
    try:
        for i in range(2):
            (tmp_path / f"r{i}").mkdir()
            replicas.append(start_gateway(tmp_path / f"r{i}", cfg, env_extra={"CHEAP_KEY": CHEAP_KEY}))
        clients = [openai.OpenAI(base_url=f"{r.base_url}/v1", api_key=MASTER_KEY, max_retries=0) for r in replicas]
        served = [served_by(clients[i % 2]) for i in range(8)]
    finally:
        for r in replicas:
            r.stop()
    assert served.count("a") == 3 and len(a.requests()) == 3, served  # not 3 per replica
