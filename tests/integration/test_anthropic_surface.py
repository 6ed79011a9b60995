"""/v1/messages through the real gateway with the official anthropic SDK, and the reverse bridge."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from procs import MASTER_KEY, http

TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


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


def aclient(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.base_url, api_key=MASTER_KEY, max_retries=0)


def oclient(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)


def test_anthropic_client_to_openai_backend_create_and_stream(standins, gateway):
    up = standins(name="local", models=["llama-8b"])
    gw = gateway(config(openai_up=up))
    c = aclient(gw)
    kw = dict(
        model="local-8b",
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": "Hello there"}],
        stop_sequences=["END"],
    )
    raw = c.messages.with_raw_response.create(**kw)
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant" and msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.content[0].type == "text" and msg.content[0].text.startswith("[local]")
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert raw.headers["x-tiergate-deployment"] == "local-8b"
    sent = up.requests()[0]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1]["role"] == "user" and sent["max_tokens"] == 64 and sent["stop"] == ["END"]
    with c.messages.stream(**kw) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == msg.content[0].text
    assert final.usage.output_tokens == msg.usage.output_tokens


def test_anthropic_tool_use_over_openai_backend(standins, gateway):
    up = standins(name="local", models=["llama-8b"])
    gw = gateway(config(openai_up=up))
    c = aclient(gw)
    kw = dict(
        model="local-8b",
        max_tokens=100,
        tools=TOOLS,
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    msg = c.messages.create(**kw)
    tool = next(b for b in msg.content if b.type == "tool_use")
    assert msg.stop_reason == "tool_use" and tool.name == "get_weather" and isinstance(tool.input, dict)
    assert up.requests()[0]["body"]["tool_choice"] == "required"
    with c.messages.stream(**kw) as stream:
        final = stream.get_final_message()
    streamed = next(b for b in final.content if b.type == "tool_use")
    assert streamed.name == tool.name and streamed.input == tool.input
    # the tool result goes back as an OpenAI tool message tied to the call id
    follow = c.messages.create(
        model="local-8b",
        max_tokens=50,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "18C, sunny"}]},
        ],
    )
    assert follow.content[0].type == "text"
    last = up.requests()[-1]["body"]["messages"]
    assert last[-2]["tool_calls"][0]["id"] == tool.id
    assert last[-1] == {"role": "tool", "tool_call_id": tool.id, "content": "18C, sunny"}


def test_anthropic_to_anthropic_is_a_faithful_pass_through(standins, gateway):
    up = standins("anthropic", name="anthro", models=["claude-sonnet-4-5"], api_key="sk-cheap-secret")
    gw = gateway(config(anthropic_up=up))
    body = {
        "model": "sonnet",
        "max_tokens": 300,
        "thinking": {"type": "enabled", "budget_tokens": 200},
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "q1"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig-abc=="},
                    {"type": "text", "text": "a1"},
                ],
            },
            {"role": "user", "content": [{"type": "text", "text": "q2", "cache_control": {"type": "ephemeral"}}]},
        ],
        "future_field": {"x": 1},
    }
    status, headers, raw = http(
        "POST",
        f"{gw.base_url}/v1/messages?beta=true",
        body=json.dumps(body).encode(),
        headers={
            "x-api-key": MASTER_KEY,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "interleaved-thinking-2025-05-14",
            "content-type": "application/json",
        },
    )
    assert status == 200, raw
    rec = up.requests()[0]
    assert rec["path"] == "/v1/messages?beta=true"
    assert rec["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert rec["headers"]["x-api-key"] == "sk-cheap-secret"  # the vendor key, never the client's
    assert rec["body"] == {**body, "model": "claude-sonnet-4-5"}
    assert json.loads(raw)["type"] == "message"


def test_openai_client_to_anthropic_backend(standins, gateway):
    up = standins("anthropic", name="anthro", models=["claude-sonnet-4-5"])
    gw = gateway(config(anthropic_up=up))
    c = oclient(gw)
    r = c.chat.completions.create(
        model="sonnet",
        messages=[{"role": "system", "content": "terse"}, {"role": "user", "content": "hi"}],
        max_tokens=40,
    )
    assert r.choices[0].message.content.startswith("[anthro]") and r.usage.prompt_tokens > 0
    sent = up.requests()[0]["body"]
    assert sent["system"] == "terse" and sent["messages"] == [{"role": "user", "content": "hi"}]
    chunks = list(
        c.chat.completions.create(
            model="sonnet",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.startswith("[anthro]")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert any(ch.choices and ch.choices[0].finish_reason for ch in chunks)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": TOOLS[0]["input_schema"]}}]
    r = c.chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "Paris?"}], tools=tools, tool_choice="required"
    )
    assert r.choices[0].finish_reason == "tool_calls"
    assert json.loads(r.choices[0].message.tool_calls[0].function.arguments) is not None


def test_unsupported_fields_are_dropped_and_recorded(standins, gateway):
    up = standins(name="local", models=["llama-8b"])
    gw = gateway(config(openai_up=up))
    raw = aclient(gw).messages.with_raw_response.create(
        model="local-8b",
        max_tokens=50,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "hi"}],
    )
    assert raw.parse().content[0].text
    sent = up.requests()[0]["body"]
    assert "thinking" not in sent
    assert (
        "not sent to openai-chat: " in raw.headers["x-tiergate-reason"]
        and "thinking" in raw.headers["x-tiergate-reason"]
    )
    gw.stop()
    assert "thinking" in gw.ledger_rows("kind='request'")[0]["reason"]


def test_claude_names_mapped_and_max_tokens_clamped(standins, gateway):
    up = standins(name="local", models=["llama-8b"])
    gw = gateway(config(openai_up=up, model_map={"claude-*": "local-8b"}))
    msg = aclient(gw).messages.create(
        model="claude-sonnet-4-6", max_tokens=128000, timeout=60, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content[0].text.startswith("[local]")
    assert up.requests()[0]["body"]["max_tokens"] == 2048


def test_sessions_attributed_from_claude_code_header_and_metadata(standins, gateway):
    up = standins(name="local", models=["llama-8b"])
    gw = gateway(config(openai_up=up))
    c = aclient(gw)
    c.messages.create(
        model="local-8b",
        max_tokens=20,
        messages=[{"role": "user", "content": "a"}],
        extra_headers={"X-Claude-Code-Session-Id": "cc-session-1"},
    )
    c.messages.create(
        model="local-8b",
        max_tokens=20,
        messages=[{"role": "user", "content": "b"}],
        metadata={"user_id": "user_abc_account_x_session_s-42"},
    )
    c.messages.create(
        model="local-8b",
        max_tokens=20,
        messages=[{"role": "user", "content": "c"}],
        metadata={"user_id": '{"device_id":"d1","account_uuid":"","session_id":"9f22-cc"}'},
    )
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert rows[0]["session"] == "cc-session-1" and rows[0]["protocol"] == "anthropic-messages"
    assert rows[1]["session"] == "s-42" and rows[1]["agent"] == "user_abc_account_x"
    assert rows[2]["session"] == "9f22-cc" and rows[2]["agent"] == "claude-code"


@pytest.mark.parametrize(
    ("body", "status", "etype", "fragment"),
    [
        (b"{oops", 400, "invalid_request_error", "not valid JSON"),
        (
            b'{"model": "local-8b", "messages": [{"role": "user", "content": "x"}]}',
            400,
            "invalid_request_error",
            "'max_tokens' is required",
        ),
        (
            b'{"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}',
            404,
            "not_found_error",
            "names no alias",
        ),
        (
            b'{"model": "local-8b", "max_tokens": 5, "messages": [{"role": "bogus", "content": "x"}]}',
            400,
            "invalid_request_error",
            "role",
        ),
    ],
)
def test_errors_use_anthropic_envelope(standins, gateway, body, status, etype, fragment):
    gw = gateway(config(openai_up=standins(name="local", models=["llama-8b"])))
    got, _, raw = http(
        "POST",
        f"{gw.base_url}/v1/messages",
        body=body,
        headers={"x-api-key": MASTER_KEY, "content-type": "application/json"},
    )
    obj = json.loads(raw)
    assert got == status and obj["type"] == "error" and obj["error"]["type"] == etype
    assert fragment in obj["error"]["message"]


def test_auth_errors_and_count_tokens(standins, gateway):
    gw = gateway(config(openai_up=standins(name="local", models=["llama-8b"])))
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.base_url, api_key="wrong", max_retries=0).messages.create(
            model="local-8b", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    up = standins(name="local2", models=["llama-8b"])
    gw2 = gateway(config(openai_up=up))
    c = aclient(gw2)
    hello = [{"role": "user", "content": "hello " * 40}]
    # the text the model reads (240 bytes at four a token), one message's framing (4) and the reply's priming (3):
    # the count /v1/messages routes and reserves by, not the JSON envelope's bytes
    assert c.messages.count_tokens(model="local-8b", messages=hello).input_tokens == 60 + 4 + 3
    pixel = {
        "type": "base64",
        "media_type": "image/png",
        "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
    }
    image = [{"role": "user", "content": [{"type": "image", "source": pixel}, {"type": "text", "text": "what?"}]}]
    assert c.messages.count_tokens(model="local-8b", messages=image).input_tokens == 1600 + 2 + 4 + 3
    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    with_tool = c.messages.count_tokens(model="local-8b", messages=hello, tools=[tool], system="be brief")
    assert with_tool.input_tokens >= 67 + 346 + 2 + 4  # Anthropic's tool-use system prompt and the system text
    assert up.requests() == []  # counted here, nothing sent upstream
    with pytest.raises(anthropic.BadRequestError, match="model"):
        c.messages.count_tokens(model=None, messages=hello)  # type: ignore[arg-type]
