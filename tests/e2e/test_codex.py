"""The real Codex CLI (npm @openai/codex, `codex exec`) completes a turn through tiergate's /v1/responses.

Codex speaks only the Responses API: it always streams, sends store: false,
include: ["reasoning.encrypted_content"], reasoning.summary, prompt_cache_key,
client_metadata, function tools plus the freeform apply_patch tool, and
replays history as items. Here it runs on a real local llama.cpp model, and
again when that engine is gone and a cloud tier (a stand-in) takes the turn.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from procs import MASTER_KEY, agent_cli, local_smol, local_smol_config, run_bounded, start_engine, start_wide_engine


def posted(up) -> list[dict]:
    """What the gateway sent a stand-in, without its GET probes of a local provider (/props, /v1/models)."""
    return [r for r in up.requests() if r["method"] == "POST"]


def codex_config(base_url: str, model: str) -> str:
    """The config.toml docs/clients.md documents, pointed at this gateway."""
    return f"""
model = "{model}"
model_provider = "tiergate"

[model_providers.tiergate]
name = "tiergate"
base_url = "{base_url}/v1"
env_key = "TIERGATE_API_KEY"
wire_api = "responses"
model_catalog_url = "{base_url}/v1/codex/models"
"""


def run_codex(gw, tmp_path: Path, model: str, prompt: str = "Reply with the word hello."):
    home = tmp_path / "codex-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(codex_config(gw.base_url, model))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CODEX_HOME": str(home),
        "TIERGATE_API_KEY": MASTER_KEY,
    }
    return run_bounded(
        [str(agent_cli("codex")[0]), "exec", "--skip-git-repo-check", "--sandbox", "read-only", prompt],
        env=env,
        cwd=tmp_path,
        timeout=540,
    )


def detail(res, rows) -> str:
    return f"exit {res.returncode}\nstdout: {res.stdout[-2000:]}\nstderr: {res.stderr[-3000:]}\nrows: {rows}"


@pytest.mark.timeout(600)  # Codex's instructions and tools are ~5k tokens: a long prefill on 2 CPU cores
def test_codex_turn_through_tiergate_on_local_llamacpp(gateway, tmp_path):
    engine = start_wide_engine(extra_args=())
    try:
        gw = gateway(local_smol_config(engine, timeout_s=300, request_timeout_s=400))
        res = run_codex(gw, tmp_path, "local-smol")
        gw.stop()
    finally:
        engine.stop_blocking()
    rows = gw.ledger_rows("kind='request' AND protocol='openai-responses'")
    assert rows, "Codex never reached the gateway\n" + detail(res, rows)
    served = [r for r in rows if r["status"] == 200 and r["deployment"] == "local-smol"]
    assert served and all(r["stream"] == 1 for r in served), detail(res, rows)  # Codex always streams
    # what a chat upstream cannot take is dropped on purpose and named
    assert all("include.reasoning.encrypted_content" in r["reason"] for r in served), detail(res, rows)
    assert res.returncode == 0, detail(res, rows)  # Codex parsed the stream and finished its turn
    assert "Model metadata" not in res.stderr, detail(res, rows)  # it read the catalog tiergate serves


@pytest.mark.timeout(300)
def test_codex_escalates_when_the_local_tier_fails(standins, gateway, tmp_path):
    engine = start_engine(ctx=2048, parallel=1)
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    provider, deployment = local_smol(engine)
    gw = gateway(
        {
            "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
            "providers": {"box": provider, "cheapco": {"api": "openai-chat", "base_url": f"{cheap.base_url}/v1"}},
            "deployments": [
                deployment,
                {
                    "name": "cheap",
                    "provider": "cheapco",
                    "model": "gpt-4o-mini",
                    "tier": 1,
                    "context_window": 128000,
                    "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
                },
            ],
            "aliases": {"coder": ["local-smol", "cheap"]},
        }
    )
    engine.stop_blocking()  # the local tier is gone: the turn must still complete, on the cloud tier
    res = run_codex(gw, tmp_path, "coder")
    gw.stop()
    rows = gw.ledger_rows("kind='request' AND protocol='openai-responses'")
    served = [r for r in rows if r["status"] == 200]
    assert served and all(r["deployment"] == "cheap" for r in served), detail(res, rows)
    assert all("local-smol" in r["reason"] for r in served), detail(res, rows)
    assert all(r["cost_usd"] > 0 for r in served), detail(res, rows)
    assert res.returncode == 0 and "[cheap]" in res.stdout, detail(res, rows)
    sent = posted(cheap)[0]["body"]
    tools = {t["function"]["name"]: t["function"] for t in sent["tools"]}
    assert sent["stream"] is True and "exec_command" in tools
    # Codex's freeform apply_patch rides as a function of one string input, its grammar in the description
    assert tools["apply_patch"]["parameters"]["required"] == ["input"]
    assert "lark grammar" in tools["apply_patch"]["description"]


@pytest.mark.timeout(300)
def test_codex_runs_a_tool_and_sends_its_output_back(standins, gateway, tmp_path):
    """The stand-in calls Codex's first tool (exec_command) when told to: Codex runs it in its sandbox and
    replays the call and its output as items on the next request, which tiergate sends as a tool message."""
    cloud = standins(name="cloud", models=["gpt-4o-mini"])
    gw = gateway(
        {
            "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
            "providers": {"cloudco": {"api": "openai-chat", "base_url": f"{cloud.base_url}/v1"}},
            "deployments": [
                {
                    "name": "cheap",
                    "provider": "cloudco",
                    "model": "gpt-4o-mini",
                    "tier": 1,
                    "context_window": 128000,
                    "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
                }
            ],
        }
    )
    res = run_codex(gw, tmp_path, "cheap", prompt="use tool exec_command, then tell me what happened")
    gw.stop()
    rows = gw.ledger_rows("kind='request' AND protocol='openai-responses'")
    bodies = [r["body"] for r in posted(cloud)]
    assert len(bodies) >= 2, detail(res, rows)
    first, second = bodies[0]["messages"], bodies[1]["messages"]
    assert "tool_calls" not in first[-1]
    call = next(m for m in second if m.get("tool_calls"))["tool_calls"][0]
    assert call["function"]["name"] == "exec_command"
    output = next(m for m in second if m["role"] == "tool")
    assert call["function"]["arguments"] == '{"cmd":"Paris"}'  # the stand-in's made-up command line
    # what Codex's sandbox printed running it (0.171 starts with "Chunk ID"; the shape is Codex's own)
    assert output["tool_call_id"] == call["id"] and output["content"].strip(), detail(res, rows)
    assert res.returncode == 0 and all(r["status"] == 200 for r in rows), detail(res, rows)
