"""Gemini's API through the real gateway, driven by the official google-genai SDK (v1 by default, and v1beta).

Upstreams are the OpenAI and Anthropic stand-ins: every answer was
translated (Gemini -> OpenAI chat [-> Anthropic] and back) and must be billed
in the ledger like any other request.
"""

from __future__ import annotations

import json

import pytest
from google import genai
from google.genai import errors, types

from procs import MASTER_KEY, http

WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Weather for a city",
    parameters=types.Schema(
        type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)}, required=["city"]
    ),
)
NO_AUTO_CALLS = types.AutomaticFunctionCallingConfig(disable=True)


def config(local, anthro=None) -> dict:
    providers = {"box": {"api": "openai-chat", "base_url": f"{local.base_url}/v1", "local": True}}
    deployments = [
        {
            "name": "local-8b",
            "provider": "box",
            "model": "llama-8b",
            "tier": 0,
            "context_window": 32768,
            "max_output_tokens": 2048,
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
                "price": {"input_per_mtok": 3, "output_per_mtok": 15},
            }
        )
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": providers,
        "deployments": deployments,
        "model_map": {"gemini-*": "local-8b"},
        "routing": {"num_retries": 0},
    }


def client(gw, version: str | None = None, key: str = MASTER_KEY) -> genai.Client:
    opts = (
        types.HttpOptions(base_url=gw.base_url, api_version=version)
        if version
        else types.HttpOptions(base_url=gw.base_url)
    )
    return genai.Client(api_key=key, http_options=opts)


@pytest.fixture
def up(standins):
    return standins(name="local", models=["llama-8b", "nomic-embed-text"])


@pytest.mark.parametrize("version", [None, "v1beta"])
def test_generate_and_stream_with_usage_and_ledger(up, gateway, version):
    gw = gateway(config(up))
    c = client(gw, version)
    cfg = types.GenerateContentConfig(
        system_instruction="Be brief.", max_output_tokens=64, temperature=0.2, top_p=0.9, stop_sequences=["END"]
    )
    r = c.models.generate_content(model="local-8b", contents="Why is the sky blue?", config=cfg)
    assert r.text.startswith("[local]") and r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.usage_metadata.prompt_token_count > 0 and r.usage_metadata.candidates_token_count > 0
    sent = up.requests()[0]["body"]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why is the sky blue?"},
    ]
    assert sent["max_tokens"] == 64 and sent["temperature"] == 0.2 and sent["top_p"] == 0.9 and sent["stop"] == ["END"]
    chunks = list(c.models.generate_content_stream(model="local-8b", contents="Why is the sky blue?", config=cfg))
    assert len(chunks) > 2 and "".join(ch.text or "" for ch in chunks) == r.text
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count == r.usage_metadata.candidates_token_count
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [x["protocol"] for x in rows] == ["gemini-generate", "gemini-generate"]
    assert rows[1]["stream"] and rows[1]["completion_tokens"] == chunks[-1].usage_metadata.candidates_token_count


def test_function_calling_round_trip(up, gateway):
    gw = gateway(config(up))
    c = client(gw)
    cfg = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY")),
        automatic_function_calling=NO_AUTO_CALLS,
    )
    r = c.models.generate_content(model="local-8b", contents="Weather in Paris?", config=cfg)
    call = r.function_calls[0]
    assert call.name == "get_weather" and isinstance(call.args, dict)
    sent = up.requests()[0]["body"]
    assert sent["tool_choice"] == "required"
    assert sent["tools"][0]["function"]["parameters"]["properties"]["city"] == {"type": "string"}
    streamed = [ch for ch in c.models.generate_content_stream(model="local-8b", contents="Weather?", config=cfg)]
    assert [fc.name for ch in streamed for fc in (ch.function_calls or [])] == ["get_weather"]
    history = [
        types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]),
        r.candidates[0].content,
        types.Content(
            role="user", parts=[types.Part.from_function_response(name="get_weather", response={"temp": "18C"})]
        ),
    ]
    follow = c.models.generate_content(
        model="local-8b",
        contents=history,
        config=types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[WEATHER])], automatic_function_calling=NO_AUTO_CALLS
        ),
    )
    assert follow.text.startswith("[local]")
    msgs = up.requests()[-1]["body"]["messages"]
    assert msgs[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert msgs[-1] == {"role": "tool", "tool_call_id": msgs[-2]["tool_calls"][0]["id"], "content": '{"temp":"18C"}'}


def test_json_schema_image_and_an_anthropic_upstream(up, standins, gateway):
    anthro = standins("anthropic", name="anthro", models=["claude-sonnet-4-5"])
    gw = gateway(config(up, anthro))
    c = client(gw, "v1beta")
    schema = types.Schema(type=types.Type.OBJECT, properties={"age": types.Schema(type=types.Type.INTEGER)})
    c.models.generate_content(
        model="local-8b",
        contents="age?",
        config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=schema),
    )
    sent = up.requests()[-1]["body"]
    assert sent["response_format"]["json_schema"]["schema"]["properties"] == {"age": {"type": "integer"}}
    r = c.models.generate_content(
        model="sonnet", contents="hi", config=types.GenerateContentConfig(max_output_tokens=50)
    )
    assert r.text.startswith("[anthro]") and r.usage_metadata.total_token_count > 0
    assert anthro.requests()[0]["body"]["max_tokens"] == 50
    chunks = list(c.models.generate_content_stream(model="sonnet", contents="hi"))
    assert "".join(ch.text or "" for ch in chunks).startswith("[anthro]")
    assert chunks[-1].usage_metadata.candidates_token_count > 0


def test_count_tokens_embed_and_models(up, gateway):
    gw = gateway(config(up))
    c = client(gw)
    assert c.models.count_tokens(model="local-8b", contents="Why is the sky blue?").total_tokens > 0
    e = c.models.embed_content(model="embedder", contents=["Why is the sky blue?", "Why is the grass green?"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0].values) > 0
    beta = client(gw, "v1beta")  # held: a Client closes its connections when collected
    one = beta.models.embed_content(model="embedder", contents="llamas")
    assert one.embeddings[0].values == c.models.embed_content(model="embedder", contents="llamas").embeddings[0].values
    names = {m.name for m in c.models.list()}  # GET /v1/models with x-goog-api-key: Gemini's list, not OpenAI's
    assert {"models/auto", "models/local-8b", "models/embedder"} <= names
    got = beta.models.get(model="local-8b")
    assert got.input_token_limit == 32768 and got.output_token_limit == 2048
    assert "generateContent" in got.supported_actions
    # the same path without a Google key is still OpenAI's list
    status, _, raw = http("GET", f"{gw.base_url}/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert status == 200 and json.loads(raw)["object"] == "list"
    # Gemini CLI's default model name reaches the local tier through model_map
    assert c.models.generate_content(model="gemini-2.5-pro", contents="hi").text.startswith("[local]")


def test_key_in_query_and_errors_in_googles_envelope(up, gateway):
    gw = gateway(config(up))
    body = json.dumps({"contents": [{"parts": [{"text": "hi"}]}]}).encode()
    url = f"{gw.base_url}/v1beta/models/local-8b:generateContent"
    status, _, raw = http("POST", f"{url}?key={MASTER_KEY}", body=body, headers={"Content-Type": "application/json"})
    assert status == 200 and json.loads(raw)["candidates"][0]["content"]["role"] == "model"
    cases = [
        (url, b"{oops", 400, "INVALID_ARGUMENT", "not valid JSON"),
        (url, b'{"contents": []}', 400, "INVALID_ARGUMENT", "contents"),
        (url, b'{"contents": [{"role": "robot", "parts": [{"text": "x"}]}]}', 400, "INVALID_ARGUMENT", "role"),
        (
            url,
            b'{"contents": [{"parts": [{"functionResponse": {"name": "f", "response": {}}}]}]}',
            400,
            "INVALID_ARGUMENT",
            "functionResponse",
        ),
        (
            url,
            b'{"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": "9"}}',
            400,
            "INVALID_ARGUMENT",
            "maxOutputTokens",
        ),
        (f"{gw.base_url}/v1beta/models/local-8b:frobnicate", b"{}", 404, "NOT_FOUND", "frobnicate"),
    ]
    for target, payload, code, name, fragment in cases:
        status, _, raw = http("POST", target, body=payload, headers={"x-goog-api-key": MASTER_KEY})
        assert status == code, (payload, raw)
        err = json.loads(raw)["error"]
        assert err["code"] == code and err["status"] == name and fragment in err["message"], err
    assert len(up.requests()) == 1  # refused at the edge: no upstream call
    wrong = client(gw, key="sk-wrong")
    with pytest.raises(errors.ClientError) as bad:
        wrong.models.generate_content(model="local-8b", contents="hi")
    assert bad.value.code == 401 and bad.value.status == "UNAUTHENTICATED"


def test_stream_framing_json_array_without_alt_sse(up, gateway):
    gw = gateway(config(up))
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).encode()
    url = f"{gw.base_url}/v1beta/models/local-8b:streamGenerateContent"
    hdrs = {"x-goog-api-key": MASTER_KEY, "Content-Type": "application/json"}
    status, headers, raw = http("POST", url, body=body, headers=hdrs)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    chunks = json.loads(raw)  # the whole body is one JSON array of GenerateContentResponse objects
    assert isinstance(chunks, list) and len(chunks) > 1
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP" and chunks[-1]["usageMetadata"]["totalTokenCount"] > 0
    status, headers, raw = http("POST", f"{url}?alt=sse", body=body, headers=hdrs)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = [e for e in raw.decode().split("\r\n\r\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events) and len(events) == len(chunks)
    assert headers["X-Tiergate-Deployment"] == "local-8b"
