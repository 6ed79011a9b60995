"""Every cent recorded, nothing lost on SIGTERM; report, explain and check-config as a user runs them."""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import signal

import openai

from procs import MASTER_KEY, cli_env, run_cli, tiered_config, wait_until, write_config

MSG = [{"role": "user", "content": "summarise: the meeting moved to friday"}]


def test_sigterm_under_load_loses_no_usage_record(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    gw = gateway(tiered_config(local, None))
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    n = 200
    with cf.ThreadPoolExecutor(16) as pool:
        done = sum(
            1 for r in pool.map(lambda _: c.chat.completions.create(model="auto", messages=MSG), range(n)) if r.id
        )
    # then requests still in flight when SIGTERM arrives: they finish, and they are recorded too
    local.faults({"mode": "slow", "delay_s": 1.0, "times": 12})
    with cf.ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(c.chat.completions.create, model="auto", messages=MSG) for _ in range(12)]
        assert wait_until(lambda: len(local.requests()) >= n + 12, timeout=10)
        assert gw.stop(signal.SIGTERM) == 0
        in_flight = sum(1 for f in futures if f.result().id)
    rows = gw.ledger_rows("kind='request'")
    assert done == n and in_flight == 12
    assert len(rows) == n + 12 and len({r["request_id"] for r in rows}) == n + 12


def test_report_groups_by_deployment_tier_agent_task_and_counterfactual(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(tiered_config(local, cheap))
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    for task, agent, n in (("classification", "sorter", 3), ("coding", "coder", 2)):
        for _ in range(n):
            c.chat.completions.create(
                model="auto", messages=MSG, extra_headers={"X-Tiergate-Task": task, "X-Tiergate-Agent": agent}
            )
    gw.stop()
    rep = json.loads(gw.cli("report", "--json").stdout)
    assert rep["requests"] == 5
    assert rep["by_deployment"]["local-8b"]["requests"] == 3 and rep["by_deployment"]["cheap"]["requests"] == 2
    assert rep["by_tier"]["tier 0"]["requests"] == 3
    assert rep["by_agent"]["sorter"]["requests"] == 3 and rep["by_task"]["coding"]["requests"] == 2
    assert abs(rep["local_share"] - 0.6) < 1e-9
    rows = gw.ledger_rows("kind='request'")
    assert abs(rep["cost_usd"] - sum(r["cost_usd"] for r in rows)) < 1e-12 and rep["cost_usd"] > 0
    tokens_in = sum(r["prompt_tokens"] for r in rows)
    tokens_out = sum(r["completion_tokens"] for r in rows)
    assert rep["frontier_deployment"] == "cheap"
    assert abs(rep["all_frontier_cost_usd"] - (tokens_in * 0.15 + tokens_out * 0.6) / 1e6) < 1e-12
    text = gw.cli("report").stdout
    assert "served locally: 60%" in text and "by agent:" in text
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    assert json.loads(gw.cli("report", "--json", "--day", yesterday).stdout)["requests"] == 0
    bad = gw.cli("report", "--day", "22/11/2026", check=False)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


def test_explain_prints_the_plan_without_sending(standins, tmp_path):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    path = write_config(tmp_path, tiered_config(local, cheap))
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"model": "auto", "messages": MSG, "max_tokens": 100}))
    out = run_cli(
        "explain", "--config", str(path), str(req), "-H", "X-Tiergate-Task: coding", env=cli_env({"CHEAP_KEY": "x"})
    ).stdout
    assert "1. cheap (tier 1" in out and "task=coding needs tier>=1" in out
    assert "local-8b" not in out.split("candidates")[1]
    assert local.requests() == [] and cheap.requests() == []
    private = run_cli(
        "explain",
        "--config",
        str(path),
        str(req),
        "-H",
        "X-Tiergate-Privacy: local-only",
        env=cli_env({"CHEAP_KEY": "x"}),
    ).stdout
    assert "1. local-8b" in private and "cheap: privacy local-only" in private
    assert "warning:" not in out
    typo = run_cli(
        "explain", "--config", str(path), str(req), "-H", "X-Tiergate-Task: codng", env=cli_env({"CHEAP_KEY": "x"})
    ).stdout
    assert "warning: unknown task 'codng'; known: " in typo and "coding" in typo.split("warning:")[1]


def test_check_config_prints_tiers_and_names_errors(tmp_path):
    good = write_config(
        tmp_path,
        {
            "providers": {"box": {"api": "openai-chat", "base_url": "http://127.0.0.1:8080/v1", "local": True}},
            "deployments": [{"name": "local-8b", "provider": "box", "model": "llama", "tier": 0}],
            "aliases": {"local/fast": ["local-8b"]},
        },
    )
    out = run_cli("check-config", str(good)).stdout
    assert "0: local-8b" in out and "local/fast -> local-8b" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  box: {base_url: 'http://127.0.0.1:8080/v1'}\n")
    res = run_cli("check-config", str(bad), check=False)
    assert res.returncode == 2
    assert "providers.box.api: Field required; allowed values: openai-chat, anthropic-messages" in res.stderr
    assert "Traceback" not in res.stderr
