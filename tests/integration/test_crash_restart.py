"""Real gateways killed and restarted on their ledger: budgets and sessions come back as the ledger holds them,
alerts are not sent twice, a hostile header stops nothing, a stuck writer is seen (issue 14 items 1, 4, 8;
issue 13 item 6).

The crash test is the loss-window measurement in docs/guardrails.md: it prints how many answered
requests had no row when SIGKILL came, and how long before the kill they were answered.
"""

from __future__ import annotations

import http.client
import json
import signal
import sqlite3
import threading
import time

import openai
import pytest

from procs import MASTER_KEY, Recorder, wait_until
from procs import http as fetch

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
PRICE = {"input_per_mtok": 100, "output_per_mtok": 100}  # pricey, so every request costs something visible


def config(cloud, **extra) -> dict:
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": {"cloudco": {"api": "openai-chat", "base_url": f"{cloud.base_url}/v1"}},
        "deployments": [
            {"name": "cloud", "provider": "cloudco", "model": "m", "tier": 1, "context_window": 128000, "price": PRICE}
        ],
        "routing": {"num_retries": 0},
        **extra,
    }


def client(gw, session: str = "crash") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gw.base_url}/v1",
        api_key=MASTER_KEY,
        max_retries=0,
        timeout=30,
        default_headers={"X-Tiergate-Session": session},
    )


def health(gw) -> dict:
    return json.loads(fetch("GET", f"{gw.base_url}/health")[2])


def global_budget(gw) -> dict:
    (line,) = [b for b in health(gw)["budgets"] if b["budget"].startswith("global")]
    return line


def ledger_sums(gw, since: float) -> tuple[float, int]:
    rows = gw.ledger_rows(f"kind = 'request' AND deployment IS NOT NULL AND ts >= {since}")
    return sum(r["cost_usd"] for r in rows), len(rows)


def test_sigkill_mid_traffic_then_restart_budget_and_session_equal_the_ledger(standins, gateway):
    cloud = standins(name="cloud", models=["m"], chunks=20, chunk_delay=0.005)
    cfg = config(cloud, budgets=[{"scope": "global", "window": "day", "limit_usd": 10_000, "action": "reject"}])
    gw = gateway(cfg)
    day_start = time.time() - 1  # the window holds nothing from before this test's ledger
    answered: dict[str, float] = {}  # request id -> when the client had the whole answer
    stop = threading.Event()
    lock = threading.Lock()

    def plain(c: openai.OpenAI) -> None:
        raw = c.chat.completions.with_raw_response.create(model="cloud", messages=[{"role": "user", "content": "hi"}])
        raw.parse()
        with lock:
            answered[raw.headers["x-request-id"]] = time.monotonic()

    def abandoned(c: openai.OpenAI) -> None:  # a stream the client leaves after one chunk: a 499, billed
        with c.chat.completions.create(
            model="cloud", messages=[{"role": "user", "content": "stream"}], stream=True
        ) as stream:
            next(iter(stream))

    def traffic(n: int) -> None:
        c = client(gw)
        i = 0
        while not stop.is_set():
            i += 1
            try:
                abandoned(c) if (i + n) % 7 == 0 else plain(c)
            except (openai.APIConnectionError, openai.APIStatusError, StopIteration):
                if stop.is_set():
                    return
                raise

    threads = [threading.Thread(target=traffic, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    assert wait_until(lambda: len(gw.ledger_rows("status = 499")) >= 3 and len(answered) >= 150, timeout=120)
    stop.set()  # the clients send nothing new; what they have in flight is cut by the kill
    gw.proc.send_signal(signal.SIGKILL)  # mid-traffic: no drain, no flush
    killed_at = time.monotonic()
    gw.proc.wait(30)
    for t in threads:
        t.join(30)
    written = {r["request_id"] for r in gw.ledger_rows("kind = 'request'")}
    lost = {rid: killed_at - at for rid, at in answered.items() if rid not in written}
    print(
        f"\nSIGKILL under load: {len(answered)} answered plain requests, {len(lost)} without a row; answered "
        f"{', '.join(f'{s * 1000:.0f} ms' for s in sorted(lost.values()))} before the kill"
    )
    assert all(age < 2.0 for age in lost.values()), lost  # only the last moments before the kill
    billed_499 = gw.ledger_rows("status = 499 AND cost_usd > 0")
    assert billed_499, "no abandoned stream was billed: nothing tests the 499 part"

    gw2 = gateway(cfg)  # the same ledger
    cost, calls = ledger_sums(gw2, day_start)
    line = global_budget(gw2)
    assert abs(line["spent_usd"] - cost) < 2e-6 and line["calls"] == calls and line["reserved_usd"] == 0
    status, _, body = fetch("GET", f"{gw2.base_url}/admin/sessions?limit=5", headers=AUTH)
    assert status == 200
    (crash,) = [s for s in json.loads(body)["sessions"] if s["session"] == "crash"]
    rows = gw2.ledger_rows("kind = 'request' AND deployment IS NOT NULL AND session = 'crash'")
    assert crash["requests"] == len(rows) and abs(crash["cost_usd"] - sum(r["cost_usd"] for r in rows)) < 1e-9
    c = client(gw2)
    c.chat.completions.create(model="cloud", messages=[{"role": "user", "content": "after"}])  # and it serves
    assert global_budget(gw2)["calls"] == calls + 1


def test_alerts_are_sent_once_per_window_across_restarts_and_the_cli_alerts_like_the_admin_route(standins, gateway):
    local, cloud = standins(name="local", models=["llama"]), standins(name="cloud", models=["m"])
    hook = Recorder()
    try:
        cfg = config(
            cloud,
            budgets=[{"scope": "global", "window": "day", "limit_usd": 0.004, "action": "local-only"}],
            alerts=[{"type": "webhook", "url": f"{hook.url}/hook"}],
        )
        cfg["providers"]["box"] = {"api": "openai-chat", "base_url": f"{local.base_url}/v1", "local": True}
        cfg["deployments"].append(
            {"name": "local", "provider": "box", "model": "llama", "tier": 0, "context_window": 8192}
        )

        def budget_emergencies() -> list[dict]:
            return [h["body"] for h in hook.received if h["body"]["details"].get("budget")]

        gw = gateway(cfg)
        c = client(gw)
        for _ in range(8):  # the budget runs out: emergency mode, alerted once
            c.chat.completions.create(model="cloud", messages=[{"role": "user", "content": "a long enough prompt"}])
        assert wait_until(lambda: budget_emergencies(), timeout=10)
        gw.stop()
        gw2 = gateway(cfg)  # the same ledger and window: still in emergency, and already alerted
        for _ in range(3):
            r = client(gw2).chat.completions.with_raw_response.create(
                model="cloud", messages=[{"role": "user", "content": "again"}]
            )
            assert r.headers["x-tiergate-deployment"] == "local"
        fetch(
            "POST",
            f"{gw2.base_url}/admin/emergency",
            body=b'{"on": true, "reason": "bill spike"}',
            headers={**AUTH, "Content-Type": "application/json"},
        )
        gw2.cli("emergency", "on", "--reason", "bill spike")

        def manual() -> list[dict]:
            return [h["body"] for h in hook.received if h["body"]["details"].get("source")]

        assert wait_until(lambda: len(manual()) == 2, timeout=10), hook.received
        time.sleep(1.5)  # a second budget alert, if one were coming, would be here by now
        assert len(budget_emergencies()) == 1, budget_emergencies()
        admin, cli = sorted(manual(), key=lambda e: e["details"]["source"])
        assert (admin["event"], admin["message"], admin["severity"]) == (cli["event"], cli["message"], cli["severity"])
        assert admin["event"] == "emergency_on"
        assert admin["message"] == "tiergate emergency local-only mode ON: bill spike"
        assert (admin["details"]["source"], cli["details"]["source"]) == ("admin", "cli")
    finally:
        hook.stop()


def raw_request(gw, headers: dict[str, bytes], model: str = "cloud") -> int:
    """One chat request with header values sent as raw bytes (no client library would send them)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    conn.putrequest("POST", "/v1/chat/completions")
    for name, value in {
        "Authorization": f"Bearer {MASTER_KEY}".encode(),
        "Content-Type": b"application/json",
        "Content-Length": str(len(body)).encode(),
        **headers,
    }.items():
        conn.putheader(name, value)
    conn.endheaders(body)
    status = conn.getresponse().status
    conn.close()
    return status


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_hostile_request_values_stop_no_accounting(standins, gateway, request, backend):
    """Bytes that are not UTF-8 in every identity header, and a NUL and 4 KB in the model name (PostgreSQL
    refuses NUL in text: one such row once stopped every later row), then ordinary traffic: all of it is recorded."""
    cloud = standins(name="cloud", models=["m"])
    cfg = config(cloud)
    if backend == "postgresql":
        cfg["ledger"] = request.getfixturevalue("pg_url")
    gw = gateway(cfg)
    bad = b"s\xff\xfe"
    status = raw_request(
        gw,
        {
            "X-Request-ID": b"r\xff",
            "X-Tiergate-Session": bad,
            "X-Tiergate-Agent": bad,
            "X-Tiergate-Task": bad,
            "X-Claude-Code-Session-Id": bad,
        },
    )
    assert status in (200, 400)  # served with the bytes cleaned, or refused at the edge: never a crash
    assert raw_request(gw, {"X-Tiergate-Session": b"nul"}, model="cloud\u0000" + "x" * 4096) == 404
    c = client(gw, session="after")
    for _ in range(12):
        c.chat.completions.create(model="cloud", messages=[{"role": "user", "content": "hi"}])
    assert wait_until(lambda: len(gw.ledger_rows("session = 'after'")) == 12, timeout=30), health(gw)["ledger"]
    (nul,) = gw.ledger_rows("session = 'nul'")
    assert nul["status"] == 404 and nul["requested_model"].startswith("cloud\ufffdxxx")
    assert len(nul["requested_model"]) == 256
    ledger = health(gw)["ledger"]
    assert ledger["ok"] and ledger["writer"]["alive"] and ledger["writer"]["quarantined"] == 0, ledger
    if status == 200:  # its row is there too, cleaned
        assert len(gw.ledger_rows("session LIKE 's%' AND session != 'after'")) == 1


def metrics_text(gw) -> str:
    return fetch("GET", f"{gw.base_url}/metrics", headers=AUTH)[2].decode()


def test_a_stuck_writer_shows_in_health_metrics_and_an_alert_then_catches_up(standins, gateway, tmp_path):
    cloud = standins(name="cloud", models=["m"])
    hook = Recorder()
    try:
        gw = gateway(config(cloud, alerts=[{"type": "webhook", "url": f"{hook.url}/hook"}]))
        c = client(gw, session="stuck")
        c.chat.completions.create(model="cloud", messages=[{"role": "user", "content": "hi"}])
        assert wait_until(lambda: len(gw.ledger_rows("session = 'stuck'")) == 1, timeout=30)
        blocker = sqlite3.connect(gw.ledger_path, timeout=30, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the writer cannot write while this is held (a disk that stalls it)
        try:
            for _ in range(5):
                c.chat.completions.create(model="cloud", messages=[{"role": "user", "content": "hi"}])
            assert wait_until(lambda: health(gw)["ledger"]["writer"]["behind"], timeout=60), health(gw)
            h = health(gw)
            assert h["status"] == "degraded" and h["ledger"]["writer"]["lag_s"] >= 10
            assert wait_until(lambda: "tiergate_ledger_writer_ok 0.0" in metrics_text(gw), timeout=30)
            assert "tiergate_ledger_writer_lag_seconds" in metrics_text(gw)
            assert wait_until(
                lambda: any(r["body"]["event"] == "ledger_writer_failing" for r in hook.received), timeout=30
            )
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert wait_until(lambda: len(gw.ledger_rows("session = 'stuck'")) == 6, timeout=90)  # nothing lost
        assert wait_until(lambda: health(gw)["status"] == "ok", timeout=30), health(gw)
        assert wait_until(lambda: "tiergate_ledger_writer_ok 1.0" in metrics_text(gw), timeout=30)
        alerts = [r["body"] for r in hook.received if r["body"]["event"] == "ledger_writer_failing"]
        assert alerts and all(a["details"]["problem"] == "behind" and "records waiting" in a["message"] for a in alerts)
    finally:
        hook.stop()


def test_admin_session_listing_is_paginated(standins, gateway):
    cloud = standins(name="cloud", models=["m"])
    gw = gateway(config(cloud))
    for i in range(25):
        client(gw, session=f"p{i:02d}").chat.completions.create(
            model="cloud", messages=[{"role": "user", "content": "hi"}]
        )

    def page(query: str) -> dict:
        status, _, body = fetch("GET", f"{gw.base_url}/admin/sessions?{query}", headers=AUTH)
        assert status == 200, body
        return json.loads(body)

    first = page("limit=10")
    assert (len(first["sessions"]), first["total"], first["next_offset"]) == (10, 25, 10)
    assert first["sessions"][0]["session"] == "p24"  # most recently seen first
    seen = [s["session"] for s in first["sessions"]]
    offset = first["next_offset"]
    while offset is not None:
        p = page(f"limit=10&offset={offset}")
        seen += [s["session"] for s in p["sessions"]]
        offset = p["next_offset"]
    assert sorted(seen) == [f"p{i:02d}" for i in range(25)]
    assert len(page("")["sessions"]) == 25  # the default page (100) holds them all
    status, _, body = fetch("GET", f"{gw.base_url}/admin/sessions?limit=abc", headers=AUTH)
    assert status == 400 and b"limit" in body
