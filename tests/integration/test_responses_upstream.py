"""Upstreams that speak Responses (api: openai-responses): passed through for Responses clients, translated for
chat and Messages clients; reasoning items survive previous_response_id. Against the OpenAI stand-in's /v1/responses."""

from __future__ import annotations

import json

import anthropic
import openai

from procs import MASTER_KEY

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


def posted(up) -> list[dict]:
    """What the gateway sent a stand-in, without its GET probes of a local provider (/props, /v1/models)."""
    return [r for r in up.requests() if r["method"] == "POST"]


def config(up, model: str = "gpt-5-mini") -> dict:
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": {"oai": {"api": "openai-responses", "base_url": f"{up.base_url}/v1", "api_key": "env:CHEAP_KEY"}},
        "deployments": [
            {
                "name": "smart",
                "provider": "oai",
                "model": model,
                "tier": 2,
                "context_window": 400000,
                "max_output_tokens": 1000,
                "price": {"input_per_mtok": 0.25, "output_per_mtok": 2.0},
            }
        ],
        "routing": {"num_retries": 0},
    }


def oclient(base_url: str, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)


def test_the_standin_speaks_responses_as_the_sdk_reads_it(standins):
    up = standins(name="oai", models=["gpt-5-mini"], api_key="sk-cheap-secret")
    c = oclient(up.base_url, "sk-cheap-secret")
    r = c.responses.create(model="gpt-5-mini", input="Hi", include=["reasoning.encrypted_content"])
    assert [o.type for o in r.output] == ["reasoning", "message"] and r.output[0].encrypted_content
    with c.responses.stream(model="gpt-5-mini", input="use tool", tools=[WEATHER]) as s:
        final = s.get_final_response()
    assert final.output[-1].type == "function_call" and json.loads(final.output[-1].arguments) == {"city": "Paris"}
    again = [*r.output, {"role": "user", "content": "more"}]
    assert c.responses.create(model="gpt-5-mini", input=[o if isinstance(o, dict) else o.model_dump() for o in again])
    forged = {**r.output[0].model_dump(), "encrypted_content": "enc_forged"}
    try:
        c.responses.create(model="gpt-5-mini", input=[forged, {"role": "user", "content": "x"}])
        raise AssertionError("forged reasoning accepted")
    except openai.BadRequestError as exc:
        assert "could not be verified" in str(exc)


def test_responses_pass_through_and_reasoning_survives_previous_response_id(standins, gateway):
    up = standins(name="oai", models=["gpt-5-mini"], api_key="sk-cheap-secret")
    gw = gateway(config(up))
    c = oclient(gw.base_url)
    body = dict(
        model="smart",
        instructions="Be brief.",
        input="Hello",
        include=["reasoning.encrypted_content"],
        reasoning={"effort": "low", "summary": "auto"},
        prompt_cache_key="k1",
        max_output_tokens=5000,
    )
    first = c.responses.with_raw_response.create(**body)
    r = first.parse()
    assert [o.type for o in r.output] == ["reasoning", "message"] and r.output[0].encrypted_content
    sent = posted(up)[0]["body"]
    # byte-faithful but for the model and the deployment's output limit
    assert sent == {**body, "model": "gpt-5-mini", "max_output_tokens": 1000, "stream": False}
    assert "not sent" not in first.headers["x-tiergate-reason"]
    with c.responses.stream(model="smart", input="And now?", previous_response_id=r.id) as s:
        events = list(s)
        second = s.get_final_response()
    assert second.output_text.startswith("[oai]")
    resent = posted(up)[-1]["body"]
    assert "previous_response_id" not in resent  # answered by tiergate: the stand-in would refuse it
    kinds = [i.get("type", "message") for i in resent["input"]]
    assert kinds == ["message", "reasoning", "message", "message"]
    assert resent["input"][1]["encrypted_content"] == r.output[0].encrypted_content  # verified by the stand-in
    assert "response.reasoning_summary_text.delta" in [e.type for e in events]  # the upstream's own events
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [row["status"] for row in rows] == [200, 200]
    assert all(row["usage_estimated"] == 0 and row["completion_tokens"] > 0 and row["cost_usd"] > 0 for row in rows)
    assert rows[0]["completion_tokens"] == r.usage.output_tokens and rows[0]["prompt_tokens"] == r.usage.input_tokens


def test_chat_and_messages_clients_reach_a_responses_upstream(standins, gateway):
    up = standins(name="oai", models=["gpt-5-mini"], api_key="sk-cheap-secret")
    gw = gateway(config(up))
    c = oclient(gw.base_url)
    chat = c.chat.completions.create(
        model="smart", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert chat.choices[0].message.content.startswith("[oai]") and chat.usage.completion_tokens > 0
    sent = posted(up)[-1]["body"]
    assert sent["input"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert sent["store"] is False
    tools = [{"type": "function", "function": {k: WEATHER[k] for k in ("name", "description", "parameters")}}]
    stream = c.chat.completions.create(
        model="smart",
        messages=[{"role": "user", "content": "use tool"}],
        tools=tools,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    args = "".join(
        tc.function.arguments or "" for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or ()
    )
    assert json.loads(args) == {"city": "Paris"}
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == [
        "tool_calls"
    ]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    a = anthropic.Anthropic(base_url=gw.base_url, api_key=MASTER_KEY, max_retries=0)
    msg = a.messages.create(model="smart", max_tokens=100, messages=[{"role": "user", "content": "Hi"}])
    assert msg.content[-1].type == "text" and msg.content[-1].text.startswith("[oai]")
    with a.messages.stream(model="smart", max_tokens=100, messages=[{"role": "user", "content": "Hi there"}]) as s:
        final = s.get_final_message()
    assert final.content[-1].text.startswith("[oai]") and final.usage.output_tokens > 0
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [row["status"] for row in rows] == [200] * 4 and all(row["usage_estimated"] == 0 for row in rows)
