"""Managed local models through the real gateway: cloud overflow during a swap, then served locally."""

from __future__ import annotations

import json

import openai

from procs import MASTER_KEY, bundled_gguf, http, wait_until
from tiny_gguf import write_tiny_llama


def test_request_for_an_unloaded_model_overflows_to_cloud_then_swaps_in(standins, gateway, tmp_path):
    smol = bundled_gguf()
    tiny = write_tiny_llama(tmp_path / "tiny.gguf", seed=3)
    cloud = standins(name="cloud", models=["gpt-4o-mini"])
    row = {"context": 256, "threads": 1, "parallel": 1, "extra_args": ["--verbosity", "1"]}
    gw = gateway(
        {
            "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
            "local_models": {
                "budget_mb": 1000,
                "default": "smol",
                "models": [
                    {"name": "smol", "gguf": str(smol), "memory_mb": 600, **row},
                    {"name": "tiny", "gguf": str(tiny), "memory_mb": 600, "idle_ttl": "1h", **row},
                ],
            },
            "providers": {"cloudco": {"api": "openai-chat", "base_url": f"{cloud.base_url}/v1"}},
            "deployments": [
                {"name": "local-smol", "local_model": "smol", "tier": 0},
                {"name": "local-tiny", "local_model": "tiny", "tier": 0},
                {
                    "name": "cloud",
                    "provider": "cloudco",
                    "model": "gpt-4o-mini",
                    "tier": 1,
                    "context_window": 128000,
                    "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
                },
            ],
            "routing": {"num_retries": 0, "fallbacks": {"local-tiny": ["cloud"]}},
        }
    )
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    msg = [{"role": "user", "content": "hi"}]
    # the default model was loaded at start and serves at once
    first = c.chat.completions.with_raw_response.create(model="local-smol", messages=msg, max_tokens=4)
    assert first.headers["x-tiergate-deployment"] == "local-smol"
    # tiny is not loaded: the request goes on to the cloud right away, and tiny starts loading (evicting smol)
    second = c.chat.completions.with_raw_response.create(model="local-tiny", messages=msg, max_tokens=4)
    assert second.headers["x-tiergate-deployment"] == "cloud"
    assert "skipped local-tiny (tiny " in second.headers["x-tiergate-reason"]

    def state(name: str) -> str:
        rows = json.loads(
            http("GET", f"{gw.base_url}/admin/models", headers={"Authorization": f"Bearer {MASTER_KEY}"})[2]
        )
        return next(r["state"] for r in rows if r["name"] == name)

    assert wait_until(lambda: state("tiny") == "ready", timeout=60)
    assert state("smol") != "ready"  # the budget holds one of the two: smol was swapped out
    third = c.chat.completions.with_raw_response.create(model="local-tiny", messages=msg, max_tokens=4)
    assert third.headers["x-tiergate-deployment"] == "local-tiny"
    metrics = http("GET", f"{gw.base_url}/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})[2].decode()
    assert "tiergate_local_model_swaps_total" in metrics
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    assert [r["deployment"] for r in rows] == ["local-smol", "cloud", "local-tiny"]
    assert "skipped local-tiny (tiny " in rows[1]["reason"]
    import sqlite3

    events = [
        (m, e)
        for m, e in sqlite3.connect(gw.ledger_path).execute("SELECT model, event FROM local_model_events ORDER BY id")
    ]
    assert events[0] == ("smol", "load")
    assert ("smol", "swap") in events and ("tiny", "load") in events
    assert events.index(("smol", "swap")) < events.index(("tiny", "load"))
    load_times = (
        sqlite3.connect(gw.ledger_path)
        .execute("SELECT details FROM local_model_events WHERE event = 'load'")
        .fetchall()
    )
    assert all(json.loads(d)["load_time_s"] > 0 for (d,) in load_times)


def _one_model_config(smol, cloud, **local) -> dict:
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "local_models": {
            "budget_mb": 1000,
            "default": "smol",
            "models": [
                {
                    "name": "smol",
                    "gguf": str(smol),
                    "memory_mb": 300,
                    "pinned": True,
                    "context": 256,
                    "threads": 1,
                    "parallel": 2,
                    "extra_args": ["--verbosity", "1"],
                }
            ],
            **local,
        },
        "providers": {"cloudco": {"api": "openai-chat", "base_url": f"{cloud.base_url}/v1"}},
        "deployments": [
            {"name": "local-smol", "local_model": "smol", "tier": 0},
            {"name": "cloud", "provider": "cloudco", "model": "gpt-4o-mini", "tier": 1, "context_window": 128000},
        ],
        "routing": {"num_retries": 0, "breaker_cooldown_s": 1},
    }


def _served_by(c) -> str:
    r = c.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    return r.headers["x-tiergate-deployment"] + " | " + r.headers["x-tiergate-reason"]


def test_gpu_lock_file_overflows_local_tiers_to_the_cloud(standins, gateway, tmp_path):
    cloud = standins(name="cloud", models=["gpt-4o-mini"])
    lock = tmp_path / "gpu.lock"
    gw = gateway(_one_model_config(bundled_gguf(), cloud, lock_file=str(lock), lock_mode="exists"))
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    assert _served_by(c).startswith("local-smol")
    lock.write_text("tts job")
    assert wait_until(lambda: _served_by(c).startswith("cloud"), timeout=5)
    assert "gpu busy: lock file" in _served_by(c)
    lock.unlink()
    assert wait_until(lambda: _served_by(c).startswith("local-smol"), timeout=5)


def test_crashed_local_server_mid_traffic_loses_no_request(standins, gateway):
    import os
    import signal
    import threading

    cloud = standins(name="cloud", models=["gpt-4o-mini"])
    gw = gateway(_one_model_config(bundled_gguf(), cloud))
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    served, errors, stop = [], [], threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                served.append(_served_by(c).split(" | ")[0])
            except openai.APIError as exc:  # any lost request fails the test
                errors.append(exc)

    def pid() -> int:
        rows = json.loads(
            http("GET", f"{gw.base_url}/admin/models", headers={"Authorization": f"Bearer {MASTER_KEY}"})[2]
        )
        return rows[0]["pid"]

    workers = [threading.Thread(target=traffic) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        assert wait_until(lambda: served.count("local-smol") >= 3, timeout=20)
        first = pid()
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: "cloud" in served, timeout=20)
        assert wait_until(lambda: pid() not in (None, first), timeout=30)  # restarted
        n = len(served)
        assert wait_until(lambda: "local-smol" in served[n:], timeout=30)  # and serving again
    finally:
        stop.set()
        for w in workers:
            w.join(30)
    assert errors == []


def test_with_load_wait_a_request_waits_for_its_model_instead_of_overflowing(standins, gateway, tmp_path):
    cloud = standins(name="cloud", models=["gpt-4o-mini"])
    cfg = _one_model_config(bundled_gguf(), cloud, load_wait_s=60)
    tiny = write_tiny_llama(tmp_path / "tiny.gguf", seed=5)
    cfg["local_models"]["models"].append(
        {
            "name": "tiny",
            "gguf": str(tiny),
            "memory_mb": 300,
            "context": 128,
            "threads": 1,
            "parallel": 1,
            "extra_args": ["--verbosity", "1"],
        }
    )
    cfg["deployments"].append({"name": "local-tiny", "local_model": "tiny", "tier": 0})
    gw = gateway(cfg)
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    r = c.chat.completions.with_raw_response.create(
        model="local-tiny", messages=[{"role": "user", "content": "x"}], max_tokens=3
    )
    assert r.headers["x-tiergate-deployment"] == "local-tiny"  # waited for the load; not the cloud, not smol
    assert cloud.requests() == []


def test_models_cli_shows_state_memory_and_use(standins, gateway):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _one_model_config(bundled_gguf(), standins(name="cloud", models=["gpt-4o-mini"]))
    cfg["server"] = {"port": port}
    gw = gateway(cfg)
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    _served_by(c)
    rows = json.loads(gw.cli("models", "--json").stdout)
    assert rows[0]["name"] == "smol" and rows[0]["state"] == "ready" and rows[0]["memory_mb"] == 300
    assert rows[0]["requests_served"] == 1 and rows[0]["load_time_s"] > 0
    text = gw.cli("models").stdout
    assert "smol" in text and "ready" in text and "300 MB" in text
