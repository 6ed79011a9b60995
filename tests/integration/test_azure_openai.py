"""Azure OpenAI upstreams over real HTTP: the openai and anthropic SDKs on tiergate's side, the Azure stand-in
(src/tiergate/standins/azure_server.py) checking what Azure checks: the api-version, the api-key header or an
Entra token, the deployment. A LiteLLM `azure/` entry reaches it as LiteLLM would."""

from __future__ import annotations

import anthropic
import openai

from procs import MASTER_KEY

KEY = "azure-resource-key-1"
PRICE = {"input_per_mtok": 2.5, "output_per_mtok": 10}


def provider(standin, **kw):
    return {"api": "azure-openai", "base_url": standin.base_url, "api_version": "2024-10-21", **kw}


def config(providers: dict, deployments: list, **extra) -> dict:
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": providers,
        "deployments": deployments,
        **extra,
    }


def test_chat_stream_and_messages_reach_an_azure_deployment(standins, gateway):
    azure = standins("azure", name="azure", models=["gpt-4o-prod"], api_key=KEY)
    gw = gateway(
        config(
            {"res": provider(azure, api_key="env:AZURE_KEY")},
            [{"name": "prod", "provider": "res", "model": "gpt-4o-prod", "tier": 2, "price": PRICE}],
        ),
        env_extra={"AZURE_KEY": KEY},
    )
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    msg = [{"role": "user", "content": "hello azure"}]
    reply = c.chat.completions.create(model="prod", messages=msg)
    assert reply.choices[0].message.content.startswith("[azure]") and reply.usage.completion_tokens > 0
    sent = azure.requests()[-1]
    assert sent["path"] == "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    assert sent["headers"]["api-key"] == KEY and "authorization" not in sent["headers"]
    # a stream opens with Azure's empty-choices chunk of prompt filter results: relayed, and usage still counted
    chunks = list(c.chat.completions.create(model="prod", messages=msg, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.startswith("[azure]")
    assert azure.requests()[-1]["body"]["stream_options"] == {"include_usage": True}
    a = anthropic.Anthropic(base_url=gw.base_url, api_key=MASTER_KEY, max_retries=0)
    m = a.messages.create(model="prod", max_tokens=64, messages=[{"role": "user", "content": "via messages"}])
    assert m.content[0].text.startswith("[azure]")
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert len(rows) == 3 and all(r["cost_usd"] > 0 and r["completion_tokens"] > 0 for r in rows)
    assert {r["deployment"] for r in rows} == {"prod"}


def test_what_azure_refuses_fails_over_and_an_entra_token_is_accepted(standins, gateway):
    azure = standins("azure", name="azure", models=["gpt-4o-prod", "embed"], api_key=KEY, entra_token="entra-jwt")
    providers = {
        "wrong-key": provider(azure, api_key="not-the-key"),
        "wrong-version": provider(azure, api_key=KEY, api_version="2099-01-01"),
        "entra": provider(azure, entra_token="env:ENTRA"),
        "v1": {"api": "azure-openai", "base_url": f"{azure.base_url}/openai/v1", "api_key": KEY},
    }
    deployments = [
        {"name": "bad-key", "provider": "wrong-key", "model": "gpt-4o-prod", "price": PRICE},
        {"name": "bad-version", "provider": "wrong-version", "model": "gpt-4o-prod", "price": PRICE},
        {"name": "no-such", "provider": "v1", "model": "gpt-5-nowhere", "price": PRICE},
        {"name": "good", "provider": "entra", "model": "gpt-4o-prod", "price": PRICE},
        {"name": "vectors", "provider": "v1", "model": "embed", "capabilities": ["embeddings"]},
    ]
    routing = {"fallbacks": {"bad-key": ["bad-version"], "bad-version": ["no-such"], "no-such": ["good"]}}
    gw = gateway(
        config(
            providers, deployments, aliases={"chain": ["bad-key", "bad-version", "no-such", "good"]}, routing=routing
        ),
        env_extra={"ENTRA": "entra-jwt"},
    )
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    raw = c.chat.completions.with_raw_response.create(model="chain", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-tiergate-deployment"] == "good"
    seen = [
        (r["path"].split("?")[0], r["path"].partition("?")[2], r["headers"].get("authorization"))
        for r in azure.requests()
    ]
    chat = "/openai/deployments/gpt-4o-prod/chat/completions"
    assert (chat, "api-version=2024-10-21", None) in seen  # the wrong key: refused with 401
    assert (chat, "api-version=2099-01-01", None) in seen  # a version Azure has not: 404
    assert ("/openai/v1/chat/completions", "", None) in seen  # no such deployment: 404
    assert seen[-1] == (chat, "api-version=2024-10-21", "Bearer entra-jwt")
    emb = c.embeddings.create(model="vectors", input=["one", "two"])
    assert len(emb.data) == 2 and azure.requests()[-1]["path"] == "/openai/v1/embeddings"
    assert azure.requests()[-1]["body"]["model"] == "embed"


def test_a_litellm_azure_entry_served_as_it_is(standins, gateway):
    azure = standins("azure", name="azure", models=["gpt-4o-eu"], api_key=KEY)
    litellm = {
        "model_list": [
            {
                "model_name": "gpt-4o",
                "litellm_params": {
                    "model": "azure/gpt-4o-eu",
                    "api_base": f"{azure.base_url}/",
                    "api_key": "os.environ/AZURE_API_KEY_EU",
                    "api_version": "2023-05-15",  # LiteLLM's docs' version: too old to report stream usage
                },
                "model_info": {"base_model": "azure/gpt-4o"},
            }
        ],
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    gw = gateway(litellm, env_extra={"AZURE_API_KEY_EU": KEY, "LITELLM_MASTER_KEY": MASTER_KEY})
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    chunks = list(c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices).startswith("[azure]")
    assert azure.requests()[-1]["path"].endswith("?api-version=2024-10-21")
    gw.stop()
    (row,) = gw.ledger_rows("kind='request'")
    assert row["cost_usd"] > 0  # base_model prices it: the database's Azure gpt-4o
