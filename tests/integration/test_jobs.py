"""Scheduled jobs against the real gateway process: routed like any request, delivered to local stand-ins of
Telegram, Slack (webhook and chat.postMessage), a webhook, a real SMTP server (aiosmtpd) and a file, retried
on a failed delivery, recorded, listed, paused, and a daily digest by e-mail."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from delivery_standins import (
    SLACK_BOT_TOKEN,
    SLACK_CHANNEL,
    SLACK_HOOK,
    TELEGRAM_CHAT,
    TELEGRAM_TOKEN,
    ChatStandins,
    Running,
    start_smtp,
)
from procs import CHEAP_KEY, tiered_config, wait_until

SMTP_USER, SMTP_PASSWORD = "tiergate", "smtp-secret-pw-42"
HOOK_SECRET = "hook-header-secret-9"


@pytest.fixture
def chat():
    standins = ChatStandins(inputs={"/alerts.json": [{"title": "disk full on db-1"}, {"title": "cert expires"}]})
    running = Running(standins)
    yield standins
    running.stop()


@pytest.fixture
def smtp():
    controller, handler, port = start_smtp(SMTP_USER, SMTP_PASSWORD)
    yield handler, port
    controller.stop()


def job_runs(ledger: Path, where: str = "1=1") -> list[dict]:
    conn = sqlite3.connect(ledger)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM job_runs WHERE {where} ORDER BY requested")]
    finally:
        conn.close()


def jobs_config(local, cheap, frontier, chat: ChatStandins, smtp_port: int, out: Path) -> dict:
    cfg = tiered_config(local, cheap, frontier)
    (out / "notes.txt").write_text("db-1 was migrated yesterday")
    cfg["alerts"] = [{"type": "telegram", "bot_token": "env:TG_TOKEN", "chat_id": TELEGRAM_CHAT, "api_base": chat.url}]
    cfg["sinks"] = {
        "slack": {"type": "slack", "url": "env:SLACK_HOOK_URL"},
        "slack-bot": {
            "type": "slack",
            "bot_token": "env:SLACK_BOT",
            "channel": SLACK_CHANNEL,
            "api_base": chat.url + "/api",
        },
        "hook": {"type": "webhook", "url": f"{chat.url}/hook", "headers": {"X-Auth": "env:HOOK_SECRET"}},
        "mail": {
            "type": "email",
            "host": "127.0.0.1",
            "port": smtp_port,
            "from": "tiergate@example.test",
            "to": ["ops@example.test"],
            "username": SMTP_USER,
            "password": "env:SMTP_PASSWORD",
            "tls": "none",
        },
        "box": {"type": "file", "path": str(out / "briefs")},
    }
    cfg["scheduler"] = {"delivery_backoff": "0.2s", "poll": "0.5s"}
    cfg["jobs"] = [
        {
            "name": "brief",
            "schedule": "0 0 1 1 *",  # once a year: this test runs it by hand
            "task": "reasoning",  # tasks.reasoning is tier 3: the frontier, like any request with this task
            "prompt": "Summarise: {% for a in inputs.alerts %}{{ a.title }}; {% endfor %}notes: {{ inputs.notes }}",
            "inputs": {"alerts": {"url": f"{chat.url}/alerts.json"}, "notes": {"file": str(out / "notes.txt")}},
            "deliver": ["telegram", "slack", "slack-bot", "hook", "mail", "box"],
            "retries": 1,
            "retry_backoff": "0.2s",
        },
        {"name": "tick", "schedule": "* * * * * */2", "prompt": "tick", "deliver": ["box"], "overlap": "allow"},
        {"name": "digest", "schedule": "0 8 * * *", "report": {"period": "today"}, "deliver": ["mail", "box"]},
    ]
    return cfg


def env(chat: ChatStandins) -> dict[str, str]:
    return {
        "CHEAP_KEY": CHEAP_KEY,
        "TG_TOKEN": TELEGRAM_TOKEN,
        "SLACK_HOOK_URL": chat.url + SLACK_HOOK,
        "SLACK_BOT": SLACK_BOT_TOKEN,
        "HOOK_SECRET": HOOK_SECRET,
        "SMTP_PASSWORD": SMTP_PASSWORD,
    }


def test_a_job_is_routed_delivered_everywhere_retried_recorded_paused_and_reported(
    standins, gateway, tmp_path, chat, smtp
):
    mail, smtp_port = smtp
    local = standins(name="local", models=["llama-8b"])
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    frontier = standins(name="frontier", models=["gpt-4o"])
    cfg = jobs_config(local, cheap, frontier, chat, smtp_port, tmp_path)
    chat.fail("/hook", 500)  # the webhook fails once: retried
    mail.refuse = 1  # the SMTP server says 451 once: retried
    gw = gateway(cfg, env_extra=env(chat))

    res = gw.cli("jobs", "run", "brief", "--timeout", "120")
    assert " ok " in res.stdout, res.stdout

    # the run record
    (run,) = job_runs(gw.ledger_path, "job = 'brief'")
    assert (run["status"], run["trigger"], run["deployment"]) == ("ok", "manual", "frontier")
    assert run["session"] == f"job:brief:{run['run_id']}"
    assert json.loads(run["delivered"]) == {s: "ok" for s in ("telegram", "slack", "slack-bot", "hook", "mail", "box")}

    # routed like any request: one usage row with the job's attribution and session, billed at the frontier's price
    (row,) = gw.ledger_rows(f"session = '{run['session']}'")
    assert (row["key_name"], row["agent"], row["task"], row["deployment"]) == ("jobs", "brief", "reasoning", "frontier")
    assert row["cost_usd"] > 0 and row["cost_usd"] == pytest.approx(run["cost_usd"])
    prompts = [r["body"]["messages"][-1]["content"] for r in frontier.requests() if r["path"] == "/v1/chat/completions"]
    assert prompts == ["Summarise: disk full on db-1; cert expires; notes: db-1 was migrated yesterday"]
    answer = run["output"]
    assert answer.startswith("[frontier]")

    # each sink got the answer in its own shape
    (tg,) = chat.at(f"/bot{TELEGRAM_TOKEN}/sendMessage")
    assert tg.json()["chat_id"] == TELEGRAM_CHAT and tg.json()["text"] == f"brief\n\n{answer}"
    (hook_msg,) = chat.at(SLACK_HOOK)
    assert hook_msg.json() == {"text": f"*brief*\n{answer}"}
    (bot,) = chat.at("/api/chat.postMessage")
    assert bot.headers["Authorization"] == f"Bearer {SLACK_BOT_TOKEN}"
    assert bot.json() == {"channel": SLACK_CHANNEL, "text": f"*brief*\n{answer}"}
    first, second = chat.at("/hook")
    assert (first.status, second.status) == (500, 200)
    assert second.headers["X-Auth"] == HOOK_SECRET
    payload = second.json()
    assert (payload["job"], payload["run_id"], payload["status"], payload["text"]) == (
        "brief",
        run["run_id"],
        "ok",
        answer,
    )
    assert (payload["deployment"], payload["format"]) == ("frontier", "markdown")
    (sender, rcpts, msg) = mail.messages[0]
    assert (sender, rcpts, msg["Subject"]) == ("tiergate@example.test", ["ops@example.test"], "[tiergate] brief")
    assert msg.get_body(("plain",)).get_content().strip() == answer
    assert "<pre" in msg.get_body(("html",)).get_content()
    (brief_file,) = (tmp_path / "briefs").glob("brief-*.md")
    assert brief_file.read_text() == f"# brief\n\n{answer}\n"

    # a job on a short schedule runs by itself; paused, it stops; its runs are in the history
    assert wait_until(lambda: len(job_runs(gw.ledger_path, "job = 'tick' AND status = 'ok'")) >= 2, timeout=30)
    gw.cli("jobs", "pause", "tick")
    wait_until(lambda: False, timeout=2)  # a poll or two: every tick reads the flag
    before = len(job_runs(gw.ledger_path, "job = 'tick'"))
    wait_until(lambda: False, timeout=5)
    assert len(job_runs(gw.ledger_path, "job = 'tick'")) == before
    listing = json.loads(gw.cli("jobs", "list", "--json").stdout)
    assert {j["name"]: j["paused"] for j in listing} == {"brief": False, "tick": True, "digest": False}
    gw.cli("jobs", "resume", "tick")
    assert wait_until(lambda: len(job_runs(gw.ledger_path, "job = 'tick'")) > before, timeout=30)
    history = gw.cli("jobs", "history", "brief").stdout
    assert run["run_id"] in history and "frontier" in history

    # the daily digest, by e-mail in HTML and to a file in Markdown
    res = gw.cli("jobs", "run", "digest", "--timeout", "120")
    assert " ok " in res.stdout, res.stdout
    digest = mail.messages[-1][2]
    assert digest["Subject"].startswith("[tiergate] tiergate digest for ")
    html = digest.get_body(("html",)).get_content()
    assert "<h3>By agent</h3>" in html and "<td>brief</td>" in html
    md = sorted((tmp_path / "briefs").glob("digest-*.md"))[-1].read_text()
    assert "**Spend**" in md and "- brief: $" in md and "**Saved**" in md

    # no secret reached the log
    gw.stop()
    log = "\n".join(gw.log)
    for secret in (TELEGRAM_TOKEN, SLACK_BOT_TOKEN, SLACK_HOOK, SMTP_PASSWORD, HOOK_SECRET):
        assert secret not in log


def test_admin_api_budgets_and_timeouts_apply_to_jobs(standins, gateway, tmp_path):
    from procs import MASTER_KEY, http

    local = standins(name="local", models=["llama-8b"])
    frontier = standins(name="frontier", models=["gpt-4o"])
    cfg = tiered_config(local, None, frontier)
    cfg["budgets"] = [{"scope": "agent", "match": "capped", "window": "day", "max_calls": 1, "action": "reject"}]
    cfg["scheduler"] = {"poll": "0.5s"}
    yearly = "0 0 1 1 *"
    cfg["jobs"] = [
        {"name": "capped", "schedule": yearly, "prompt": "count me", "retries": 0},
        {
            "name": "hang",
            "schedule": yearly,
            "prompt": "hang",
            "model": "frontier",
            "timeout": "1s",
            "retries": 1,
            "retry_backoff": "0.1s",
        },  # fmt: skip
    ]
    gw = gateway(cfg)
    master = {"Authorization": f"Bearer {MASTER_KEY}"}

    def call(method: str, path: str, headers: dict | None = None) -> tuple[int, dict]:
        status, _, body = http(method, gw.base_url + path, body=b"" if method == "POST" else None,
                               headers=master if headers is None else headers)  # fmt: skip
        return status, json.loads(body)

    status, body = call("GET", "/admin/jobs")
    assert status == 200 and [j["name"] for j in body["jobs"]] == ["capped", "hang"]
    assert body["jobs"][0]["next_run_local"].endswith("-01-01T00:00:00+00:00")  # the config's zone, UTC
    assert call("GET", "/admin/jobs", headers={})[0] == 401
    status, body = call("POST", "/admin/jobs/nope/run")
    assert status == 404 and "configured jobs: capped, hang" in body["error"]["message"]

    def run(name: str) -> dict:
        status, body = call("POST", f"/admin/jobs/{name}/run")
        assert status == 202
        done = lambda: call("GET", f"/admin/jobs/runs/{body['run_id']}")[1]["status"] in ("ok", "failed")  # noqa: E731
        assert wait_until(done, timeout=60)
        return call("GET", f"/admin/jobs/runs/{body['run_id']}")[1]

    # a budget on the job's agent holds like on any agent's traffic: the second run is refused
    assert run("capped")["status"] == "ok"
    refused = run("capped")
    assert refused["status"] == "failed" and "BudgetExceeded" in refused["error"]
    # an attempt that outlives the job's timeout is retried
    frontier.faults({"mode": "slow", "delay_s": 10, "times": 1})
    hung = run("hang")
    assert hung["status"] == "ok" and hung["deployment"] == "frontier"
    assert len([r for r in frontier.requests() if r["path"] == "/v1/chat/completions"]) == 2

    assert call("POST", "/admin/jobs/hang/pause") == (200, {"job": "hang", "paused": True})
    assert [j["paused"] for j in call("GET", "/admin/jobs")[1]["jobs"]] == [False, True]
    assert call("POST", "/admin/jobs/hang/resume")[1]["paused"] is False
    status, body = call("GET", "/admin/jobs/history?job=capped&limit=5")
    assert status == 200 and [r["status"] for r in body["runs"]] == ["failed", "ok"]
    assert call("GET", "/admin/jobs/history?limit=x")[0] == 400
