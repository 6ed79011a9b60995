"""A gateway over three stand-in tiers with budgets, and a scripted burst of traffic: what the dashboard tests see.

Used by tests/integration/test_dashboard.py (JSON over HTTP) and tests/e2e/test_dashboard_browser.py (a real
Chromium); ``python tests/dashboard_burst.py`` starts the same thing by hand and prints the dashboard's address.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from typing import Any

from procs import MASTER_KEY, Gateway, http, tiered_config

# (agent, task, session, how many): tier 0 serves classification, tier 1 coding, tier 3 reasoning
BURST = (
    ("triage-bot", "classification", "sess-triage", 5),
    ("coder", "coding", "sess-coder", 3),
    ("planner", "reasoning", "sess-planner", 2),
)
BUDGETS = [
    {"name": "daily", "scope": "global", "window": "day", "limit_usd": 5.0, "action": "reject"},
    {"name": "monthly", "scope": "global", "window": "month", "limit_usd": 100.0, "action": "reject"},
]


def dashboard_config(standins: Any) -> dict[str, Any]:
    local = standins("openai", "local", ["llama-8b"])
    cheap = standins("openai", "cheap", ["gpt-4o-mini"])
    frontier = standins("openai", "frontier", ["gpt-4o"])
    config = tiered_config(local, cheap, frontier)
    config["budgets"] = BUDGETS
    # a server tiergate did not start, managed by it all the same: the Local models page's row
    config["local_models"] = {
        "budget_mb": 4096,
        "models": [{"name": "box-llama", "attach": f"{local.base_url}/v1", "memory_mb": 1024}],
    }
    return config


def chat(gw: Gateway, agent: str, task: str, session: str, text: str = "hello there") -> int:
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]}).encode()
    status, _, _ = http(
        "POST",
        f"{gw.base_url}/v1/chat/completions",
        body=body,
        headers={
            "Authorization": f"Bearer {MASTER_KEY}",
            "Content-Type": "application/json",
            "X-Tiergate-Agent": agent,
            "X-Tiergate-Task": task,
            "X-Tiergate-Session": session,
        },
    )
    return status


def run_burst(gw: Gateway) -> int:
    """Send the burst; return how many requests it made once the ledger holds them all."""
    n = 0
    for agent, task, session, count in BURST:
        for i in range(count):
            assert chat(gw, agent, task, session, f"request {i} of {agent}") == 200
            n += 1
    rows = gw.rows_when("kind = 'request'", n)
    assert len(rows) >= n, f"the ledger holds {len(rows)} of {n} requests"
    return n


class Browserless:
    """A signed-in dashboard client over plain HTTP: a cookie jar, and the CSRF token from the page."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf = ""

    def sign_in(self, key: str = MASTER_KEY) -> None:
        data = urllib.parse.urlencode({"key": key}).encode()
        with self.opener.open(urllib.request.Request(f"{self.gw.base_url}/ui/login", data=data), timeout=10) as r:
            page = r.read().decode()
        marker = 'name="csrf-token" content="'
        self.csrf = page.split(marker, 1)[1].split('"', 1)[0]

    def get(self, path: str) -> Any:
        with self.opener.open(f"{self.gw.base_url}{path}", timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: Any, *, csrf: bool = True) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", **({"X-CSRF-Token": self.csrf} if csrf else {})}
        req = urllib.request.Request(f"{self.gw.base_url}{path}", data=json.dumps(body).encode(), headers=headers)
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def wait_for(predicate: Any, within_s: float = 30.0, every_s: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy, at most ``within_s``; its last value."""
    deadline = time.monotonic() + within_s
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(every_s)
        value = predicate()
    return value


if __name__ == "__main__":  # by hand: a dashboard with traffic to look at
    import sys
    import tempfile
    from pathlib import Path

    from procs import CHEAP_KEY, start_gateway, start_standin

    started: list[Any] = []

    def make(protocol: str, name: str, models: list[str]) -> Any:
        s = start_standin(protocol, name, models)
        started.append(s)
        return s

    tmp = Path(tempfile.mkdtemp(prefix="tiergate-ui-"))
    cfg = dashboard_config(make)
    if len(sys.argv) > 1:
        cfg.setdefault("server", {})["port"] = int(sys.argv[1])
    gw = None
    try:
        gw = start_gateway(tmp, cfg, env_extra={"CHEAP_KEY": CHEAP_KEY})
        run_burst(gw)
        print(f"dashboard: {gw.base_url}/ui  key: {MASTER_KEY}", flush=True)
        while True:
            time.sleep(5)
            chat(gw, "triage-bot", "classification", "sess-triage")
    except KeyboardInterrupt:
        pass
    finally:
        if gw is not None:
            gw.stop()
        for s in started:
            s.stop()
