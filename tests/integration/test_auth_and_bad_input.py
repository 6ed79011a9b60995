"""Auth on by default; bad input gets a clear 4xx in OpenAI's error format, never a 500."""

from __future__ import annotations

import json

import openai
import pytest

from procs import MASTER_KEY, http, tiered_config, wait_until

MSG = [{"role": "user", "content": "hello"}]


def post(gw, body: bytes, key: str | None = MASTER_KEY, headers: dict | None = None):
    h = {"Content-Type": "application/json", **(headers or {})}
    if key:
        h["Authorization"] = f"Bearer {key}"
    status, hdrs, raw = http("POST", f"{gw.base_url}/v1/chat/completions", body=body, headers=h)
    return status, json.loads(raw)


def test_missing_and_wrong_keys_are_401(standins, gateway):
    gw = gateway(tiered_config(standins(name="local", models=["llama-8b"]), None))
    with pytest.raises(openai.AuthenticationError) as ei:
        openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="sk-wrong", max_retries=0).chat.completions.create(
            model="auto", messages=MSG
        )
    assert ei.value.body["code"] == "invalid_api_key"
    status, body = post(gw, b'{"messages": []}', key=None)
    assert status == 401 and "missing API key" in body["error"]["message"]
    # x-api-key works as well as Bearer
    status, _ = post(gw, json.dumps({"messages": MSG}).encode(), key=None, headers={"x-api-key": MASTER_KEY})
    assert status == 200


def test_virtual_keys_create_attribute_and_revoke(standins, gateway):
    gw = gateway(tiered_config(standins(name="local", models=["llama-8b"]), None))
    key = gw.cli("keys", "create", "--name", "researcher-key", "--agent", "researcher").stdout.strip()
    assert key.startswith("tg-")
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=key, max_retries=0)
    assert wait_until(lambda: _works(c), timeout=5)
    listing = gw.cli("keys", "list", "--json").stdout
    assert key not in listing and json.loads(listing)[0]["agent"] == "researcher"
    gw.cli("keys", "revoke", "researcher-key")
    assert wait_until(lambda: not _works(c), timeout=5)
    gw.stop()
    rows = gw.ledger_rows("kind='request' AND status=200")
    assert rows and all(r["key_name"] == "researcher-key" and r["agent"] == "researcher" for r in rows)
    # the database holds a hash, never the key
    import sqlite3

    dump = "\n".join(sqlite3.connect(gw.ledger_path).iterdump())
    assert key not in dump


def _works(c: openai.OpenAI) -> bool:
    try:
        c.chat.completions.create(model="auto", messages=MSG)
        return True
    except openai.AuthenticationError:
        return False


def test_serve_refuses_to_start_without_any_key(tmp_path):
    from procs import cli_env, run_cli, write_config

    path = write_config(tmp_path, {"providers": {}, "deployments": []})
    env = cli_env()
    env.pop("TIERGATE_MASTER_KEY")
    res = run_cli("serve", "--config", str(path), "--port", "0", env=env, check=False)
    assert res.returncode == 2
    assert "auth.master_key" in res.stderr and "keys create" in res.stderr


@pytest.mark.parametrize(
    ("body", "status", "fragment", "param"),
    [
        (b"{not json", 400, "not valid JSON", None),
        (b"", 400, "empty", None),
        (b"[1, 2]", 400, "must be a JSON object", None),
        (b'{"model": "auto"}', 400, "'messages' is required", "messages"),
        (b'{"messages": []}', 400, "at least one message", "messages"),
        (b'{"messages": "hi"}', 400, "'messages' must be a non-empty list", "messages"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', 400, "'model' must be a string", "model"),
        (
            b'{"stream": "yes", "messages": [{"role": "user", "content": "x"}]}',
            400,
            "'stream' must be a boolean",
            "stream",
        ),
        (b'{"max_tokens": -3, "messages": [{"role": "user", "content": "x"}]}', 400, "positive integer", "max_tokens"),
        (
            b'{"max_tokens": true, "messages": [{"role": "user", "content": "x"}]}',
            400,
            "positive integer",
            "max_tokens",
        ),
        (b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}', 404, "names no alias", "model"),
    ],
)
def test_bad_bodies_get_clear_openai_errors(standins, gateway, body, status, fragment, param):
    gw = gateway(tiered_config(standins(name="local", models=["llama-8b"]), None))
    got_status, got = post(gw, body)
    assert got_status == status
    assert fragment in got["error"]["message"] and got["error"]["param"] == param
    assert set(got["error"]) == {"message", "type", "param", "code"}


def test_huge_body_is_413_and_unknown_route_is_404(standins, gateway):
    cfg = tiered_config(standins(name="local", models=["llama-8b"]), None)
    cfg["server"] = {"max_body_mb": 0.5}
    gw = gateway(cfg)
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 600_000}]}).encode()
    status, body = post(gw, big)
    assert status == 413 and "server.max_body_mb" in body["error"]["message"]
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    status, headers, raw = http("GET", f"{gw.base_url}/v1/nope", headers=auth)
    assert status == 404 and json.loads(raw)["error"]["type"] == "invalid_request_error", raw
    assert headers.get("X-Request-ID")
    # a known path with the wrong method: 405 in the client's envelope, naming what is allowed
    status, headers, raw = http("GET", f"{gw.base_url}/v1/chat/completions", headers=auth)
    got = json.loads(raw)["error"]
    assert status == 405 and got["code"] == "method_not_allowed" and "POST" in got["message"], raw
    assert headers.get("Allow") == "POST"
    status, headers, raw = http("PUT", f"{gw.base_url}/v1/messages", headers={"x-api-key": MASTER_KEY})
    got = json.loads(raw)
    assert status == 405 and got["type"] == "error" and "POST" in got["error"]["message"], raw
    # GET routes answer HEAD as well
    assert http("HEAD", f"{gw.base_url}/health")[0] == 200
    # the server is still fine afterwards
    assert post(gw, json.dumps({"messages": MSG}).encode())[0] == 200


def test_context_too_large_for_every_deployment_is_400(standins, gateway):
    gw = gateway(tiered_config(standins(name="local", models=["llama-8b"]), None))
    body = json.dumps({"messages": [{"role": "user", "content": "word " * 20000}]}).encode()
    status, got = post(gw, body)
    assert status == 400 and got["error"]["code"] == "context_length_exceeded"
