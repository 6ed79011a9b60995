"""JSON log lines with the request id, and the request id passed upstream, from a real server run."""

from __future__ import annotations

import json

from procs import MASTER_KEY, http, tiered_config, wait_until


def chat(gw, task: str = "coding", **headers: str) -> tuple[int, dict[str, str], bytes]:
    body = {"model": "auto", "messages": [{"role": "user", "content": "write some code"}]}
    return http(
        "POST",
        f"{gw.base_url}/v1/chat/completions",
        body=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {MASTER_KEY}",
            "Content-Type": "application/json",
            "X-Tiergate-Task": task,
            **headers,
        },
    )


def json_lines(gw) -> list[dict]:
    out = []
    for line in list(gw.log):
        if line.startswith("{"):
            out.append(json.loads(line))  # every JSON-looking line must parse: a bad one fails here
    return out


def test_json_log_lines_carry_the_request_id_and_it_goes_upstream(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    cfg = tiered_config(local, cheap)
    # a budget whose alert threshold the first paid answer crosses: a warning logged while the request settles
    cfg["budgets"] = [{"name": "tiny", "scope": "global", "window": "day", "limit_usd": 1, "alert_at": [1e-9]}]
    gw = gateway(cfg, args=("--log-format", "json", "--log-level", "info"))
    status, headers, body = chat(gw, **{"X-Request-ID": "client-rid-42"})
    assert status == 200, body
    assert headers["X-Request-ID"] == "client-rid-42"
    assert cheap.requests()[-1]["headers"]["x-request-id"] == "client-rid-42"

    def alert_logged() -> list[dict]:
        return [ln for ln in json_lines(gw) if ln["logger"] == "tiergate.guardrails.alerts"]

    assert wait_until(alert_logged, timeout=30), gw.log[-20:]
    (alert,) = alert_logged()
    assert alert["request_id"] == "client-rid-42", alert
    assert alert["level"] == "WARNING" and "tiny" in alert["message"]
    assert set(alert) >= {"time", "level", "logger", "message"}
    # startup lines are JSON too, without a request id
    started = [ln for ln in json_lines(gw) if ln["logger"] != "tiergate.guardrails.alerts"]
    assert all("request_id" not in ln for ln in started)

    # no X-Request-ID from the client: tiergate's own id, in the answer and upstream alike
    status, headers, _ = chat(gw)
    assert status == 200
    rid = headers["X-Request-ID"]
    assert rid and rid != "client-rid-42"
    assert cheap.requests()[-1]["headers"]["x-request-id"] == rid
    # a header the edge refuses (not printable ASCII) never reaches upstream: the request gets a 400 first
    n = len(cheap.requests())
    status, headers, _ = chat(gw, **{"X-Request-ID": "bad\x7fid"})
    assert status == 400
    assert len(cheap.requests()) == n


def test_text_logs_stay_the_default(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    gw = gateway(tiered_config(local, None), args=("--log-level", "info"))
    status, _, _ = chat(gw, task="classification")
    assert status == 200
    assert not any(line.startswith("{") for line in gw.log)
    assert local.requests()[-1]["headers"]["x-request-id"]


def test_workers_log_json_too(standins, gateway, redis_prefix):
    """--workers N: each spawned worker sets up the same log format (a spawned process starts with none)."""
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    cfg = tiered_config(local, cheap)
    cfg.update(state="redis://127.0.0.1:6379/0", state_prefix=redis_prefix)
    cfg["budgets"] = [{"name": "tiny", "scope": "global", "window": "day", "limit_usd": 1, "alert_at": [1e-9]}]
    gw = gateway(cfg, args=("--workers", "2", "--log-format", "json"))
    status, _, body = chat(gw, **{"X-Request-ID": "worker-rid-7"})
    assert status == 200, body

    def alert_logged() -> list[dict]:
        return [ln for ln in json_lines(gw) if ln.get("request_id") == "worker-rid-7"]

    assert wait_until(alert_logged, timeout=30), gw.log[-20:]
    assert alert_logged()[0]["logger"] == "tiergate.guardrails.alerts"
