"""Quality gates through the real server: an answer that is a 200 but fails its agent escalates, on every
surface, plain and streamed, and the failed answer is paid for once and recorded.

The cheap tier (tier 1, priced) is a stand-in scripted with fault ``reply``: a well-formed OpenAI
chat completion (the API reference's shape) that is empty, reasoning-only, broken JSON or a broken tool
call. The frontier tier answers with the stand-in's own model. Each client is the vendor's SDK; the
gateway translates the cheap tier's answer into the client's protocol and judges it there.
"""

from __future__ import annotations

import json
import re

import anthropic
import ollama
import openai
import pytest
from google import genai
from google.genai import types

from procs import MASTER_KEY, http, tiered_config

USAGE = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
CHEAP_COST = (1000 * 0.15 + 500 * 0.6) / 1e6  # the cheap tier's price for the failed answer
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}


def completion(message: dict, finish: str = "stop") -> str:
    """A chat.completion in the OpenAI API reference's shape."""
    return json.dumps(
        {
            "id": "chatcmpl-gate",
            "object": "chat.completion",
            "created": 1741570283,
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "message": {"role": "assistant", **message}, "logprobs": None, "finish_reason": finish}
            ],
            "usage": USAGE,
        }
    )


def stream_of(deltas: list[dict], finish: str = "stop") -> str:
    """chat.completion.chunk events with usage at the end (stream_options.include_usage), then [DONE]."""
    base = {"id": "chatcmpl-gate", "object": "chat.completion.chunk", "created": 1741570283, "model": "gpt-4o-mini"}
    chunks = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    chunks.append({**base, "choices": [], "usage": USAGE})
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


EMPTY = completion({"content": ""})
STARVED = completion({"content": None, "reasoning_content": "Let me think about this carefully..."}, "length")
BROKEN_JSON = completion({"content": '{"city": "Paris", "temp'})
BROKEN_CALL = completion(
    {
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Par'}}
        ],
    },
    "tool_calls",
)
UNKNOWN_CALL = completion(
    {
        "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "rm_rf", "arguments": "{}"}}],
    },
    "tool_calls",
)


@pytest.fixture
def tiers(standins, gateway):
    def make(**gates):
        cheap = standins(name="cheap", models=["gpt-4o-mini"])
        frontier = standins(name="frontier", models=["gpt-4o"])
        cfg = tiered_config(None, cheap, frontier, num_retries=0, breaker_failures=100)
        cfg["budgets"] = [{"scope": "global", "window": "day", "limit_usd": 100}]
        if gates:
            cfg["gates"] = gates
        return cheap, frontier, gateway(cfg)

    return make


def oai(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)


def rows(gw, n_requests: int = 1):
    requests = gw.rows_when("kind='request'", n_requests)
    attempts = gw.ledger_rows("kind='attempt'")
    return requests, attempts


def assert_escalated(gw, gate: str, *, stream: bool = False):
    [req], attempts = rows(gw)
    assert req["deployment"] == "frontier" and req["status"] == 200, req
    assert f"gate {gate}" in req["reason"] and "escalated to tier 3" in req["reason"], req["reason"]
    [att] = [a for a in attempts if a["deployment"] == "cheap"]
    assert att["reason"] == "gate failed" and att["error"].startswith(f"gate {gate}:"), att
    assert (att["prompt_tokens"], att["completion_tokens"]) == (1000, 500)  # the upstream's usage, billed
    assert att["cost_usd"] == pytest.approx(CHEAP_COST) and att["status"] == 200
    assert bool(req["stream"]) == stream
    # the spend metric counts the failed answer that was paid for, beside the one served
    text = http("GET", f"{gw.base_url}/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})[2].decode()
    spend = dict(re.findall(r'^tiergate_cost_usd_total\{deployment="(\w+)",tier="\d"\} (\S+)$', text, re.M))
    assert float(spend["cheap"]) == pytest.approx(CHEAP_COST) and float(spend["frontier"]) == pytest.approx(
        req["cost_usd"]
    )


@pytest.mark.parametrize(
    ("body", "gate", "kw"),
    [
        (EMPTY, "empty", {}),
        (STARVED, "reasoning_starved", {}),
        (BROKEN_JSON, "invalid_json", {"response_format": {"type": "json_object"}}),
        (BROKEN_CALL, "tool_arguments", {"tools": [WEATHER]}),
        (UNKNOWN_CALL, "unknown_tool", {"tools": [WEATHER]}),
    ],
)
def test_openai_chat_answers_that_fail_a_gate_escalate_and_are_billed(tiers, body, gate, kw):
    cheap, frontier, gw = tiers()
    cheap.faults({"mode": "reply", "body": body})
    raw = oai(gw).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Weather in Paris as JSON?"}], **kw
    )
    answer = raw.parse()
    assert raw.headers["x-tiergate-deployment"] == "frontier"
    assert f"gate {gate}" in raw.headers["x-tiergate-reason"]
    msg = answer.choices[0].message
    assert msg.content or msg.tool_calls
    assert_escalated(gw, gate)
    [post] = [q for q in frontier.requests() if q["method"] == "POST"]
    assert post["body"]["messages"][0]["content"] == "Weather in Paris as JSON?"  # the client's request, unchanged


@pytest.mark.parametrize(
    ("events", "gate", "kw"),
    [
        (stream_of([{"role": "assistant", "content": ""}]), "empty", {}),
        (stream_of([{"role": "assistant", "reasoning_content": "Hmm, let me see"}], "length"), "reasoning_starved", {}),
        (
            stream_of([{"role": "assistant", "content": '{"city": '}]),
            "invalid_json",
            {"response_format": {"type": "json_object"}},
        ),
        (
            stream_of(
                [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ],
                    },
                    {"tool_calls": [{"index": 0, "function": {"arguments": '{"loc'}}]},
                ],
                "tool_calls",
            ),
            "tool_arguments",
            {"tools": [WEATHER]},
        ),
    ],
)
def test_streams_are_held_or_prefixed_and_escalate_before_a_byte_reaches_the_client(tiers, events, gate, kw):
    cheap, frontier, gw = tiers()
    cheap.faults({"mode": "reply", "body": events, "content_type": "text/event-stream"})
    with oai(gw).chat.completions.with_streaming_response.create(
        model="auto",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
        **kw,
    ) as resp:
        assert resp.headers["x-tiergate-deployment"] == "frontier"
        chunks = list(resp.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or ())]
    assert text or calls
    assert_escalated(gw, gate, stream=True)


def test_a_passing_stream_in_prefix_mode_is_relayed_whole(tiers):
    cheap, frontier, gw = tiers()
    words = [{"role": "assistant", "content": ""}] + [{"content": f"word{i} "} for i in range(40)]
    cheap.faults({"mode": "reply", "body": stream_of(words), "content_type": "text/event-stream"})
    stream = oai(gw).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "".join(f"word{i} " for i in range(40))
    [req], attempts = rows(gw)
    assert req["deployment"] == "cheap" and not attempts
    assert (req["prompt_tokens"], req["completion_tokens"]) == (1000, 500)


def test_anthropic_messages_surface(tiers):
    cheap, frontier, gw = tiers()
    cheap.faults({"mode": "reply", "body": BROKEN_CALL})
    client = anthropic.Anthropic(base_url=gw.base_url, api_key=MASTER_KEY, max_retries=0)
    tool = {"name": "get_weather", "description": "weather", "input_schema": WEATHER["function"]["parameters"]}
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=100, messages=[{"role": "user", "content": "weather?"}], tools=[tool]
    )
    msg = raw.parse()
    assert raw.headers["x-tiergate-deployment"] == "frontier" and msg.content
    # a broken call from an OpenAI upstream cannot even be translated into a tool_use block: it fails as a
    # protocol error before the gate sees it; either way the cheap answer never reaches the client
    [req], attempts = rows(gw)
    assert req["deployment"] == "frontier"
    assert [a["deployment"] for a in attempts] == ["cheap"]

    cheap.faults({"mode": "reply", "body": EMPTY})
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-tiergate-deployment"] == "frontier" and "gate empty" in raw.headers["x-tiergate-reason"]


def test_responses_surface(tiers):
    cheap, frontier, gw = tiers()
    cheap.faults({"mode": "reply", "body": STARVED})
    raw = oai(gw).responses.with_raw_response.create(model="auto", input="hi", store=False)
    assert raw.headers["x-tiergate-deployment"] == "frontier"
    assert "gate reasoning_starved" in raw.headers["x-tiergate-reason"]
    assert raw.parse().output_text


def test_ollama_and_gemini_surfaces(tiers):
    cheap, frontier, gw = tiers()
    cheap.faults({"mode": "reply", "body": BROKEN_JSON})
    client = ollama.Client(host=gw.base_url, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    out = client.chat(model="auto", messages=[{"role": "user", "content": "JSON please"}], format="json")
    assert out.message.content
    cheap.faults({"mode": "reply", "body": EMPTY})
    g = genai.Client(api_key=MASTER_KEY, http_options=types.HttpOptions(base_url=gw.base_url, api_version="v1beta"))
    assert g.models.generate_content(model="auto", contents="hi").text
    reqs = gw.rows_when("kind='request'", 2)
    assert [r["deployment"] for r in reqs] == ["frontier", "frontier"]
    assert "gate invalid_json" in reqs[0]["reason"] and "gate empty" in reqs[1]["reason"]
    assert [a["error"].split(":")[0] for a in gw.ledger_rows("kind='attempt'")] == ["gate invalid_json", "gate empty"]


def test_with_nowhere_to_escalate_the_failed_answer_is_served_and_named(standins, gateway):
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(tiered_config(None, cheap, None, num_retries=0))
    cheap.faults({"mode": "reply", "body": EMPTY})
    raw = oai(gw).chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().choices[0].message.content == ""
    reason = raw.headers["x-tiergate-reason"]
    assert "failed gate empty" in reason and "served anyway" in reason, reason
    [req], attempts = rows(gw)
    assert req["deployment"] == "cheap" and req["cost_usd"] == pytest.approx(CHEAP_COST) and not attempts


def test_named_models_are_not_gated_by_default_and_rules_switch_them_on(tiers):
    cheap, frontier, gw = tiers(aliases={"cheap": {"enabled": True}})
    cheap.faults({"mode": "reply", "body": EMPTY}, {"mode": "reply", "body": EMPTY})
    c = oai(gw)
    # a deployment asked for by name: routing.escalate still lets it climb once its gate fails
    raw = c.chat.completions.with_raw_response.create(model="cheap", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-tiergate-deployment"] == "frontier"
    cheap2, frontier2, gw2 = tiers()
    cheap2.faults({"mode": "reply", "body": EMPTY})
    raw = oai(gw2).chat.completions.with_raw_response.create(
        model="cheap", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-tiergate-deployment"] == "cheap" and raw.parse().choices[0].message.content == ""


def test_max_escalations_zero_serves_the_first_answer(tiers):
    cheap, frontier, gw = tiers(max_escalations=0)
    cheap.faults({"mode": "reply", "body": EMPTY})
    raw = oai(gw).chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-tiergate-deployment"] == "cheap"
    assert "escalations used up" in raw.headers["x-tiergate-reason"]


def test_json_schema_and_configured_checks(tiers):
    cheap, frontier, gw = tiers(tasks={"coding": {"regex": ["def "]}})
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    cheap.faults({"mode": "reply", "body": completion({"content": '{"town": "Paris"}'})})
    raw = oai(gw).chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "city?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    assert "gate json_schema" in raw.headers["x-tiergate-reason"]
    cheap.faults({"mode": "reply", "body": completion({"content": "Here is some prose instead of code."})})
    raw = oai(gw).chat.completions.with_raw_response.create(
        model="task/coding", messages=[{"role": "user", "content": "write a function"}]
    )
    # the coding task starts at tier 1 (cheap); its answer lacks "def " and climbs to the frontier
    assert raw.headers["x-tiergate-deployment"] == "frontier" and "gate regex" in raw.headers["x-tiergate-reason"]


def health_budget(gw) -> dict:
    status, _, body = http("GET", f"{gw.base_url}/health")
    assert status == 200
    [b] = json.loads(body)["budgets"]
    return b


def test_the_failed_answer_is_in_the_budget_the_report_and_both_after_a_restart(standins, gateway):
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    frontier = standins(name="frontier", models=["gpt-4o"])
    cfg = tiered_config(None, cheap, frontier, num_retries=0)
    cfg["budgets"] = [{"scope": "global", "window": "day", "limit_usd": 100}]
    gw = gateway(cfg)
    cheap.faults({"mode": "reply", "body": EMPTY})
    oai(gw).chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    [req] = gw.rows_when("kind='request'", 1)
    [att] = gw.ledger_rows("kind='attempt'")
    paid = req["cost_usd"] + att["cost_usd"]
    assert att["cost_usd"] == pytest.approx(CHEAP_COST) and req["cost_usd"] > 0
    b = health_budget(gw)
    assert b["spent_usd"] == pytest.approx(paid, abs=1e-6) and b["reserved_usd"] == 0 and b["calls"] == 2
    report = json.loads(gw.cli("report", "--json").stdout)
    assert report["cost_usd"] == pytest.approx(paid) and report["gate_failures"] == 1 and report["requests"] == 1
    assert report["by_deployment"]["cheap"]["requests"] == 0  # paid there, served elsewhere
    gw.stop()
    gw2 = gateway(cfg)  # same ledger: the budget is rebuilt from it, the failed answer included
    assert health_budget(gw2)["spent_usd"] == pytest.approx(paid, abs=1e-6)


def test_a_reasoning_floor_raises_max_tokens_upstream_and_in_the_budget(standins, gateway):
    local = standins(name="local", models=["qwen3:8b"])
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    cfg = tiered_config(local, cheap, num_retries=0)
    qwen = cfg["deployments"][0]
    qwen.update(model="qwen3:8b", reasoning_floor_tokens=2048, max_output_tokens=4096, context_window=32768)
    qwen["price"] = {"input_per_mtok": 1.0, "output_per_mtok": 1.0}  # priced, so the budget reserves for it
    # fits the output asked for (256 tokens: $0.00026) but not the floor's (2048: $0.002)
    cfg["budgets"] = [{"scope": "deployment", "match": "local-8b", "window": "day", "limit_usd": 0.001}]
    gw = gateway(cfg)
    c = oai(gw)
    with pytest.raises(openai.RateLimitError) as ei:
        c.chat.completions.create(model="local-8b", messages=[{"role": "user", "content": "hi"}], max_tokens=256)
    # the reservation is for the 2048 output tokens the upstream would be sent, not the 256 asked for
    assert "budget deployment:local-8b:day" in ei.value.message and "needs up to $0.0020" in ei.value.message
    assert not [q for q in local.requests() if q["method"] == "POST"]
    gw.stop()
    del cfg["budgets"]
    gw2 = gateway(cfg)
    oai(gw2).chat.completions.create(model="local-8b", messages=[{"role": "user", "content": "hi"}], max_tokens=256)
    oai(gw2).chat.completions.create(model="local-8b", messages=[{"role": "user", "content": "hi"}], max_tokens=9000)
    sent = [q["body"] for q in local.requests() if q["method"] == "POST"]
    assert [b["max_tokens"] for b in sent] == [2048, 4096]  # raised to the floor; held to max_output_tokens


@pytest.mark.parametrize(
    ("starve_below", "sent", "served"),
    [
        (2048, [1024, 2048], "local-8b"),  # the floor's 1024 starves it; twice that is enough
        (100_000, [1024, 2048], "cheap"),  # still starved with 2048: then it escalates
    ],
)
def test_a_starved_answer_is_retried_once_with_a_larger_allowance(standins, gateway, starve_below, sent, served):
    local = standins(name="local", models=["qwen3:8b"])
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    # a reasoning model that thinks through any max_tokens below starve_below and answers nothing
    local.control("capability", {"profiles": {"qwen3:8b": {"starve_below": starve_below}}})
    cfg = tiered_config(local, cheap, num_retries=0)
    qwen = cfg["deployments"][0]
    qwen.update(model="qwen3:8b", reasoning_floor_tokens=1024, max_output_tokens=8192, context_window=32768)
    qwen["price"] = {"input_per_mtok": 1.0, "output_per_mtok": 1.0}  # priced, so the failed answers' cost shows
    cfg["budgets"] = [{"scope": "global", "window": "day", "limit_usd": 100}]
    gw = gateway(cfg)
    raw = oai(gw).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "think"}], max_tokens=256
    )
    answer, reason = raw.parse(), raw.headers["x-tiergate-reason"]
    assert raw.headers["x-tiergate-deployment"] == served and answer.choices[0].message.content
    assert [q["body"]["max_tokens"] for q in local.requests() if q["method"] == "POST"] == sent
    assert "gate reasoning_starved" in reason and "local-8b retried with max_tokens 2048" in reason
    [req] = gw.rows_when("kind='request'", 1)
    failed = gw.ledger_rows("kind='attempt'")
    # each starved answer is billed: all the tokens it spent thinking, at the local deployment's price
    assert [(a["deployment"], a["completion_tokens"], a["reason"]) for a in failed] == [
        ("local-8b", n, "gate failed") for n in sent[: len(sent) - (served == "local-8b")]
    ]
    assert all(a["cost_usd"] == pytest.approx((a["prompt_tokens"] + a["completion_tokens"]) / 1e6) for a in failed)
    if served == "local-8b":
        assert "escalated" not in reason and req["completion_tokens"] > 0
        assert [q for q in cheap.requests() if q["method"] == "POST"] == []
    else:
        assert "escalated to tier 1" in reason and req["deployment"] == "cheap"
    report = json.loads(gw.cli("report", "--json").stdout)
    assert report["gate_failures"] == len(failed) and report["cost_usd"] == pytest.approx(
        sum(a["cost_usd"] for a in failed) + req["cost_usd"]
    )


def test_recommend_reads_the_gate_failures_in_the_ledger(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(tiered_config(local, cheap, num_retries=0))
    local.faults({"mode": "reply", "body": EMPTY, "times": 4})
    c = oai(gw)
    for _ in range(5):
        c.chat.completions.create(model="task/classification", messages=[{"role": "user", "content": "label this"}])
    c.chat.completions.create(model="task/coding", messages=[{"role": "user", "content": "code"}])
    gw.rows_when("kind='request'", 6)
    gw.stop()
    [rec] = json.loads(gw.cli("recommend", "--min-requests", "5", "--json").stdout)
    assert (rec["task"], rec["current_tier"], rec["suggested_tier"]) == ("classification", 0, 1)
    assert (rec["requests"], rec["failed_at_start"], rec["gates"]) == (5, 4, {"empty": 4})
    text = gw.cli("recommend", "--min-requests", "5").stdout
    assert "tasks.classification: 0 -> 1  (4 of 5 answers at tier 0 failed a gate: empty 4)" in text
    quiet = gw.cli("recommend", "--min-requests", "6").stdout  # too little evidence: no advice
    assert "no task to move" in quiet and "classification 5" in quiet


def test_a_client_that_leaves_during_a_held_stream_is_billed_and_logs_no_traceback(standins, gateway):
    import httpx

    local = standins(name="local", models=["llama-8b"], chunks=30, chunk_delay=0.1)  # a 3-second answer
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(tiered_config(local, cheap, num_retries=0))
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER]}
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    with pytest.raises(httpx.ReadTimeout):  # tools: the stream is held, so nothing comes for 3 s
        with httpx.stream("POST", f"{gw.base_url}/v1/chat/completions", json=body, headers=headers, timeout=1.0) as r:
            r.read()
    [row] = gw.rows_when("kind='request'", 1, within_s=60)
    assert row["status"] == 499 and row["deployment"] == "local-8b" and row["completion_tokens"] > 0
    assert oai(gw).chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}]).choices
    gw.stop()
    assert not [line for line in gw.log if "Traceback" in line or "ERROR" in line], "\n".join(gw.log)
