"""AWS Bedrock through its Converse API over real HTTP: the openai and anthropic SDKs on tiergate's side, the
Bedrock stand-in (src/tiergate/standins/bedrock_server.py) recomputing every SigV4 signature with botocore and
refusing what Bedrock refuses; streams arrive as AWS event-stream frames. Anthropic models on Bedrock included;
a LiteLLM `bedrock/` entry reaches it as LiteLLM would."""

from __future__ import annotations

import anthropic
import openai

from procs import MASTER_KEY

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
AWS = {
    "region": "eu-west-1",
    "access_key": "AKIAEXAMPLE123",
    "secret_key": "wJalrXUtnFEMI/K7MDENG",
    "session_token": "FwoGZXIvYXdzEXAMPLE",
}
PRICE = {"input_per_mtok": 0.8, "output_per_mtok": 4}


def provider(standin, **kw):
    base = {
        "api": "bedrock-converse",
        "base_url": standin.base_url,
        "aws_region": AWS["region"],
        "aws_access_key_id": "env:AWS_ACCESS_KEY_ID",
        "aws_secret_access_key": "env:AWS_SECRET_ACCESS_KEY",
        "aws_session_token": "env:AWS_SESSION_TOKEN",
    }
    return {**base, **kw}


ENV = {"AWS_ACCESS_KEY_ID": AWS["access_key"], "AWS_SECRET_ACCESS_KEY": AWS["secret_key"]}
ENV |= {"AWS_SESSION_TOKEN": AWS["session_token"]}


def config(providers: dict, deployments: list, **extra) -> dict:
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": providers,
        "deployments": deployments,
        **extra,
    }


def test_signed_converse_calls_plain_streamed_with_tools_and_from_anthropic_clients(standins, gateway):
    bedrock = standins("bedrock", name="bedrock", models=[MODEL], aws=AWS)
    gw = gateway(
        config(
            {"aws": provider(bedrock)},
            [{"name": "haiku", "provider": "aws", "model": MODEL, "tier": 2, "price": PRICE}],
        ),
        env_extra=ENV,
    )
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello bedrock"}]
    reply = c.chat.completions.create(model="haiku", messages=msgs, max_tokens=50)
    assert reply.choices[0].message.content.startswith("[bedrock]") and reply.usage.completion_tokens > 0
    sent = bedrock.requests()[-1]
    assert sent["path"] == f"/model/{MODEL.replace(':', '%3A')}/converse"
    assert sent["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS['access_key']}/")
    assert "/eu-west-1/bedrock/aws4_request" in sent["headers"]["authorization"]
    assert sent["body"]["system"] == [{"text": "be brief"}] and sent["body"]["inferenceConfig"] == {"maxTokens": 50}
    # streamed: event-stream frames become OpenAI chunks, usage from the metadata event
    chunks = list(
        c.chat.completions.create(model="haiku", messages=msgs, stream=True, stream_options={"include_usage": True})
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices).startswith("[bedrock]")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    # a tool call, plain and streamed, then its result sent back
    tools = [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    ask = [{"role": "user", "content": "use tool please"}]
    called = c.chat.completions.create(model="haiku", messages=ask, tools=tools)
    (call,) = called.choices[0].message.tool_calls
    assert called.choices[0].finish_reason == "tool_calls" and call.function.name == "weather"
    assert call.function.arguments == '{"city":"Paris"}'
    streamed = list(c.chat.completions.create(model="haiku", messages=ask, tools=tools, stream=True))
    args = "".join(
        ch.choices[0].delta.tool_calls[0].function.arguments or ""
        for ch in streamed
        if ch.choices and ch.choices[0].delta.tool_calls
    )
    assert args == '{"city":"Paris"}'
    follow = [
        *ask,
        called.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    assert (
        c.chat.completions.create(model="haiku", messages=follow, tools=tools)
        .choices[0]
        .message.content.startswith("[bedrock]")
    )
    assert bedrock.requests()[-1]["body"]["messages"][-1]["content"][0]["toolResult"]["toolUseId"] == call.id
    a = anthropic.Anthropic(base_url=gw.base_url, api_key=MASTER_KEY, max_retries=0)
    m = a.messages.create(model="haiku", max_tokens=64, messages=[{"role": "user", "content": "via messages"}])
    assert m.content[0].text.startswith("[bedrock]")
    with a.messages.stream(model="haiku", max_tokens=64, messages=[{"role": "user", "content": "stream it"}]) as s:
        assert s.get_final_text().startswith("[bedrock]")
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert len(rows) == 7 and all(r["status"] == 200 and r["cost_usd"] > 0 and r["completion_tokens"] > 0 for r in rows)


def test_a_bad_signature_fails_over_and_bedrock_errors_are_read(standins, gateway):
    bedrock = standins("bedrock", name="bedrock", models=[MODEL], aws=AWS)
    backup = standins(name="backup", models=["gpt-4o-mini"])
    providers = {
        "wrong-secret": provider(bedrock, aws_secret_access_key="not-the-secret"),
        "wrong-region": provider(bedrock, aws_region="us-west-2"),
        "good": provider(bedrock),
        "backup": {"api": "openai-chat", "base_url": f"{backup.base_url}/v1"},
    }
    deployments = [
        {"name": "bad-secret", "provider": "wrong-secret", "model": MODEL, "price": PRICE},
        {"name": "bad-region", "provider": "wrong-region", "model": MODEL, "price": PRICE},
        {"name": "no-such-model", "provider": "good", "model": "anthropic.nothing-v9:0", "price": PRICE},
        {"name": "fallback", "provider": "backup", "model": "gpt-4o-mini", "tier": 1},
    ]
    gw = gateway(
        config(
            providers,
            deployments,
            aliases={"chain": ["bad-secret", "bad-region", "no-such-model", "fallback"]},
            routing={"num_retries": 0},
        ),
        env_extra=ENV,
    )
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    raw = c.chat.completions.with_raw_response.create(model="chain", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-tiergate-deployment"] == "fallback"
    # every Bedrock refusal was its own: the stand-in recomputed the signature and said why, in Bedrock's shape
    assert [r["path"].rsplit("/", 1)[-1] for r in bedrock.requests()] == ["converse"] * 3
    explain = c.chat.completions.with_raw_response.create(
        model="bad-secret", messages=[{"role": "user", "content": "x"}]
    )
    assert explain.headers["x-tiergate-deployment"] == "fallback"  # escalation: tier 1 after the failed tier 0


def test_a_litellm_bedrock_entry_served_as_it_is(standins, gateway):
    bedrock = standins(
        "bedrock", name="bedrock", models=[MODEL], aws={k: v for k, v in AWS.items() if k != "session_token"}
    )
    litellm = {
        "model_list": [
            {
                "model_name": "claude-haiku",
                "litellm_params": {
                    "model": f"bedrock/{MODEL}",
                    "aws_region_name": "eu-west-1",
                    "aws_access_key_id": "os.environ/AWS_ACCESS_KEY_ID",
                    "aws_secret_access_key": "os.environ/AWS_SECRET_ACCESS_KEY",
                    "api_base": bedrock.base_url,
                },
            }
        ],
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    env = {
        "AWS_ACCESS_KEY_ID": AWS["access_key"],
        "AWS_SECRET_ACCESS_KEY": AWS["secret_key"],
        "LITELLM_MASTER_KEY": MASTER_KEY,
    }
    gw = gateway(litellm, env_extra=env)
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    chunks = list(
        c.chat.completions.create(model="claude-haiku", messages=[{"role": "user", "content": "x"}], stream=True)
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices).startswith("[bedrock]")
    gw.stop()
    (row,) = gw.ledger_rows("kind='request'")
    assert row["cost_usd"] > 0  # the database's price of Claude 3.5 Haiku on Bedrock
