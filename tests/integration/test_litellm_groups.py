"""A LiteLLM config served as it is, over real HTTP with the openai SDK: a model group load-balances across its
entries, each called with its own key at its own base URL, and fails over between them; a wildcard route
passes the client's model name through; an Ollama api_base written LiteLLM's way reaches Ollama's /v1."""

from __future__ import annotations

import openai

MASTER = "sk-litellm-master"
PRICE = {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7}


def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER, max_retries=0)


def ask(c: openai.OpenAI, model: str):
    raw = c.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "hi"}])
    return raw.headers["x-tiergate-deployment"], raw.parse()


def test_a_group_balances_across_its_entries_with_their_own_keys_and_fails_over(standins, gateway):
    # each stand-in refuses any key but its own (401), as the vendor would
    east = standins(name="east", models=["gpt-4o-mini"], api_key="sk-east")
    west = standins(name="west", models=["gpt-4o-mini"], api_key="sk-west")
    litellm = {
        "model_list": [
            {
                "model_name": "gpt-4o-mini",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": f"{east.base_url}/v1",
                    "api_key": "os.environ/EAST_KEY",
                },
                "model_info": PRICE,  # the stand-ins are on loopback, so local (free) unless priced
            },
            {
                "model_name": "gpt-4o-mini",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": f"{west.base_url}/v1",
                    "api_key": "os.environ/WEST_KEY",
                },
                "model_info": PRICE,
            },
        ],
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 0},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    env = {"EAST_KEY": "sk-east", "WEST_KEY": "sk-west", "LITELLM_MASTER_KEY": MASTER}
    gw = gateway(litellm, env_extra=env)
    c = client(gw)
    served = [ask(c, "gpt-4o-mini") for _ in range(6)]
    assert sorted(d for d, _ in served) == ["gpt-4o-mini#0"] * 3 + ["gpt-4o-mini#1"] * 3
    assert [r.choices[0].message.content.split("]")[0] for _, r in served].count("[east") == 3
    assert {r["headers"]["authorization"] for r in east.requests()} == {"Bearer sk-east"}
    assert {r["headers"]["authorization"] for r in west.requests()} == {"Bearer sk-west"}
    assert len(east.requests()) == len(west.requests()) == 3  # nobody got a wrong key, so no 401 retried
    # one entry down: every request is served by the other, whichever one's turn it was
    east.faults({"mode": "status", "status": 500, "times": 100})
    assert {ask(c, "gpt-4o-mini")[0] for _ in range(4)} == {"gpt-4o-mini#1"}
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert len(rows) == 10 and all(r["cost_usd"] > 0 for r in rows)


def test_wildcard_route_and_ollama_path(standins, gateway):
    cloud = standins(name="cloud", models=["gpt-4.1-nano", "gpt-4o-mini"], api_key="sk-cloud")
    ollama = standins(name="ollama", models=["llama3.1:8b"])
    litellm = {
        "model_list": [
            {
                "model_name": "openai/*",
                "litellm_params": {"model": "openai/*", "api_base": f"{cloud.base_url}/v1", "api_key": "sk-cloud"},
                "model_info": PRICE,
            },
            # LiteLLM's documented form: the server root, no /v1
            {"model_name": "local", "litellm_params": {"model": "ollama/llama3.1:8b", "api_base": ollama.base_url}},
        ],
        "general_settings": {"master_key": MASTER},
    }
    gw = gateway(litellm)
    c = client(gw)
    for model in ("gpt-4.1-nano", "gpt-4o-mini"):
        deployment, reply = ask(c, f"openai/{model}")
        assert deployment == f"openai/{model}" and reply.choices[0].message.content.startswith("[cloud]")
        assert cloud.requests()[-1]["body"]["model"] == model  # the client's name, prefix taken off
    deployment, reply = ask(c, "local")
    assert deployment == "local" and reply.choices[0].message.content.startswith("[ollama]")
    assert ollama.requests()[-1]["path"] == "/v1/chat/completions"
    assert "authorization" not in ollama.requests()[-1]["headers"]  # no cloud key sent to a local server
    gw.stop()
    costs = {r["deployment"]: r["cost_usd"] for r in gw.ledger_rows("kind='request'")}
    assert costs["openai/gpt-4o-mini"] > 0 and costs["openai/gpt-4.1-nano"] > 0 and costs["local"] == 0


def test_seed_004_through_the_cli_check_config_and_import(tmp_path):
    """As a new user would: check-config on the seed's LiteLLM file, then import-litellm and check the result."""
    from pathlib import Path

    from procs import cli_env, run_cli

    seed = Path(__file__).parent.parent / "data" / "litellm" / "seed004_hybrid.yaml"
    env = cli_env({k: "sk-x" for k in ("GROQ_API_KEY", "GEMINI_API_KEY", "ANTHROPIC_API_KEY", "LITELLM_MASTER_KEY")})
    env["LITELLM_DB_URL"] = "postgresql://tiergate@127.0.0.1:5432/ledger"
    res = run_cli("check-config", str(seed), env=env)
    assert "LiteLLM config: tiers from price: local -> 0; cloud by output price per Mtok" in res.stdout
    assert "  3: cloud/frontier#5 (claude-sonnet-4-5-20250514 via anthropic" in res.stdout
    assert "$3/$15 per Mtok" in res.stdout and "NO PRICE" not in res.stdout
    assert "cloud/frontier -> cloud/frontier#5, cloud/frontier#6 (balanced round-robin" in res.stdout
    assert "litellm general_settings.max_budget: global, $100 per month, then reject" in res.stdout
    native = tmp_path / "tiergate.yaml"
    run_cli("import-litellm", str(seed), "-o", str(native), env=env)
    assert "# model_list[6] (cloud/frontier: anthropic/claude-opus-4-6-20250610); tier 3" in native.read_text()
    again = run_cli("check-config", str(native), env=env)
    assert again.stdout.split("\n", 1)[1] == res.stdout.split("\n", 2)[2]  # the same tiers, prices, aliases
    refused = run_cli("import-litellm", str(seed), "-o", str(native), env=env, check=False)
    assert refused.returncode == 2 and "exists; pass --force" in refused.stderr
