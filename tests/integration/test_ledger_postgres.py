"""A real gateway on a PostgreSQL ledger: every request recorded through SIGTERM; the CLI works against it."""

from __future__ import annotations

import concurrent.futures as cf
import json
import signal

import openai

from procs import (
    MASTER_KEY,
    cli_env,
    http,
    run_cli,
    tiered_config,
    wait_until,
    write_config,
)

MSG = [{"role": "user", "content": "summarise: the meeting moved to friday"}]
PASSWORD = "not-shown-anywhere-5f1c"  # trust auth ignores it; it must still never reach a log line


def pg_config(local, tmp_path) -> dict:  # type: ignore[no-untyped-def]
    return {**tiered_config(local, None), "ledger": "env:TIERGATE_LEDGER_URL", "ledger_spool": str(tmp_path / "spool")}


def test_gateway_on_postgresql_records_every_request_through_sigterm(standins, gateway, pg_schema, tmp_path):
    local = standins(name="local", models=["llama-8b"])
    gw = gateway(
        pg_config(local, tmp_path),
        env_extra={"TIERGATE_LEDGER_URL": pg_schema.url(password=PASSWORD)},
        args=("--log-level", "info"),
    )
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)
    n = 60
    with cf.ThreadPoolExecutor(8) as pool:
        done = sum(
            1 for r in pool.map(lambda _: c.chat.completions.create(model="auto", messages=MSG), range(n)) if r.id
        )
    local.faults({"mode": "slow", "delay_s": 1.0, "times": 6})  # still in flight when SIGTERM arrives
    with cf.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(c.chat.completions.create, model="auto", messages=MSG) for _ in range(6)]
        assert wait_until(lambda: len(local.requests()) >= n + 6, timeout=10)
        assert gw.stop(signal.SIGTERM) == 0
        in_flight = sum(1 for f in futures if f.result().id)
    assert done == n and in_flight == 6
    rows = gw.ledger_rows("kind='request'")
    assert len(rows) == n + 6 and len({r["request_id"] for r in rows}) == n + 6
    assert all(r["record_id"] for r in rows) and len({r["record_id"] for r in rows}) == n + 6
    log = "\n".join(gw.log)
    assert PASSWORD not in log and f"{pg_schema.user}:***@" in log
    assert not list((tmp_path / "spool").rglob("*.jsonl"))


def test_migrate_keys_and_report_against_postgresql(standins, gateway, pg_schema, tmp_path):
    local = standins(name="local", models=["llama-8b"])
    env = cli_env({"TIERGATE_LEDGER_URL": pg_schema.url()})
    path = write_config(tmp_path, pg_config(local, tmp_path))
    first = run_cli("migrate", "--config", str(path), env=env).stdout
    assert "applied 0001_usage" in first and "applied 0005_record_ids" in first
    assert "nothing to apply" in run_cli("migrate", "--config", str(path), env=env).stdout
    key = run_cli("keys", "create", "--name", "bot", "--agent", "sorter", "--config", str(path), env=env).stdout.strip()

    gw = gateway(pg_config(local, tmp_path), env_extra={"TIERGATE_LEDGER_URL": pg_schema.url()})
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=key, max_retries=0, timeout=30)
    for _ in range(3):
        c.chat.completions.create(model="auto", messages=MSG, extra_headers={"X-Tiergate-Task": "classification"})
    later = gw.cli("keys", "create", "--name", "late").stdout.strip()  # a running gateway picks it up within a second
    assert wait_until(
        lambda: http("GET", f"{gw.base_url}/v1/models", headers={"Authorization": f"Bearer {later}"})[0] == 200,
        timeout=10,
    )
    assert [k["name"] for k in json.loads(gw.cli("keys", "list", "--json").stdout)] == ["bot", "late"]
    gw.cli("keys", "revoke", "late")
    assert wait_until(
        lambda: http("GET", f"{gw.base_url}/v1/models", headers={"Authorization": f"Bearer {later}"})[0] == 401,
        timeout=10,
    )
    assert gw.stop() == 0
    rep = json.loads(gw.cli("report", "--json").stdout)
    assert rep["requests"] == 3 and rep["by_agent"]["sorter"]["requests"] == 3
    assert rep["by_task"]["classification"]["requests"] == 3 and rep["local_share"] == 1.0
    assert "requests served: 3" in gw.cli("report").stdout
    sessions = json.loads(gw.cli("sessions", "list", "--json").stdout)
    assert sessions and sessions[0]["requests"] == 3 and sessions[0]["agent"] == "sorter"
