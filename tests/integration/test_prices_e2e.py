"""Prices as a user meets them: a deployment without a price line is billed from the price database, and one
nothing can price is named by check-config, /health and the gateway's log at start."""

from __future__ import annotations

import json

import anthropic

from procs import MASTER_KEY, cli_env, http, run_cli, write_config

SONNET_IN, SONNET_OUT = 3.0, 15.0  # claude-sonnet-4-5's list prices per million tokens in the pinned genai-prices


def config(up, *, extra_deployments: list | None = None) -> dict:
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": {"anthro": {"api": "anthropic-messages", "base_url": up.base_url, "api_key": "env:CHEAP_KEY"}},
        "deployments": [
            # no price line: priced from the database by its model's name
            {"name": "sonnet", "provider": "anthro", "model": "claude-sonnet-4-5", "tier": 3, "context_window": 200000},
            *(extra_deployments or []),
        ],
        "routing": {"num_retries": 0},
    }


def test_a_known_model_without_a_price_line_records_its_list_price(standins, gateway):
    up = standins(protocol="anthropic", name="claude", models=["claude-sonnet-4-5"])
    gw = gateway(config(up))
    c = anthropic.Anthropic(base_url=gw.base_url, api_key=MASTER_KEY, max_retries=0)
    raw = c.messages.with_raw_response.create(
        model="sonnet", max_tokens=64, messages=[{"role": "user", "content": "Summarise the meeting notes, please."}]
    )
    msg = raw.parse()
    header = float(raw.headers["x-tiergate-cost-usd"])
    gw.stop()
    (row,) = gw.ledger_rows("kind='request'")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (msg.usage.input_tokens, msg.usage.output_tokens)
    expected = (row["prompt_tokens"] * SONNET_IN + row["completion_tokens"] * SONNET_OUT) / 1e6
    assert expected > 0 and abs(row["cost_usd"] - expected) < 1e-12
    assert abs(header - expected) < 1e-8  # the header has eight decimals


def test_an_unknown_cloud_model_is_flagged_by_check_config_and_health(standins, gateway, tmp_path):
    up = standins(protocol="anthropic", name="claude", models=["claude-sonnet-4-5"])
    mystery = {"name": "mystery", "provider": "anthro", "model": "acme-unreleased-9", "tier": 2}
    cfg = config(up, extra_deployments=[mystery])
    res = run_cli("check-config", str(write_config(tmp_path, cfg)), env=cli_env({"CHEAP_KEY": "x"}))
    assert "warning: deployment 'mystery' (acme-unreleased-9 via anthro) has no price" in res.stderr
    assert "sonnet" not in res.stderr
    assert "$3/$15 per Mtok, cache read/write $0.3/$3.75" in res.stdout and "NO PRICE" in res.stdout
    gw = gateway(cfg)
    status, _, body = http("GET", f"{gw.base_url}/health")
    assert status == 200 and json.loads(body)["unpriced_deployments"] == ["mystery"]
    assert any("deployment mystery has no price" in line for line in gw.log)  # and at start, in the log
