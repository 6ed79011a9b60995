"""A 200 whose body is not the JSON object the protocol promises fails over, on every upstream protocol.

Each upstream protocol's adapter reads a non-stream reply; a stand-in of that protocol answers the
first request with exactly the given body (fault ``reply``). The gateway must not relay it, crash on
it, or bill it as an answer: the attempt fails as a protocol error and the healthy tier answers. The
client is the official SDK of a surface that reaches that protocol (Gemini and Ollama deployments
serve their own clients).
"""

from __future__ import annotations

from collections.abc import Callable

import ollama
import openai
import pytest
from google import genai
from google.genai import types

from procs import MASTER_KEY, tiered_config, wait_until

Ask = Callable[[str], str]  # gateway base URL -> (model -> the answer's text)


def ask_openai(base_url: str) -> Ask:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    msgs = [{"role": "user", "content": "hi"}]
    return lambda model: (
        client.chat.completions.create(model=model, messages=msgs, max_tokens=20).choices[0].message.content or ""
    )  # type: ignore[arg-type]


def ask_gemini(base_url: str) -> Ask:
    client = genai.Client(api_key=MASTER_KEY, http_options=types.HttpOptions(base_url=base_url, api_version="v1beta"))
    return lambda model: client.models.generate_content(model=model, contents="hi").text or ""


def ask_ollama(base_url: str) -> Ask:
    client = ollama.Client(host=base_url, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    return lambda model: client.chat(model=model, messages=[{"role": "user", "content": "hi"}]).message.content or ""


PROTOCOLS = {  # api -> (stand-in protocol, base URL suffix, model, the client that reaches it)
    "openai-chat": ("openai", "/v1", "gpt-4o-mini", ask_openai),
    "openai-responses": ("openai", "/v1", "gpt-4o-mini", ask_openai),
    "anthropic-messages": ("anthropic", "/v1", "claude-sonnet-4-5", ask_openai),
    "google-generative-ai": ("gemini", "/v1beta", "gemini-2.5-flash", ask_gemini),
    "ollama": ("ollama", "", "qwen3:8b", ask_ollama),
}
BODIES = ["[1, 2]", '"an answer as a bare string"', "42", "null", "{not json", ""]


@pytest.mark.parametrize("api", PROTOCOLS)
def test_a_reply_that_is_not_a_json_object_fails_over_to_the_next_tier(api, standins, gateway):
    kind, suffix, model, client = PROTOCOLS[api]
    up = standins(kind, name="odd", models=[model])
    frontier = standins(name="frontier", models=["gpt-4o"])
    cfg = tiered_config(None, None, frontier, num_retries=0, breaker_failures=100)  # every body reaches it
    cfg["providers"]["odd"] = {"api": api, "base_url": f"{up.base_url}{suffix}", "api_key": "env:CHEAP_KEY"}
    cfg["deployments"].append({"name": "odd", "provider": "odd", "model": model, "tier": 1, "context_window": 32768})
    gw = gateway(cfg)
    ask = client(gw.base_url)
    for body in BODIES:
        up.faults({"mode": "reply", "body": body})
        assert ask("odd"), body
    assert [q["fault"] for q in up.requests() if q["method"] == "POST"] == ["reply"] * len(BODIES)
    attempts, answered = "kind='attempt' AND deployment='odd'", "kind='request' AND status=200"
    assert wait_until(lambda: len(gw.ledger_rows(answered)) == len(BODIES), timeout=10)
    assert {r["deployment"] for r in gw.ledger_rows(answered)} == {"frontier"}
    assert wait_until(lambda: len(gw.ledger_rows(attempts)) == len(BODIES), timeout=10)
    for row in gw.ledger_rows(attempts):
        assert "protocol: upstream sent a body that is not" in row["error"], row["error"]
        assert row["cost_usd"] == 0
