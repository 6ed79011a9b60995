"""The dashboard in a real headless Chromium (Debian's chromium, driven by Playwright; no browser is downloaded).

Sign in, each page's numbers against what the ledger and the gateway's state hold after a scripted burst,
kill and revive a session from its page, the emergency switch, a live update arriving without a reload, and
a screenshot of each page (in the test's tmp dir, or in $TIERGATE_UI_SCREENSHOTS when set).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from dashboard_burst import chat, dashboard_config, run_burst
from procs import MASTER_KEY, http, require

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 20_000  # generous: a snapshot arrives about every 2 s


@pytest.fixture
def browser():
    require(CHROMIUM.exists(), f"{CHROMIUM} is missing: scripts/debian-packages.sh chromium=chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        require(False, f"playwright is not installed: {exc}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


def screenshots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("TIERGATE_UI_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def num(page, selector: str, attr: str = "data-value") -> float:
    return float(page.get_attribute(selector, attr))


def test_dashboard_pages_actions_and_live_updates(standins, gateway, browser, tmp_path):
    gw = gateway(dashboard_config(standins))
    run_burst(gw)
    rows = gw.ledger_rows("kind = 'request'")
    shots = screenshots(tmp_path)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # sign in: a wrong key is refused on the page, the master key opens the Overview
    page.goto(f"{gw.base_url}/ui/deployments")
    assert page.url.endswith("/ui/login")
    page.fill("#key", "sk-not-the-key")
    page.click("button[type=submit]")
    assert "invalid API key" in page.text_content("#error")
    page.screenshot(path=str(shots / "login.png"))
    errors.clear()  # the refused sign-in's 401 is logged by the browser as a failed load
    page.fill("#key", MASTER_KEY)
    page.click("button[type=submit]")
    page.wait_for_url(f"{gw.base_url}/ui")
    page.wait_for_function("() => document.body.dataset.updates", timeout=WAIT_MS)

    # Overview: today's spend, requests and the per-tier split are the ledger's
    cost = sum(r["cost_usd"] for r in rows)
    assert num(page, "[data-kpi=today_cost]") == pytest.approx(cost)
    assert num(page, "[data-kpi=requests_today]") == len(rows)
    tiers = Counter(f"tier {r['tier']}" for r in rows)
    for tier, n in tiers.items():
        assert num(page, f"#tiers tr[data-tier='{tier}'] [data-requests]", "data-requests") == n
    assert page.get_attribute("#budgets tr[data-budget=daily] [data-forecast]", "data-forecast") in (
        "lasts",
        "runs out",
    )
    assert page.locator("#chart-spend canvas").count() == 1  # uPlot drew, from the packaged copy
    page.screenshot(path=str(shots / "overview.png"), full_page=True)

    # a live update arrives without a reload: a marker set on this document survives it
    page.evaluate("() => { window.__sameDocument = true; }")
    assert chat(gw, "triage-bot", "classification", "sess-triage", "one more") == 200
    page.wait_for_function(
        "(n) => Number(document.querySelector('[data-kpi=requests_today]').dataset.value) === n",
        arg=len(rows) + 1,
        timeout=WAIT_MS,
    )
    assert page.evaluate("() => window.__sameDocument") is True

    # the emergency switch: on (the admin route agrees, the header shows it), then off
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    page.fill("#emergency-reason", "browser drill")
    page.click("#emergency-switch")
    page.wait_for_selector("#emergency .state[data-on=true]", timeout=WAIT_MS)
    assert json.loads(http("GET", f"{gw.base_url}/admin/emergency", headers=admin)[2]) == {
        "on": True,
        "reason": "browser drill",
    }
    assert page.is_visible("#emergency-pill")
    page.click("#emergency-switch")
    page.wait_for_selector("#emergency .state[data-on=false]", timeout=WAIT_MS)
    assert json.loads(http("GET", f"{gw.base_url}/admin/emergency", headers=admin)[2])["on"] is False

    # Sessions: every session with its spend; kill one from the page, the gateway refuses it; revive it
    page.goto(f"{gw.base_url}/ui/sessions")
    page.wait_for_selector("#sessions tr[data-session=sess-coder]")
    for sid in {r["session"] for r in rows}:
        want = sum(r["cost_usd"] for r in rows if r["session"] == sid)
        assert num(page, f"#sessions tr[data-session='{sid}'] [data-cost]", "data-cost") == pytest.approx(want)
    page.click("button[data-sort=spend]")
    page.wait_for_selector("button[data-sort=spend]:not(.secondary)")
    first = page.get_attribute("#sessions tbody tr >> nth=0", "data-session")
    assert first == max(
        {r["session"] for r in rows}, key=lambda s: sum(r["cost_usd"] for r in rows if r["session"] == s)
    )
    page.click("#sessions tr[data-session=sess-coder] button[data-action=kill]")
    page.wait_for_selector("#sessions tr[data-session=sess-coder][data-killed=true]", timeout=WAIT_MS)
    assert chat(gw, "coder", "coding", "sess-coder") == 403
    page.screenshot(path=str(shots / "sessions.png"), full_page=True)
    page.click("#sessions tr[data-session=sess-coder] button[data-action=revive]")
    # revived, it starts afresh: gone from the sessions held until its next request, then back and live
    page.wait_for_selector("#sessions tr[data-session=sess-coder]", state="detached", timeout=WAIT_MS)
    assert chat(gw, "coder", "coding", "sess-coder") == 200
    page.wait_for_selector("#sessions tr[data-session=sess-coder][data-killed=false]", timeout=WAIT_MS)

    # Deployments: the last hour's requests per deployment are the ledger's
    served = "kind = 'request' AND deployment IS NOT NULL"  # the killed session's refusal reached none
    rows = gw.rows_when(served, len(rows) + 2)  # the burst, the live update's request, the revived one's
    page.goto(f"{gw.base_url}/ui/deployments")
    by_dep = Counter(r["deployment"] for r in rows)
    for dep, n in by_dep.items():
        sel = f"#deployments tr[data-deployment='{dep}'] [data-requests]"
        page.wait_for_function(
            "([s, n]) => document.querySelector(s) && Number(document.querySelector(s).dataset.requests) === n",
            arg=[sel, n],
            timeout=WAIT_MS,
        )
        assert (
            page.get_attribute(f"#deployments tr[data-deployment='{dep}'] [data-breaker]", "data-breaker") == "closed"
        )
    page.screenshot(path=str(shots / "deployments.png"), full_page=True)

    # Local models: the manager's model, its state and memory against the budget
    page.goto(f"{gw.base_url}/ui/models")
    page.wait_for_selector("#models tr[data-model=box-llama][data-state=ready]", timeout=WAIT_MS)
    assert num(page, "[data-kpi=memory]") == 1024
    page.screenshot(path=str(shots / "models.png"), full_page=True)

    # Requests: the newest first with the ledger's cost; one opens its routing explanation; a filter narrows
    page.goto(f"{gw.base_url}/ui/requests")
    page.wait_for_selector("#requests tbody tr[data-request]")
    newest = max(rows, key=lambda r: r["ts"])
    assert page.get_attribute("#requests tbody tr >> nth=0", "data-request") == newest["request_id"]
    page.click(f"#requests tr[data-request='{newest['request_id']}']")
    page.wait_for_selector("#request-reason")
    assert page.text_content("#request-reason") == newest["reason"]
    page.screenshot(path=str(shots / "requests.png"), full_page=True)
    page.fill("#request-filter input[name=agent]", "planner")
    page.click("#request-filter button[type=submit]")
    planner = sum(1 for r in rows if r["agent"] == "planner")
    page.wait_for_function(
        "(n) => document.querySelectorAll('#requests tbody tr[data-request]').length === n",
        arg=planner,
        timeout=WAIT_MS,
    )

    # Alerts: the kill and the two switches just made, newest first
    page.goto(f"{gw.base_url}/ui/alerts")
    page.wait_for_selector("#alerts tr[data-event]")
    events = page.eval_on_selector_all("#alerts tr[data-event]", "(rows) => rows.map((r) => r.dataset.event)")
    assert events[:3] == ["session_killed", "emergency_off", "emergency_on"]
    page.screenshot(path=str(shots / "alerts.png"), full_page=True)

    # signing out ends the session: the pages send the browser back to the sign-in page
    page.click("#logout")
    page.wait_for_url(f"{gw.base_url}/ui/login")
    page.goto(f"{gw.base_url}/ui/overview")
    assert page.url.endswith("/ui/login")
    assert errors == [], errors  # no script error and no CSP violation on any page
    assert {p.name for p in shots.iterdir()} >= {f"{n}.png" for n in ("overview", "sessions", "requests", "alerts")}
