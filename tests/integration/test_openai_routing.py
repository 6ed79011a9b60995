"""The real gateway process, driven by the official openai SDK, over stand-in upstreams."""

from __future__ import annotations

import asyncio
import json
import time

import openai
import pytest

from procs import CHEAP_KEY, MASTER_KEY, http, tiered_config


def client(gw, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0, **kw)


MSG = [{"role": "user", "content": "classify this: the invoice is overdue"}]


def test_auto_goes_to_cheapest_tier_with_route_headers(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(tiered_config(local, cheap))
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=MSG, max_tokens=20)
    resp = raw.parse()
    assert resp.choices[0].message.content.startswith("[local]")
    assert raw.headers["x-tiergate-deployment"] == "local-8b"
    assert raw.headers["x-tiergate-tier"] == "0"
    assert "cheapest at tier 0" in raw.headers["x-tiergate-reason"]
    assert float(raw.headers["x-tiergate-cost-usd"]) == 0.0
    assert raw.headers["x-request-id"]
    assert float(raw.headers["x-tiergate-overhead-ms"]) >= 0
    assert resp.usage.prompt_tokens > 0
    assert cheap.requests() == []


def test_task_header_and_task_model_pick_minimum_tier_and_cost_is_priced(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(tiered_config(local, cheap))
    c = client(gw)
    raw = c.chat.completions.with_raw_response.create(
        model="auto", messages=MSG, extra_headers={"X-Tiergate-Task": "coding"}
    )
    r = raw.parse()
    assert raw.headers["x-tiergate-deployment"] == "cheap"
    expected = (r.usage.prompt_tokens * 0.15 + r.usage.completion_tokens * 0.6) / 1e6
    assert float(raw.headers["x-tiergate-cost-usd"]) == pytest.approx(expected, rel=1e-6)
    raw2 = c.chat.completions.with_raw_response.create(model="task/classification", messages=MSG)
    assert raw2.headers["x-tiergate-deployment"] == "local-8b"
    # the vendor's secret travelled upstream, only there
    assert cheap.requests()[0]["headers"]["authorization"] == f"Bearer {CHEAP_KEY}"
    assert "authorization" not in local.requests()[0]["headers"]  # the client's key never goes upstream


def test_an_upstream_cookie_never_reaches_another_callers_request(standins, gateway):
    """Upstreams set cookies (the stand-in, like the real API's CDN, on every answer).

    One session serves all callers."""
    local = standins(name="local", models=["llama-8b"])
    cfg = tiered_config(local, None)
    for p in cfg["providers"].values():  # a host name: aiohttp's default jar ignores cookies from IP addresses
        p["base_url"] = p["base_url"].replace("127.0.0.1", "localhost")
    gw = gateway(cfg)
    for _ in range(3):
        raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=MSG)
        assert "set-cookie" not in raw.headers  # nor is the upstream's cookie handed to the client
    seen = local.requests()
    assert len(seen) == 3
    assert [r["headers"].get("cookie") for r in seen] == [None, None, None]


def test_body_passes_through_untouched_except_model(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    gw = gateway(tiered_config(local, None))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "d",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    client(gw).chat.completions.create(
        model="local/fast",
        messages=MSG,
        tools=tools,
        tool_choice="auto",
        temperature=0.3,
        response_format={"type": "json_object"},
        extra_body={"vendor_knob": {"a": [1, 2]}},
        seed=7,
    )
    sent = local.requests()[0]["body"]
    assert sent["model"] == "llama-8b"
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"
    assert sent["response_format"] == {"type": "json_object"} and sent["vendor_knob"] == {"a": [1, 2]}
    assert sent["temperature"] == 0.3 and sent["seed"] == 7 and sent["messages"] == MSG


def test_tool_calls_come_back_intact(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    gw = gateway(tiered_config(local, None))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    r = client(gw).chat.completions.create(model="auto", messages=MSG, tools=tools, tool_choice="required")
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "weather"
    stream = client(gw).chat.completions.create(
        model="auto", messages=MSG, tools=tools, tool_choice="required", stream=True
    )
    args = "".join(
        ch.choices[0].delta.tool_calls[0].function.arguments or ""
        for ch in stream
        if ch.choices and ch.choices[0].delta.tool_calls
    )
    assert args == call.function.arguments


def test_streaming_forwards_chunks_as_they_arrive(standins, gateway):
    # 0.3 s apart: a client process the machine leaves waiting for a second still sees the spread
    local = standins(name="local", models=["llama-8b"], chunks=10, chunk_delay=0.3)
    gw = gateway(tiered_config(local, None))
    t0 = time.perf_counter()
    arrivals, text = [], []
    stream = client(gw).chat.completions.with_raw_response.create(model="auto", messages=MSG, stream=True)
    assert float(stream.headers["x-tiergate-overhead-ms"]) >= 0
    for chunk in stream.parse():
        arrivals.append(time.perf_counter() - t0)
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
    assert "".join(text).startswith("[local]")
    # upstream spreads ~12 events over ~3.6 s: a buffering proxy would deliver them all at once at the end
    assert arrivals[-1] - arrivals[0] > 1.0
    assert arrivals[0] < arrivals[-1] / 2
    # the usage chunk we asked upstream for (the client did not) is not shown to the client
    assert local.requests()[0]["body"]["stream_options"] == {"include_usage": True}


def test_stream_usage_is_returned_when_asked_and_recorded(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    gw = gateway(tiered_config(local, None))
    chunks = list(
        client(gw).chat.completions.create(
            model="auto", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    gw.stop()
    row = gw.ledger_rows("kind='request'")[0]
    assert row["stream"] == 1 and row["completion_tokens"] == chunks[-1].usage.completion_tokens
    assert row["usage_estimated"] == 0 and row["ttft_ms"] is not None


def test_async_client_concurrent_requests(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    gw = gateway(tiered_config(local, None))

    async def main():
        c = openai.AsyncOpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
        rs = await asyncio.gather(*(c.chat.completions.create(model="auto", messages=MSG) for _ in range(20)))
        await c.close()
        return rs

    rs = asyncio.run(main())
    assert len({r.id for r in rs}) == 20
    assert all(r.choices[0].message.content.startswith("[local]") for r in rs)


def test_models_lists_auto_tasks_aliases_deployments(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(tiered_config(local, cheap))
    ids = [m.id for m in client(gw).models.list()]
    assert ids[:1] == ["auto"] and "task/coding" in ids and "local/fast" in ids and "local-8b" in ids
    assert "task/reasoning" not in ids  # needs tier 3, which nothing here reaches: it would only 503


def test_embeddings_pass_through(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    cfg = tiered_config(local, None)
    cfg["deployments"][0]["capabilities"] = ["chat", "tools", "embeddings"]  # a chat model name: say it embeds
    gw = gateway(cfg)
    r = client(gw).embeddings.create(model="local-8b", input=["a", "b"])
    assert len(r.data) == 2 and len(r.data[0].embedding) > 0
    assert local.requests()[0]["path"].startswith("/v1/embeddings")


def test_health_is_open_and_metrics_need_a_key(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    gw = gateway(tiered_config(local, None))
    status, _, body = http("GET", f"{gw.base_url}/health")
    h = json.loads(body)
    assert status == 200 and h["status"] == "ok" and h["deployments"]["local-8b"]["available"] is True
    assert http("GET", f"{gw.base_url}/metrics")[0] == 401
    client(gw).chat.completions.create(model="auto", messages=MSG)
    text = http("GET", f"{gw.base_url}/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})[2].decode()
    assert 'tiergate_requests_total{deployment="local-8b",status="200",tier="0"} 1.0' in text
    assert "tiergate_overhead_seconds_bucket" in text


def test_a_client_that_leaves_after_the_final_event_got_the_whole_answer(standins, gateway):
    """Codex and others hang up once they read the final event; an upstream that ends its body a while
    after [DONE] must not make that a 499 (the ledger's status says whether the client got its answer)."""
    local = standins(name="local", models=["llama-8b"], chunks=5)
    local.faults({"mode": "linger", "delay_s": 20})  # the body ends 20 s after [DONE]
    gw = gateway(tiered_config(local, None))
    t0 = time.perf_counter()
    with client(gw).chat.completions.create(model="auto", messages=MSG, stream=True) as stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.startswith("[local]") and time.perf_counter() - t0 < 15  # read to [DONE], not to the end
    row = gw.rows_when("kind='request'", 1)[0]
    assert row["status"] == 200 and row["completion_tokens"] > 0, row
