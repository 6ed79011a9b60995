"""Sessions that come back (issue 15 item 5), through the real gateway, CLI and admin routes.

A request without a session header counts in its key's and agent's implicit
session, which rolls over (by day, cut in session_max_age slices), so no age
limit ever locks a key out. Kills expire after guardian.kill_ttl and can be
lifted (`tiergate sessions revive`, POST /admin/sessions/ID/revive); killing
an unknown id is an error; bulk kills spare implicit sessions; old session
rows are pruned. Waits are generous: kills made by the CLI reach a running
gateway through the ledger, polled about once a second.
"""

from __future__ import annotations

import json
import time

import anthropic
import openai
import orjson
import pytest

from procs import MASTER_KEY, http, tiered_config, wait_until
from tiergate.api.anthropic import CLAUDE_CODE_SESSION

MSG = [{"role": "user", "content": "plan the release"}]


def config(local, cheap, **guardian) -> dict:
    cfg = tiered_config(local, cheap)
    cfg["deployments"][1]["price"] = {"input_per_mtok": 100, "output_per_mtok": 100}  # a few requests cost cents
    cfg["guardian"] = guardian
    return cfg


def client(gw, key: str = MASTER_KEY, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=key, max_retries=0, default_headers=headers)


def call(c: openai.OpenAI, model: str = "local-8b"):
    """The response, or the error the SDK raised (403 for a killed session)."""
    try:
        return c.chat.completions.with_raw_response.create(model=model, messages=MSG, max_tokens=10)
    except openai.APIStatusError as exc:
        return exc


def ok(c: openai.OpenAI, model: str = "local-8b") -> bool:
    return not isinstance(call(c, model), Exception)


def refused(c: openai.OpenAI, model: str = "local-8b") -> bool:
    return isinstance(call(c, model), openai.PermissionDeniedError)


def listed(gw) -> dict[str, dict]:
    return {r["session"]: r for r in json.loads(gw.cli("sessions", "list", "--json").stdout)}


def admin(gw, path: str, body: dict | None = None) -> tuple[int, dict]:
    status, _, raw = http(
        "POST",
        f"{gw.base_url}{path}",
        body=orjson.dumps(body or {}),
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
    )
    return status, orjson.loads(raw)


def test_an_agent_without_a_session_header_keeps_working_past_session_max_age(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(config(local, cheap, session_max_age="2s"))
    bare, named = client(gw), client(gw, **{"X-Tiergate-Session": "run-1"})
    claude = anthropic.Anthropic(
        base_url=gw.base_url, api_key=MASTER_KEY, max_retries=0, default_headers={CLAUDE_CODE_SESSION: "cc-1"}
    )

    def claude_code():
        return claude.messages.create(model="local-8b", max_tokens=10, messages=MSG)

    assert ok(bare) and ok(named) and claude_code()
    time.sleep(2.5)  # every session is now older than session_max_age
    err = call(named)
    assert isinstance(err, openai.PermissionDeniedError) and "session_max_age" in err.message  # explicit: stopped
    with pytest.raises(anthropic.PermissionDeniedError, match="session_max_age"):
        claude_code()  # Claude Code's session header names its session too
    for _ in range(3):
        assert ok(bare)  # implicit: a new one started instead

    def implicit_sessions() -> set[str]:  # usage rows land within a writer batch, a few ms
        return {r["session"] for r in gw.ledger_rows("kind='request' AND status=200 AND session LIKE 'master:%'")}

    assert wait_until(lambda: len(implicit_sessions()) >= 2, timeout=10), implicit_sessions()
    assert all(s.startswith("master:-:20") for s in implicit_sessions())
    assert wait_until(lambda: any(r["implicit"] for r in listed(gw).values()), timeout=10)
    assert not listed(gw)["run-1"]["implicit"]


def test_a_kill_then_a_revive_by_the_cli_each_take_effect(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(config(local, cheap))
    s1 = client(gw, **{"X-Tiergate-Session": "s-1"})
    assert ok(s1)
    assert wait_until(lambda: "s-1" in listed(gw), timeout=10)  # its row is flushed about once a second
    out = gw.cli("sessions", "kill", "s-1", "--reason", "runaway loop").stdout
    assert "killed 1 session(s): s-1" in out
    assert wait_until(lambda: refused(s1), timeout=10)
    assert "runaway loop" in call(s1).message
    assert "already killed" in gw.cli("sessions", "kill", "s-1").stdout
    assert "KILLED (runaway loop)" in gw.cli("sessions", "list").stdout
    assert "s-1' revived" in gw.cli("sessions", "revive", "s-1").stdout
    assert wait_until(lambda: ok(s1), timeout=10)
    assert listed(gw)["s-1"]["revived_at"] and not listed(gw)["s-1"]["killed_reason"]
    again = gw.cli("sessions", "revive", "s-1", check=False)
    assert again.returncode == 1 and "is not killed" in again.stderr
    unknown = gw.cli("sessions", "revive", "nobody", check=False)
    assert unknown.returncode == 1 and "no session named 'nobody'" in unknown.stderr


def test_a_kill_then_a_revive_by_the_admin_routes_take_effect_at_the_next_request(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(config(local, cheap, session_max_usd=0.004))
    s2 = client(gw, **{"X-Tiergate-Session": "s-2"})
    assert ok(s2)  # killed at once, its row written or not: this gateway holds the session
    assert admin(gw, "/admin/sessions/kill", {"session": "s-2", "reason": "by hand"}) == (
        200,
        {"killed": ["s-2"], "spared": []},
    )
    assert refused(s2)  # the next request: this process made the kill
    assert admin(gw, "/admin/sessions/s-2/revive") == (200, {"session": "s-2", "revived": True})
    assert ok(s2)
    # the guardian's own kill, lifted the same way: the revived session's spend starts from zero
    for _ in range(20):  # about $0.001 a request against session_max_usd $0.004
        if not ok(s2, "cheap"):
            break
    err = call(s2)
    assert isinstance(err, openai.PermissionDeniedError) and "session_max_usd" in err.message
    assert admin(gw, "/admin/sessions/s-2/revive") == (200, {"session": "s-2", "revived": True})
    assert ok(s2, "cheap")
    assert admin(gw, "/admin/sessions/s-2/revive") == (200, {"session": "s-2", "revived": False})
    status, body = admin(gw, "/admin/sessions/nobody/revive")
    assert status == 404 and "no session named 'nobody'" in body["error"]["message"]
    status, _, _ = http("POST", f"{gw.base_url}/admin/sessions/s-2/revive", body=b"{}")
    assert status == 401  # the master key only


def test_killing_an_unknown_session_is_an_error_and_blocks_nothing(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(config(local, cheap))
    res = gw.cli("sessions", "kill", "no-such-session", check=False)
    assert res.returncode == 1 and "no session named 'no-such-session'" in res.stderr, res
    status, body = admin(gw, "/admin/sessions/kill", {"session": "no-such-session"})
    assert status == 404 and body["error"]["code"] == "session_not_found"
    fresh = client(gw, **{"X-Tiergate-Session": "no-such-session"})
    time.sleep(1.5)  # a control poll or more: a kill written anyway would have arrived
    assert ok(fresh)


def test_a_bulk_kill_spares_default_sessions_unless_asked(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(config(local, cheap))
    bot_key = gw.cli("keys", "create", "--name", "bot-key", "--agent", "bot").stdout.strip()
    master, bot = client(gw), client(gw, key=bot_key)
    run = client(gw, **{"X-Tiergate-Session": "run-9", "X-Tiergate-Agent": "bot"})
    assert wait_until(lambda: ok(bot, "cheap"), timeout=10)  # the new key reaches the gateway within a second
    for c in (master, run):
        assert ok(c, "cheap")  # each session spends a little
    defaults = {"master:-:", "bot-key:bot:"}
    assert wait_until(lambda: len([s for s in listed(gw) if s.startswith(tuple(defaults))]) == 2, timeout=10)
    assert wait_until(lambda: "run-9" in listed(gw), timeout=10)
    out = gw.cli("sessions", "kill", "--all-over-usd", "0").stdout
    assert "killed 1 session(s): run-9" in out and "spared 2 default session(s)" in out, out
    assert wait_until(lambda: refused(run), timeout=10)
    assert ok(master) and ok(bot)  # neither key is locked out
    out = gw.cli("sessions", "kill", "--agent", "bot").stdout
    assert "killed 0 session(s)" in out and "spared 1 default session(s)" in out, out
    status, body = admin(gw, "/admin/sessions/kill", {"agent": "bot"})
    assert status == 200 and body["killed"] == [] and body["spared"][0].startswith("bot-key:bot:")
    out = gw.cli("sessions", "kill", "--agent", "bot", "--include-default").stdout
    assert "killed 1 session(s): bot-key:bot:" in out, out
    assert wait_until(lambda: refused(bot), timeout=10)
    assert ok(master)
    status, body = admin(gw, "/admin/sessions/kill", {"over_usd": 0, "include_default": True})
    assert status == 200 and [s for s in body["killed"] if s.startswith("master:-:")] and body["spared"] == []
    assert refused(master)  # this process made the kill: at once
    assert admin(gw, "/admin/sessions/kill", {"over_usd": 0, "include_default": "yes"})[0] == 400


def test_a_kill_expires_after_kill_ttl(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(config(local, cheap, kill_ttl="3s"))
    s3 = client(gw, **{"X-Tiergate-Session": "s-3"})
    assert ok(s3)
    assert wait_until(lambda: "s-3" in listed(gw), timeout=10)
    killed_at = time.time()
    gw.cli("sessions", "kill", "s-3")
    assert wait_until(lambda: refused(s3), timeout=10)
    assert wait_until(lambda: ok(s3), timeout=30)
    assert time.time() - killed_at >= 3
    assert "kill expired" in gw.cli("sessions", "list").stdout  # the row keeps what happened
    assert "killed 1 session(s): s-3" in gw.cli("sessions", "kill", "s-3").stdout  # and it can be killed again


def test_session_rows_past_retention_are_pruned_and_kills_in_force_kept(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    cfg = config(local, cheap, session_retention="2s")
    gw = gateway(cfg)
    for sid in ("old", "killed"):
        assert ok(client(gw, **{"X-Tiergate-Session": sid}))
    assert wait_until(lambda: {"old", "killed"} <= set(listed(gw)), timeout=10)
    gw.cli("sessions", "kill", "killed")
    assert gw.stop() == 0
    stopped = time.time()
    assert wait_until(lambda: time.time() - stopped > 2.5, timeout=5)  # both rows are past the retention now
    again = gateway(cfg)  # the same ledger: its first control tick prunes
    assert wait_until(lambda: "old" not in listed(again), timeout=15)
    assert listed(again)["killed"]["killed_reason"]  # its kill (24 h) still holds: the row stays
    assert refused(client(again, **{"X-Tiergate-Session": "killed"}))
    assert len(again.ledger_rows("session = 'old'")) == 1  # usage rows (reports, budgets) are not pruned


def test_a_revive_reaches_every_replica_and_resets_the_totals_they_share(standins, gateway, pg_url, redis_prefix):
    from scale_out import shared_state_config

    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    cfg = shared_state_config(local, cheap, pg_url=pg_url, redis_prefix=redis_prefix)
    cfg["guardian"] = {"session_max_usd": 0.004}
    a, b = gateway(cfg), gateway(cfg)  # two replicas: one PostgreSQL ledger, one Redis
    on_a, on_b = (client(gw, **{"X-Tiergate-Session": "s-x"}) for gw in (a, b))

    def spend_until_killed(c: openai.OpenAI) -> int:
        n = 0
        while ok(c, "cheap"):  # about $0.001 a request against session_max_usd $0.004
            n += 1
            assert n < 20
        return n

    assert spend_until_killed(on_a) >= 2
    assert refused(on_b)  # the guardian's kill on a reaches b through Redis, at b's next request
    assert admin(b, "/admin/sessions/s-x/revive") == (200, {"session": "s-x", "revived": True})
    assert ok(on_b, "cheap")
    assert wait_until(lambda: ok(on_a), timeout=10)  # a follows the ledger's revive at its next poll
    assert 1 <= spend_until_killed(on_a) <= 2  # the shared totals restarted at the revive: b's request counts
    assert refused(on_b)
    assert "s-x' revived" in a.cli("sessions", "revive", "s-x").stdout
    assert wait_until(lambda: ok(on_a) and ok(on_b), timeout=10)
