"""The dashboard over real HTTP: sign-in and its cookie, CSRF, CSP, and every JSON endpoint's figures against
what the ledger holds after a scripted burst through the gateway and stand-in upstreams."""

from __future__ import annotations

import http.client as httpc
import json
import sqlite3
import time
import urllib.error
import urllib.parse
from collections import Counter, defaultdict

import pytest

from dashboard_burst import BURST, Browserless, chat, dashboard_config, run_burst, wait_for
from procs import MASTER_KEY, Recorder, http


@pytest.fixture
def dash(standins, gateway):
    gw = gateway(dashboard_config(standins))
    return gw


def raw(gw, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One request, redirects not followed: (status, headers, body)."""
    conn = httpc.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def sign_in_raw(gw, body: bytes, content_type: str = "application/x-www-form-urlencoded", **headers):
    return raw(gw, "POST", "/ui/login", body, {"Content-Type": content_type, **headers})


def test_sign_in_cookie_csp_and_nothing_without_a_session(dash):
    gw = dash
    agent_key = gw.cli("keys", "create", "--name", "bot", "--agent", "bot").stdout.strip()
    # no page and no data without a session
    status, headers, _ = raw(gw, "GET", "/ui/sessions")
    assert status == 303 and headers["Location"] == "/ui/login"
    for path in ("/ui/api/overview", "/ui/api/sessions", "/ui/api/requests", "/ui/api/live", "/ui/api/alerts"):
        status, headers, body = http("GET", f"{gw.base_url}{path}")
        assert status == 401, path
        assert "script-src 'self'" in headers["Content-Security-Policy"], path
    # the sign-in page: a strict CSP, no inline script
    status, headers, page = http("GET", f"{gw.base_url}/ui/login")
    assert status == 200 and "<script>" not in page.decode()
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp

    # a wrong key: 401 and the sign-in page says so; an agent's key: 403; neither sets a cookie
    status, headers, page = sign_in_raw(gw, b"key=sk-wrong-key")
    assert status == 401 and "invalid API key" in page.decode() and "Set-Cookie" not in headers
    status, _, body = sign_in_raw(gw, json.dumps({"key": "sk-wrong"}).encode(), "application/json")
    assert status == 401 and json.loads(body)["error"]["message"] == "invalid API key"
    agent_form = urllib.parse.urlencode({"key": agent_key}).encode()
    # the gateway reads new keys within about a second
    status, headers, page = wait_for(lambda: (r := sign_in_raw(gw, agent_form))[0] != 401 and r)
    assert status == 403 and "master key" in page.decode() and "Set-Cookie" not in headers
    status, _, body = sign_in_raw(gw, b"")
    assert status == 400 and b"key" in body
    # a form posted from another site is refused before the key is looked at
    status, _, _ = sign_in_raw(gw, f"key={MASTER_KEY}".encode(), Origin="http://evil.example")
    assert status == 403

    # the master key: a session cookie that is HttpOnly, SameSite=Strict, scoped to /ui, and not the key
    status, headers, _ = sign_in_raw(gw, f"key={MASTER_KEY}".encode(), Origin=gw.base_url)
    assert status == 303 and headers["Location"] == "/ui"
    cookie = headers["Set-Cookie"]
    attrs = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/ui" in attrs
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert MASTER_KEY not in cookie and len(value) >= 40
    status, headers, page = http("GET", f"{gw.base_url}/ui/overview", headers={"Cookie": f"tiergate_ui={value}"})
    assert status == 200 and 'name="csrf-token"' in page.decode()
    assert headers["Content-Security-Policy"] == csp and headers["X-Frame-Options"] == "DENY"
    assert "<script src=" in page.decode() and "<script>" not in page.decode()
    # a forged cookie is no session
    status, _, _ = http("GET", f"{gw.base_url}/ui/api/overview", headers={"Cookie": "tiergate_ui=forged"})
    assert status == 401


def test_actions_need_the_csrf_token_and_reuse_the_admin_switches(standins, gateway):
    hook = Recorder()
    config = dashboard_config(standins)
    config["alerts"] = [{"type": "webhook", "url": f"{hook.url}/hook"}]
    gw = gateway(config)
    ui = Browserless(gw)
    ui.sign_in()
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    status, body = ui.post("/ui/api/emergency", {"on": True}, csrf=False)
    assert status == 403 and "CSRF" in body["error"]["message"]
    ui_csrf, ui.csrf = ui.csrf, "wrong-token"
    assert ui.post("/ui/api/emergency", {"on": True})[0] == 403
    ui.csrf = ui_csrf
    assert json.loads(http("GET", f"{gw.base_url}/admin/emergency", headers=admin)[2])["on"] is False

    status, body = ui.post("/ui/api/emergency", {"on": True, "reason": "drill"})
    assert status == 200 and body == {"on": True, "reason": "drill"}
    assert json.loads(http("GET", f"{gw.base_url}/admin/emergency", headers=admin)[2]) == {
        "on": True,
        "reason": "drill",
    }
    assert ui.post("/ui/api/emergency", {"on": "yes"})[0] == 400
    assert ui.get("/ui/api/overview")["emergency"] == "drill"
    alerts = ui.get("/ui/api/alerts")["alerts"]
    assert alerts[0]["event"] == "emergency_on" and "drill" in alerts[0]["message"]
    # what was sent where: the webhook received it, and the Alerts page says so
    sink = f"webhook 127.0.0.1:{hook.port}"
    assert wait_for(lambda: ui.get("/ui/api/alerts")["alerts"][0]["deliveries"] == {sink: "sent"})
    assert hook.received[0]["body"]["event"] == "emergency_on"
    assert ui.post("/ui/api/emergency", {"on": False}) == (200, {"on": False, "reason": None})
    assert ui.get("/ui/api/alerts")["alerts"][0]["event"] == "emergency_off"

    # kill and revive a session: the gateway refuses its requests, then serves them again
    assert chat(gw, "coder", "coding", "sess-x") == 200
    assert wait_for(lambda: ui.get("/ui/api/sessions")["total"] >= 1)
    status, body = ui.post("/ui/api/sessions/sess-x/kill", {}, csrf=False)
    assert status == 403
    status, body = ui.post("/ui/api/sessions/sess-x/kill", {})
    assert status == 200 and body["killed"] == ["sess-x"]
    assert chat(gw, "coder", "coding", "sess-x") == 403
    row = next(s for s in ui.get("/ui/api/sessions")["sessions"] if s["session"] == "sess-x")
    assert row["killed_reason"] == "killed from the dashboard"
    assert ui.post("/ui/api/sessions/sess-x/revive", {}) == (200, {"session": "sess-x", "revived": True})
    assert chat(gw, "coder", "coding", "sess-x") == 200
    assert ui.post("/ui/api/sessions/never-seen/kill", {})[0] == 404
    # a signed-out session's token no longer acts
    assert ui.post("/ui/logout", {})[0] == 200
    assert ui.post("/ui/api/emergency", {"on": True})[0] == 401


def _model_events(gw) -> list[tuple[str, str]]:
    sql = "SELECT model, event FROM local_model_events ORDER BY ts DESC LIMIT 20"
    if gw.ledger_url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(gw.ledger_url, autocommit=True, connect_timeout=5) as pg:
            return [tuple(r) for r in pg.execute(sql).fetchall()]
    with sqlite3.connect(gw.ledger_path) as db:
        return [tuple(r) for r in db.execute(sql).fetchall()]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_each_endpoint_shows_what_the_ledger_holds_after_a_burst(standins, gateway, backend, request):
    config = dashboard_config(standins)
    if backend == "postgres":  # the same reads on the ledger replicas share (fails under CI=true if it is down)
        config["ledger"] = request.getfixturevalue("pg_url")
    gw = gateway(config)
    n = run_burst(gw)
    assert chat(gw, "coder", "coding", "sess-coder", "a") == 200  # one more, so the list is not the burst's order
    rows = gw.rows_when("kind = 'request'", n + 1)
    ui = Browserless(gw)
    ui.sign_in()

    over = ui.get("/ui/api/overview")
    cost = sum(r["cost_usd"] for r in rows)
    assert over["today"]["requests"] == len(rows) and over["today"]["cost_usd"] == pytest.approx(cost)
    assert over["month"]["cost_usd"] == pytest.approx(cost)
    per_tier = Counter(f"tier {r['tier']}" for r in rows)
    assert {k: v["requests"] for k, v in over["tiers"].items()} == dict(per_tier)
    tier_cost = defaultdict(float)
    for r in rows:
        tier_cost[f"tier {r['tier']}"] += r["cost_usd"]
    for k, v in over["tiers"].items():
        assert v["cost_usd"] == pytest.approx(tier_cost[k])
        assert v["request_share"] == pytest.approx(per_tier[k] / len(rows))
    assert over["today"]["saved_vs_frontier_usd"] > 0  # tier 0 and 1 served most of it
    assert over["rates"]["requests"] == len(rows) and over["rates"]["errors"] == 0
    assert over["overhead"]["requests"] == len(rows) and over["overhead"]["mean_ms"] > 0  # /metrics' histogram
    assert sum(sum(v) for v in over["series"]["requests_by_tier"].values()) == len(rows)
    budgets = {b["budget"]: b for b in over["budgets"]}
    assert set(budgets) == {"daily", "monthly"}
    assert budgets["daily"]["spent_usd"] == pytest.approx(cost, abs=1e-6)
    assert budgets["daily"]["forecast"]["status"] in ("lasts", "runs out")

    deployments = {d["name"]: d for d in ui.get("/ui/api/deployments")["deployments"]}
    by_dep = Counter(r["deployment"] for r in rows)
    assert {k: d["hour"]["requests"] for k, d in deployments.items() if d["hour"]["requests"]} == dict(by_dep)
    assert all(d["breaker"] == "closed" and d["available"] for d in deployments.values())
    assert deployments["frontier"]["today_cost_usd"] == pytest.approx(
        sum(r["cost_usd"] for r in rows if r["deployment"] == "frontier")
    )

    models = ui.get("/ui/api/models")
    assert (models["managed"], models["budget_mb"], models["used_mb"]) == (True, 4096, 1024)
    [box] = models["models"]
    assert (box["name"], box["state"], box["attached"], box["memory_mb"]) == ("box-llama", "ready", True, 1024)
    assert [(e["model"], e["event"]) for e in models["events"]] == _model_events(gw)

    recent = ui.get("/ui/api/requests?limit=5")["requests"]
    newest = sorted(rows, key=lambda r: r["ts"], reverse=True)[:5]
    assert [r["request_id"] for r in recent] == [r["request_id"] for r in newest]
    assert recent[0]["session"] == "sess-coder" and recent[0]["reason"] == newest[0]["reason"]
    for agent, _, session, _count in BURST:
        got = ui.get(f"/ui/api/requests?agent={agent}")["requests"]
        assert len(got) == sum(1 for r in rows if r["agent"] == agent) and {r["session"] for r in got} == {session}
    assert ui.get("/ui/api/requests?status=error")["requests"] == []
    assert len(ui.get("/ui/api/requests?task=reasoning&status=200")["requests"]) == 2
    one = ui.get(f"/ui/api/requests/{recent[0]['request_id']}")
    assert one["request"]["reason"] == newest[0]["reason"] and one["attempts"] == []

    sessions = ui.get("/ui/api/sessions?sort=spend")
    spend = defaultdict(float)
    for r in rows:
        spend[r["session"]] += r["cost_usd"]
    assert [s["session"] for s in sessions["sessions"]] == sorted(spend, key=lambda s: -spend[s])
    for s in sessions["sessions"]:
        assert s["cost_usd"] == pytest.approx(spend[s["session"]])
        assert s["requests"] == sum(1 for r in rows if r["session"] == s["session"])
    page = ui.get("/ui/api/sessions?sort=age&limit=1&offset=1")
    assert page["total"] == 3 and page["next_offset"] == 2 and len(page["sessions"]) == 1

    # bad input: a clear 400 naming the parameter
    for path in (
        "/ui/api/sessions?sort=bogus",
        "/ui/api/sessions?limit=9999",
        "/ui/api/requests?status=maybe",
        "/ui/api/requests?before=soon",
        f"/ui/api/requests?agent={'x' * 300}",
    ):
        status, _, body = http("GET", f"{gw.base_url}{path}", headers={"Cookie": _cookie(ui)})
        assert status == 400 and json.loads(body)["error"]["param"], path
    status, _, _ = http("GET", f"{gw.base_url}/ui/api/requests/unknown-id", headers={"Cookie": _cookie(ui)})
    assert status == 404


def _cookie(ui: Browserless) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in ui.jar)


def _open_stream(gw, cookie: str) -> tuple[httpc.HTTPConnection, httpc.HTTPResponse]:
    conn = httpc.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    conn.request("GET", "/ui/api/live", headers={"Cookie": cookie, "Accept": "text/event-stream"})
    return conn, conn.getresponse()


def _next_snapshot(resp: httpc.HTTPResponse) -> dict:
    data = None
    while True:
        line = resp.readline().decode()
        if line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "\n" and data is not None:
            return data


def test_live_stream_pushes_fresh_snapshots_to_a_bounded_number_of_pages(dash):
    gw = dash
    ui = Browserless(gw)
    ui.sign_in()
    cookie = _cookie(ui)
    conn, resp = _open_stream(gw, cookie)
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    first = _next_snapshot(resp)
    assert set(first) >= {"overview", "deployments", "models", "alerts", "ts"}
    before = first["overview"]["today"]["requests"]
    assert chat(gw, "triage-bot", "classification", "sess-live") == 200
    gw.rows_when("kind = 'request'", before + 1)
    snap = first
    for _ in range(30):  # a snapshot about every 2 s: the new request shows within a few
        snap = _next_snapshot(resp)
        if snap["overview"]["today"]["requests"] == before + 1:
            break
    assert snap["overview"]["today"]["requests"] == before + 1 and snap["ts"] > first["ts"]

    others = [_open_stream(gw, cookie) for _ in range(15)]  # 16 open in all: the bound
    assert all(r.status == 200 for _, r in others)
    extra_conn, extra = _open_stream(gw, cookie)
    assert extra.status == 503
    extra_conn.close()
    for c, _ in [*others, (conn, resp)]:
        c.close()

    # the slots come back once the pages leave (each stream notices at its next write)
    def slot_free() -> bool:
        c, r = _open_stream(gw, cookie)
        c.close()
        return r.status == 200

    assert wait_for(slot_free, within_s=30, every_s=0.5)

    # an open page never holds the drain on SIGTERM (server.drain_timeout_s, 25 s by default): its stream ends
    conn, resp = _open_stream(gw, cookie)
    _next_snapshot(resp)
    started = time.monotonic()
    assert gw.stop(timeout=60) == 0
    assert time.monotonic() - started < 15, "the live stream held the drain"
    conn.close()


def test_admin_keys_open_the_dashboard_and_admin_routes_until_revoked(dash):
    """An operator's key (`tiergate keys create --admin`) is taken where the master key is, and stops being
    taken once revoked; a key named like the master key, made before such names were refused, is no key."""
    gw = dash
    res = gw.cli("keys", "create", "--name", "ops", "--admin")
    ops = res.stdout.strip()
    assert "(admin)" in res.stderr
    assert gw.cli("keys", "create", "--name", "x", "--admin", "--agent", "bot", check=False).returncode != 0
    listed = {k["name"]: k["admin"] for k in json.loads(gw.cli("keys", "list", "--json").stdout)}
    assert listed == {"ops": True}
    emergency = f"{gw.base_url}/admin/emergency"
    status, _, _ = wait_for(
        lambda: (r := http("GET", emergency, headers={"Authorization": f"Bearer {ops}"}))[0] != 401 and r
    )
    assert status == 200
    ui = Browserless(gw)
    ui.sign_in(ops)
    assert ui.get("/ui/api/overview")["budgets"] is not None
    assert ui.post("/ui/api/emergency", {"on": True})[0] == 200
    assert http("GET", emergency, headers={"Authorization": f"Bearer {MASTER_KEY}"})[2]  # still answered
    gw.cli("keys", "revoke", "ops")
    status, _, _ = wait_for(
        lambda: (r := http("GET", emergency, headers={"Authorization": f"Bearer {ops}"}))[0] == 401 and r
    )
    assert status == 401
    with pytest.raises(urllib.error.HTTPError) as err:
        ui.get("/ui/api/overview")  # its dashboard session ended with it
    assert err.value.code == 401
    # a virtual key named "master" in an older ledger: not accepted, so it cannot pass for the master key
    conn = sqlite3.connect(gw.ledger_path)
    from tiergate.ledger.records import hash_key

    with conn:
        conn.execute(
            "INSERT INTO keys (name, key_hash, prefix, agent, created) VALUES ('master', ?, 'tg-old', NULL, 0)",
            (hash_key("tg-old-master-key"),),
        )
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'keys_version'")
    conn.close()
    probe = gw.cli("keys", "create", "--name", "probe").stdout.strip()  # made after: once it works, both are read
    ok = wait_for(
        lambda: http("GET", f"{gw.base_url}/v1/models", headers={"Authorization": f"Bearer {probe}"})[0] == 200
    )
    assert ok
    status, _, _ = http("GET", emergency, headers={"Authorization": "Bearer tg-old-master-key"})
    assert status == 401
