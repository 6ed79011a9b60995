"""Ollama's native API through the real gateway, driven by the official ``ollama`` library.

The upstreams are the OpenAI and Anthropic stand-ins, so every answer here
was translated twice (Ollama -> OpenAI chat [-> Anthropic] and back), and the
ledger must bill it like any other request.
"""

from __future__ import annotations

import json

import ollama
import pytest

from procs import MASTER_KEY, http

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather in a given city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city to get the weather for"}},
            "required": ["city"],
        },
    },
}
PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def config(local, anthro=None) -> dict:
    providers = {"box": {"api": "openai-chat", "base_url": f"{local.base_url}/v1", "local": True}}
    deployments = [
        {
            "name": "local-8b",
            "provider": "box",
            "model": "llama-8b",
            "tier": 0,
            "context_window": 32768,
            "capabilities": ["chat", "tools", "vision", "json_schema"],
        },
        {"name": "embedder", "provider": "box", "model": "nomic-embed-text", "tier": 0, "context_window": 8192},
    ]
    if anthro is not None:
        providers["anthro"] = {"api": "anthropic-messages", "base_url": anthro.base_url, "api_key": "env:CHEAP_KEY"}
        deployments.append(
            {
                "name": "sonnet",
                "provider": "anthro",
                "model": "claude-sonnet-4-5",
                "tier": 3,
                "context_window": 200000,
                "max_output_tokens": 8192,
                "price": {"input_per_mtok": 3, "output_per_mtok": 15},
            }
        )
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": providers,
        "deployments": deployments,
        "aliases": {"fast": ["local-8b"]},
        "routing": {"num_retries": 0},
    }


def client(gw) -> ollama.Client:
    return ollama.Client(host=gw.base_url, headers={"Authorization": f"Bearer {MASTER_KEY}"})


@pytest.fixture
def up(standins):
    return standins(name="local", models=["llama-8b", "nomic-embed-text"])


def test_chat_plain_and_streamed_with_counters_and_ledger(up, gateway):
    gw = gateway(config(up))
    c = client(gw)
    r = c.chat(
        model="local-8b",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "why is the sky blue?"}],
        stream=False,
        options={"num_predict": 64, "temperature": 0.2, "stop": ["END"], "seed": 7, "num_ctx": 4096},
        keep_alive="5m",
    )
    assert r.done and r.done_reason == "stop" and r.model == "local-8b"
    assert r.message.role == "assistant" and r.message.content.startswith("[local]")
    assert r.prompt_eval_count > 0 and r.eval_count > 0 and r.total_duration > 0
    sent = up.requests()[0]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_tokens"] == 64 and sent["temperature"] == 0.2 and sent["stop"] == ["END"] and sent["seed"] == 7
    parts = list(
        c.chat(model="fast:latest", messages=[{"role": "user", "content": "why is the sky blue?"}], stream=True)
    )
    assert len(parts) > 2 and all(not p.done for p in parts[:-1]) and parts[-1].done
    streamed = "".join(p.message.content for p in parts)
    assert streamed.startswith("[local]")
    final = parts[-1]
    assert final.eval_count > 0 and final.prompt_eval_count > 0 and final.done_reason == "stop"
    assert final.eval_duration is not None and final.total_duration >= final.eval_duration
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [r["protocol"] for r in rows] == ["ollama-chat", "ollama-chat"]
    assert rows[1]["requested_model"] == "fast" and rows[1]["stream"]
    assert rows[1]["completion_tokens"] == final.eval_count and rows[1]["prompt_tokens"] == final.prompt_eval_count


def test_stream_is_ndjson_with_headers(up, gateway):
    gw = gateway(config(up))
    body = {"model": "local-8b", "messages": [{"role": "user", "content": "hi"}]}
    status, headers, raw = http(
        "POST",
        f"{gw.base_url}/api/chat",
        body=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
    )
    assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
    assert headers["X-Tiergate-Deployment"] == "local-8b"
    lines = [json.loads(x) for x in raw.decode().splitlines()]
    assert lines[-1]["done"] is True and all(x["done"] is False for x in lines[:-1])
    assert {"prompt_eval_count", "eval_count", "total_duration", "eval_duration"} <= lines[-1].keys()


def test_tools_round_trip_in_ollamas_shapes(up, gateway):
    gw = gateway(config(up))
    c = client(gw)
    ask = [{"role": "user", "content": "what is the weather in tokyo? use tool"}]
    r = c.chat(model="local-8b", messages=ask, tools=[WEATHER], stream=False)
    call = r.message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    streamed = [p for p in c.chat(model="local-8b", messages=ask, tools=[WEATHER], stream=True) if p.message.tool_calls]
    assert len(streamed) == 1 and streamed[0].message.tool_calls[0].function.arguments == call.function.arguments
    follow = c.chat(
        model="local-8b",
        messages=[
            *ask,
            {"role": "assistant", "content": "", "tool_calls": [call.model_dump(exclude_none=True)]},
            {"role": "tool", "content": "11 degrees celsius", "tool_name": "get_weather"},
        ],
        tools=[WEATHER],
        stream=False,
    )
    assert follow.message.content.startswith("[local]")
    sent = up.requests()[-1]["body"]["messages"]
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[-1] == {
        "role": "tool",
        "tool_call_id": sent[-2]["tool_calls"][0]["id"],
        "content": "11 degrees celsius",
    }


def test_format_images_and_generate(up, gateway):
    gw = gateway(config(up))
    c = client(gw)
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    c.chat(
        model="local-8b",
        messages=[{"role": "user", "content": "age?", "images": [PIXEL_PNG]}],
        format=schema,
        stream=False,
    )
    sent = up.requests()[-1]["body"]
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    assert sent["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": f"data:image/png;base64,{PIXEL_PNG}"},
    }
    g = c.generate(model="local-8b", prompt="Why is the sky blue?", system="terse", format="json", stream=False)
    # format json: the stand-in answers a JSON object, as a vendor's JSON mode does
    assert g.done and json.loads(g.response)["answer"].startswith("[local]") and g.eval_count > 0
    sent = up.requests()[-1]["body"]
    assert sent["messages"] == [
        {"role": "system", "content": "terse"},
        {"role": "user", "content": "Why is the sky blue?"},
    ]
    assert sent["response_format"] == {"type": "json_object"}
    pieces = list(c.generate(model="local-8b", prompt="Why is the sky blue?", stream=True))
    assert "".join(p.response for p in pieces).startswith("[local]") and pieces[-1].done
    loaded = c.generate(model="local-8b")  # an empty prompt loads the model: answered at once
    assert loaded.done and loaded.done_reason == "load"


def test_over_an_anthropic_upstream(up, standins, gateway):
    anthro = standins("anthropic", name="anthro", models=["claude-sonnet-4-5"])
    gw = gateway(config(up, anthro))
    c = client(gw)
    r = c.chat(model="sonnet", messages=[{"role": "user", "content": "hi"}], stream=False, options={"num_predict": 50})
    assert r.message.content.startswith("[anthro]") and r.eval_count > 0
    sent = anthro.requests()[0]["body"]
    assert sent["max_tokens"] == 50 and sent["messages"] == [{"role": "user", "content": "hi"}]
    parts = list(c.chat(model="sonnet", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "".join(p.message.content for p in parts) == r.message.content and parts[-1].eval_count > 0
    tools = c.chat(
        model="sonnet", messages=[{"role": "user", "content": "use tool please"}], tools=[WEATHER], stream=True
    )
    calls = [tc for p in tools for tc in (p.message.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert all(r["deployment"] == "sonnet" and r["cost_usd"] > 0 for r in rows)


def test_embed_list_show_ps_version(up, gateway):
    gw = gateway(config(up))
    c = client(gw)
    e = c.embed(model="embedder", input=["Why is the sky blue?", "Why is the grass green?"])
    assert len(e.embeddings) == 2 and all(isinstance(x, float) for x in e.embeddings[0])
    assert e.prompt_eval_count > 0
    old = c.embeddings(model="embedder", prompt="Here is an article about llamas...")
    assert len(old.embedding) == len(e.embeddings[0])
    names = [m.model for m in c.list().models]
    assert names[:1] == ["auto"] and {"fast", "local-8b", "embedder"} <= set(names)
    shown = c.show("local-8b")
    assert "completion" in shown.capabilities and "tools" in shown.capabilities
    assert shown.modelinfo["tiergate.context_length"] == 32768
    assert c.show("embedder").capabilities == ["embedding"]
    assert {m.model for m in c.ps().models} == {"local-8b", "embedder"}
    status, _, raw = http("GET", f"{gw.base_url}/api/version")
    assert status == 200 and json.loads(raw)["version"].count(".") == 2
    with pytest.raises(ollama.ResponseError) as err:
        c.show("no-such-model")
    assert err.value.status_code == 404 and "not found" in err.value.error


BAD_INPUT = [
    ("/api/chat", b"{oops", 400, "not valid JSON"),
    ("/api/chat", b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model is required"),
    ("/api/chat", b'{"model": "local-8b", "messages": [{"role": "robot", "content": "x"}]}', 400, "unknown role"),
    ("/api/chat", b'{"model": "local-8b", "messages": [{"role": "user", "content": 3}]}', 400, "content"),
    ("/api/chat", b'{"model": "local-8b", "messages": "hi"}', 400, "messages"),
    ("/api/chat", b'{"model": "local-8b", "stream": "yes", "messages": []}', 400, "stream"),
    (
        "/api/chat",
        b'{"model": "local-8b", "format": "xml", "messages": [{"role": "user", "content": "x"}]}',
        400,
        "format",
    ),
    (
        "/api/chat",
        b'{"model": "local-8b", "options": {"num_predict": "9"}, "messages": [{"role": "user", "content": "x"}]}',
        400,
        "num_predict",
    ),
    (
        "/api/chat",
        b'{"model": "local-8b", "messages": [{"role": "user", "content": "x", "images": ["%%%"]}]}',
        400,
        "base64",
    ),
    ("/api/generate", b'{"model": "local-8b", "prompt": 5}', 400, "prompt"),
    ("/api/embed", b'{"model": "embedder", "input": []}', 400, "input"),
    ("/api/show", b"{}", 400, "model is required"),
    ("/api/nope", b"{}", 404, "no route"),
]


def test_bad_input_is_a_4xx_in_ollamas_shape(up, gateway):
    gw = gateway(config(up))
    for path, body, status, fragment in BAD_INPUT:
        got, _, raw = http("POST", f"{gw.base_url}{path}", body=body, headers={"Authorization": f"Bearer {MASTER_KEY}"})
        assert got == status, (path, body, raw)
        err = json.loads(raw)
        assert set(err) == {"error"} and isinstance(err["error"], str) and fragment in err["error"], (body, err)
    assert up.requests() == []  # refused at the edge: no upstream call


def test_missing_key_is_401_in_ollamas_shape(up, gateway):
    gw = gateway(config(up))
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=gw.base_url).chat(model="local-8b", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 401 and "API key" in err.value.error
