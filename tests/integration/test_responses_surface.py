"""/v1/responses through the real gateway with the official openai SDK, over chat and Anthropic stand-ins."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from procs import MASTER_KEY, http

FUNCTION_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
# as Codex declares apply_patch: a freeform tool with a lark grammar
CUSTOM_TOOL = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Apply a patch to files",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch" /(.|\\n)*/'},
}


def posted(up) -> list[dict]:
    """What the gateway sent a stand-in, without its GET probes of a local provider (/props, /v1/models)."""
    return [r for r in up.requests() if r["method"] == "POST"]


def config(openai_up=None, anthropic_up=None, **extra) -> dict:
    providers, deployments = {}, []
    if openai_up is not None:
        providers["box"] = {"api": "openai-chat", "base_url": f"{openai_up.base_url}/v1", "local": True}
        deployments.append(
            {
                "name": "local-8b",
                "provider": "box",
                "model": "llama-8b",
                "tier": 0,
                "context_window": 32768,
                "max_output_tokens": 2048,
            }
        )
    if anthropic_up is not None:
        providers["anthro"] = {
            "api": "anthropic-messages",
            "base_url": anthropic_up.base_url,
            "api_key": "env:CHEAP_KEY",
        }
        deployments.append(
            {
                "name": "sonnet",
                "provider": "anthro",
                "model": "claude-sonnet-4-5",
                "tier": 3,
                "context_window": 200000,
                "price": {"input_per_mtok": 3, "output_per_mtok": 15},
            }
        )
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": providers,
        "deployments": deployments,
        "routing": {"num_retries": 0},
        **extra,
    }


def oclient(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)


def test_create_and_stream_text_over_a_chat_upstream(standins, gateway):
    up = standins(name="local", models=["llama-8b"])
    gw = gateway(config(openai_up=up))
    c = oclient(gw)
    raw = c.responses.with_raw_response.create(
        model="local-8b", instructions="Be brief.", input="Hello there", max_output_tokens=64, temperature=0.2
    )
    r = raw.parse()
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert r.output[0].type == "message" and r.output_text.startswith("[local]")
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.instructions == "Be brief." and r.max_output_tokens == 64 and r.temperature == 0.2
    assert raw.headers["x-tiergate-deployment"] == "local-8b" and "x-tiergate-cost-usd" in raw.headers
    sent = posted(up)[0]["body"]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    assert sent["max_tokens"] == 64 and sent["temperature"] == 0.2

    with c.responses.stream(model="local-8b", instructions="Be brief.", input="Hello there", max_output_tokens=64) as s:
        events = list(s)
        final = s.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds.index("response.output_item.added") < kinds.index("response.content_part.added")
    assert kinds.index("response.content_part.added") < kinds.index("response.output_text.delta")
    assert kinds.count("response.output_text.delta") >= 2  # the stand-in streams in pieces
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.output_text == r.output_text
    assert final.usage.output_tokens == r.usage.output_tokens
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [row["status"] for row in rows] == [200, 200]
    assert all(row["deployment"] == "local-8b" and row["prompt_tokens"] > 0 for row in rows)


def test_function_tools_round_trip(standins, gateway):
    up = standins(name="local", models=["llama-8b"])
    gw = gateway(config(openai_up=up))
    c = oclient(gw)
    kw = dict(model="local-8b", input="Weather in Paris?", tools=[FUNCTION_TOOL], tool_choice="required")
    r = c.responses.create(**kw)
    call = next(o for o in r.output if o.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments).keys() == {"city"} and call.call_id
    sent = posted(up)[0]["body"]
    assert sent["tool_choice"] == "required"
    assert sent["tools"][0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": FUNCTION_TOOL["parameters"],
            "strict": True,
        },
    }
    with c.responses.stream(**kw) as s:
        events = list(s)
        final = s.get_final_response()
    streamed = next(o for o in final.output if o.type == "function_call")
    assert streamed.name == call.name and streamed.arguments == call.arguments
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == call.arguments
    # the output goes back as a tool message tied to the call id, the call before it
    follow = c.responses.create(
        model="local-8b",
        tools=[FUNCTION_TOOL],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C, sunny"},
        ],
    )
    assert follow.output_text
    last = posted(up)[-1]["body"]["messages"]
    assert last[-2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call.call_id, "type": "function", "function": {"name": "get_weather", "arguments": call.arguments}}
        ],
    }
    assert last[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "18C, sunny"}


def test_custom_tool_as_codex_declares_it(standins, gateway):
    up = standins(name="local", models=["llama-8b"])
    gw = gateway(config(openai_up=up))
    c = oclient(gw)
    kw = dict(
        model="local-8b",
        input="use tool apply_patch",
        tools=[CUSTOM_TOOL],
        tool_choice={"type": "custom", "name": "apply_patch"},
    )
    r = c.responses.create(**kw)
    call = next(o for o in r.output if o.type == "custom_tool_call")
    assert call.name == "apply_patch" and isinstance(call.input, str) and call.call_id
    fn = posted(up)[0]["body"]["tools"][0]["function"]
    assert fn["name"] == "apply_patch" and fn["parameters"]["required"] == ["input"]
    assert "lark grammar" in fn["description"] and "*** Begin Patch" in fn["description"]
    with c.responses.stream(**kw) as s:
        events = list(s)
        final = s.get_final_response()
    streamed = next(o for o in final.output if o.type == "custom_tool_call")
    assert streamed.input == call.input
    done = [e for e in events if e.type == "response.custom_tool_call_input.done"]
    assert len(done) == 1 and done[0].input == call.input
    # the call and its output go back as a function call with {"input": ...} and a tool message
    c.responses.create(
        model="local-8b",
        tools=[CUSTOM_TOOL],
        input=[
            {"role": "user", "content": "patch it"},
            {"type": "custom_tool_call", "call_id": "call_1", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "call_1", "output": "Done!"},
        ],
    )
    last = posted(up)[-1]["body"]["messages"]
    assert json.loads(last[-2]["tool_calls"][0]["function"]["arguments"]) == {"input": "*** Begin Patch"}
    assert last[-1] == {"role": "tool", "tool_call_id": "call_1", "content": "Done!"}


def test_json_schema_and_dropped_fields_named_in_the_reason(standins, gateway):
    up = standins(name="local", models=["llama-8b"])
    gw = gateway(config(openai_up=up))
    c = oclient(gw)
    schema = {
        "type": "object",
        "properties": {"x": {"type": "integer"}},
        "required": ["x"],
        "additionalProperties": False,
    }
    raw = c.responses.with_raw_response.create(
        model="local-8b",
        input="Give me x",
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}},
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        store=False,
        prompt_cache_key="abc",
        metadata={"ticket": "T-1"},
    )
    r = raw.parse()
    assert r.text.format.type == "json_schema" and r.metadata == {"ticket": "T-1"}
    sent = posted(up)[0]["body"]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }
    assert "reasoning_effort" not in sent and "prompt_cache_key" not in sent and "include" not in sent
    reason = raw.headers["x-tiergate-reason"]
    assert "not sent to openai-chat:" in reason
    for name in ("include.reasoning.encrypted_content", "prompt_cache_key", "reasoning.effort", "reasoning.summary"):
        assert name in reason


def test_anthropic_upstream_through_the_chat_bridge(standins, gateway):
    up = standins("anthropic", name="anthro", models=["claude-sonnet-4-5"], api_key="sk-cheap-secret")
    gw = gateway(config(anthropic_up=up))
    c = oclient(gw)
    r = c.responses.create(model="sonnet", instructions="Be brief.", input="Hello", max_output_tokens=50)
    assert r.status == "completed" and r.output_text and r.usage.input_tokens > 0
    sent = posted(up)[0]["body"]
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 50
    assert sent["messages"] == [{"role": "user", "content": "Hello"}]
    with c.responses.stream(
        model="sonnet", input="Weather in Paris?", tools=[FUNCTION_TOOL], tool_choice="required"
    ) as s:
        final = s.get_final_response()
    call = next(o for o in final.output if o.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments)
    assert posted(up)[-1]["body"]["tool_choice"] == {"type": "any"}
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [row["status"] for row in rows] == [200, 200] and all(row["cost_usd"] > 0 for row in rows)


def test_async_client(standins, gateway):
    up = standins(name="local", models=["llama-8b"])
    gw = gateway(config(openai_up=up))

    async def go():
        c = openai.AsyncOpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
        r = await c.responses.create(model="local-8b", input="Hi")
        async with c.responses.stream(model="local-8b", input="Hi") as s:
            final = await s.get_final_response()
        await c.close()
        return r, final

    r, final = asyncio.run(go())
    assert r.output_text and final.output_text == r.output_text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "local-8b"}, "input"),
        ({"model": "local-8b", "input": []}, "input"),
        ({"model": "local-8b", "input": 5}, "input"),
        ({"model": "local-8b", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "local-8b", "input": "x", "stream": "yes"}, "stream"),
        ({"model": "local-8b", "input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
        ({"model": "local-8b", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"model": "local-8b", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "local-8b", "input": "x", "background": True}, "background"),
        (
            {
                "model": "local-8b",
                "input": "x",
                "tools": [FUNCTION_TOOL],
                "tool_choice": {"type": "function", "name": "nope"},
            },
            "tool_choice.name",
        ),
    ],
)
def test_bad_input_is_a_400_in_openai_format(standins, gateway, body, param):
    up = standins(name="local", models=["llama-8b"])
    gw = gateway(config(openai_up=up))
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
    status, _, data = http("POST", f"{gw.base_url}/v1/responses", body=json.dumps(body).encode(), headers=headers)
    assert status == 400, data
    err = json.loads(data)["error"]
    assert err["param"] == param and param.split("[")[0] in err["message"]
    assert posted(up) == []


def test_failover_before_the_first_byte_and_a_cut_after_it(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    cloud = standins("anthropic", name="anthro", models=["claude-sonnet-4-5"], api_key="sk-cheap-secret")
    gw = gateway(config(openai_up=local, anthropic_up=cloud))
    c = oclient(gw)
    local.faults({"mode": "cut_stream", "after_chunks": 0})  # nothing sent yet: the next tier answers
    raw = c.responses.with_raw_response.create(model="auto", input="Hello", stream=True)
    assert raw.headers["x-tiergate-deployment"] == "sonnet" and "local-8b" in raw.headers["x-tiergate-reason"]
    assert [e.type for e in raw.parse()][-1] == "response.completed"
    local.faults({"mode": "cut_stream", "after_chunks": 3})  # cut mid-way: failed, then an error event, in sequence
    events = list(c.responses.create(model="local-8b", input="Hello there friend", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-2:] == ["response.failed", "error"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "upstream" in events[-1].message
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [r["status"] for r in rows] == [200, 502]
    assert rows[1]["completion_tokens"] > 0  # what was streamed before the cut is billed
