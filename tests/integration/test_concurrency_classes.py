"""Concurrency classes through the real gateway on Redis: live traffic from any agent matching ``sub-*`` and a
scheduled job of that class share one slot; requests beyond it queue (no 429) and all are answered."""

from __future__ import annotations

import concurrent.futures as cf
import sqlite3
import time

import openai

from procs import CHEAP_KEY, MASTER_KEY, tiered_config, wait_until

DELAY_S = 1.0


def test_a_class_of_subagents_and_a_job_of_the_class_queue_for_one_slot(standins, gateway, redis_prefix):
    local = standins(name="local", models=["llama-8b"])
    local.faults({"mode": "slow", "delay_s": DELAY_S, "times": 4})  # every answer takes a second
    cfg = tiered_config(local, None)
    cfg.update(state="redis://127.0.0.1:6379/0", state_prefix=redis_prefix)
    cfg["limits"] = [{"scope": "agent", "match": "sub-*", "max_concurrent": 1, "shared": True, "queue_timeout": "60s"}]
    cfg["scheduler"] = {"poll": "0.5s"}
    cfg["jobs"] = [{"name": "sub-report", "schedule": "0 0 1 1 *", "prompt": "report", "retries": 0}]
    gw = gateway(cfg, env_extra={"CHEAP_KEY": CHEAP_KEY})

    def ask(agent: str) -> str:
        client = openai.OpenAI(
            base_url=f"{gw.base_url}/v1",
            api_key=MASTER_KEY,
            max_retries=0,
            timeout=60,
            default_headers={"X-Tiergate-Agent": agent},
        )
        out = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": f"hi from {agent}"}])
        return out.choices[0].message.content or ""

    t0 = time.monotonic()
    gw.cli("jobs", "run", "sub-report", "--no-wait")
    with cf.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(ask, ["sub-a", "sub-b", "sub-c"]))
    conn = sqlite3.connect(gw.ledger_path)

    def job_done() -> bool:
        return conn.execute("SELECT status FROM job_runs").fetchone()[0] in ("ok", "failed")

    assert wait_until(job_done, timeout=60)
    elapsed = time.monotonic() - t0
    assert all(a.startswith("[local]") for a in answers)  # no 429: the ones beyond the slot waited
    assert conn.execute("SELECT status FROM job_runs").fetchone()[0] == "ok"

    def statuses() -> list[int]:
        return [r[0] for r in conn.execute("SELECT status FROM usage WHERE kind = 'request'")]

    wait_until(lambda: len(statuses()) >= 4, timeout=10)  # the ledger writer batches its rows
    assert statuses() == [200, 200, 200, 200]
    conn.close()
    assert elapsed >= 4 * DELAY_S  # one at a time: four answers of a second each
