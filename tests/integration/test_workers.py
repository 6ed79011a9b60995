"""`tiergate serve --workers N`: several processes on one port sharing keys, kills, emergency mode and the ledger."""

from __future__ import annotations

import concurrent.futures as cf
import signal

import openai

from procs import MASTER_KEY, cli_env, run_cli, tiered_config, wait_until, write_config

MSG = [{"role": "user", "content": "hi"}]


def test_two_workers_share_one_port_keys_emergency_and_ledger(standins, gateway):
    local, cloud = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(tiered_config(local, cloud), args=("--workers", "2"))
    assert "2 workers" in gw.log[0]
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    with cf.ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda _: c.chat.completions.create(model="auto", messages=MSG).id, range(200)))
    assert len(set(ids)) == 200
    # a key made by the CLI works on every worker; so does emergency mode
    key = gw.cli("keys", "create", "--name", "w").stdout.strip()
    kc = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=key, max_retries=0)

    def key_works_everywhere() -> bool:
        try:
            return all(kc.chat.completions.create(model="auto", messages=MSG).id for _ in range(8))
        except openai.AuthenticationError:
            return False

    assert wait_until(key_works_everywhere, timeout=5)
    gw.cli("emergency", "on", "--reason", "drill")

    def all_local() -> bool:
        served = [
            c.chat.completions.with_raw_response.create(model="task/coding", messages=MSG).headers[
                "x-tiergate-deployment"
            ]
            for _ in range(8)
        ]
        return set(served) == {"local-8b"}

    assert wait_until(all_local, timeout=5)
    assert gw.stop(signal.SIGTERM) == 0
    assert len(gw.ledger_rows("kind='request'")) >= 200 + 8 + 8


def test_workers_refuse_per_process_limits(tmp_path):
    cfg = {"budgets": [{"scope": "global", "limit_usd": 1}], "providers": {}, "deployments": []}
    res = run_cli(
        "serve",
        "--config",
        str(write_config(tmp_path, cfg)),
        "--port",
        "0",
        "--workers",
        "2",
        env=cli_env(),
        check=False,
    )
    assert res.returncode == 2
    assert "budgets (without state: redis://...) would be enforced per process" in res.stderr


def test_budget_holds_across_workers_with_redis_state(standins, gateway, redis_prefix):
    local, cloud = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    cfg = tiered_config(local, cloud)
    cfg["deployments"][1]["price"] = {"input_per_mtok": 100, "output_per_mtok": 100}
    cfg["budgets"] = [{"scope": "global", "window": "day", "limit_usd": 0.03, "action": "reject"}]
    cfg["state"] = "redis://127.0.0.1:6379/0"
    cfg["state_prefix"] = redis_prefix
    gw = gateway(cfg, args=("--workers", "2"))
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)

    def one(_):
        try:
            return c.chat.completions.create(model="task/coding", messages=MSG, max_tokens=20).id
        except openai.RateLimitError:
            return None

    with cf.ThreadPoolExecutor(24) as pool:
        results = list(pool.map(one, range(150)))
    assert any(results) and None in results
    assert gw.stop(signal.SIGTERM) == 0
    settled = sum(r["cost_usd"] for r in gw.ledger_rows("kind='request'"))
    assert 0 < settled <= 0.03  # one budget across both processes, never passed
