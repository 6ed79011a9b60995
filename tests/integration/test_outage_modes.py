"""Redis, then PostgreSQL, go away mid-traffic and come back: on_outage decides, no usage record is lost.

The servers are the machine's real PostgreSQL and Redis; the outage is made
by cutting a TCP forwarder the gateway talks through (tests/tcp_cut.py), so
tests running in parallel keep their services.
"""

from __future__ import annotations

import signal
import threading
import time

import openai
import orjson

from procs import MASTER_KEY, http, tiered_config, wait_until
from tcp_cut import CuttableProxy

MSG = [{"role": "user", "content": "hi"}]


class Traffic:
    """A background client sending requests until stopped; remembers what each got."""

    def __init__(self, client: openai.OpenAI, model: str = "auto", task: str = "coding") -> None:
        self.client, self.model, self.task = client, model, task
        # (when the request was sent, deployment or "error <status>"): a request sent before an outage
        # began but answered after it is not one made during it
        self.results: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                raw = self.client.chat.completions.with_raw_response.create(
                    model=self.model, messages=MSG, max_tokens=10, extra_headers={"X-Tiergate-Task": self.task}
                )
                self.results.append((sent, raw.headers["x-tiergate-deployment"]))
            except openai.APIStatusError as exc:
                self.results.append((sent, f"error {exc.status_code}"))
            time.sleep(0.02)

    def since(self, t: float) -> list[str]:
        return [r for ts, r in self.results if ts >= t]


def health(gw) -> dict:
    _, _, body = http("GET", f"{gw.base_url}/health")
    return orjson.loads(body)


def test_redis_then_postgres_outage_follows_the_configured_modes(standins, gateway, pg_schema, redis_prefix):
    local, cloud = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    redis_proxy = CuttableProxy("127.0.0.1", 6379).start()
    pg_proxy = CuttableProxy("127.0.0.1", 5432).start()
    try:
        cfg = tiered_config(local, cloud)
        cfg["state"] = f"redis://127.0.0.1:{redis_proxy.port}/0"
        cfg["state_prefix"] = redis_prefix
        cfg["ledger"] = pg_schema.url(port=pg_proxy.port)
        cfg["budgets"] = [{"scope": "global", "window": "day", "limit_usd": 100, "action": "reject"}]
        cfg["on_outage"] = {"budgets": "fail_closed", "ledger": "fail_open"}
        gw = gateway(cfg)
        client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)
        with Traffic(client) as traffic:
            assert wait_until(lambda: "cheap" in traffic.since(0), timeout=10)  # task coding -> tier 1: the cloud

            # Redis goes away: budgets cannot be checked -> fail_closed serves local tiers only, never the cloud
            redis_proxy.cut()
            assert wait_until(lambda: health(gw)["dependencies"]["state"]["ok"] is False, timeout=10)
            t = time.monotonic()
            assert wait_until(lambda: len(traffic.since(t)) >= 10, timeout=15)
            during = traffic.since(t)
            assert set(during) == {"local-8b"}, during
            h = health(gw)
            assert h["status"] == "degraded" and h["dependencies"]["state"]["on_outage"]["budgets"] == "fail_closed"

            redis_proxy.restore()
            t = time.monotonic()
            assert wait_until(lambda: "cheap" in traffic.since(t), timeout=15)
            assert wait_until(lambda: health(gw)["dependencies"]["state"]["ok"] is True, timeout=10)

            # PostgreSQL goes away: ledger fail_open keeps serving every tier, records spool to disk
            pg_proxy.cut()
            assert wait_until(lambda: health(gw)["dependencies"]["ledger"]["ok"] is False, timeout=15)
            t = time.monotonic()
            assert wait_until(lambda: len(traffic.since(t)) >= 10, timeout=15)
            assert "cheap" in traffic.since(t) and not any(r.startswith("error") for r in traffic.since(t))
            assert wait_until(lambda: health(gw)["ledger"]["spooled"] > 0, timeout=10)

            pg_proxy.restore()
            assert wait_until(lambda: health(gw)["dependencies"]["ledger"]["ok"] is True, timeout=20)
            assert wait_until(lambda: health(gw)["ledger"]["spooled"] == 0, timeout=20)
        metrics = http("GET", f"{gw.base_url}/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})[2].decode()
        assert 'tiergate_outage_decisions_total{concern="budgets",decision="local_only",mode="fail_closed"}' in metrics
        assert gw.stop(signal.SIGTERM) == 0
        # every request the clients sent is in PostgreSQL exactly once
        rows = gw.ledger_rows("kind='request'")
        ids = [r["request_id"] for r in rows]
        assert len(ids) == len(set(ids)) == len(traffic.results), (len(ids), len(set(ids)), len(traffic.results))
        assert not any(r.startswith("error") for _, r in traffic.results), traffic.results
    finally:
        redis_proxy.stop()
        pg_proxy.stop()
