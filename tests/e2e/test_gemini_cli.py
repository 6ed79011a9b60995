"""The real Gemini CLI completes a headless turn through tiergate on a real local llama.cpp model.

Gemini CLI (npm ``@google/gemini-cli``) speaks only Gemini's API: it posts
``/v1beta/models/{model}:streamGenerateContent?alt=sse`` with its key in
``x-goog-api-key``, a system instruction (its own runs to ~9,000 tokens), its tools as
``functionDeclarations`` with ``parametersJsonSchema`` and
``thinkingConfig.includeThoughts``. Headless ``-p`` needs
``security.auth.selectedType: gemini-api-key`` in its settings.
"""

from __future__ import annotations

import json
import os

import pytest

from procs import MASTER_KEY, agent_cli, local_smol_config, run_bounded, start_wide_engine


@pytest.fixture(scope="module")
def engine():
    proc = start_wide_engine()
    yield proc
    proc.stop_blocking()


@pytest.mark.timeout(600)  # a turn on 2 loaded CPU cores
def test_gemini_cli_turn_through_tiergate_on_local_llamacpp(engine, gateway, tmp_path):
    cli = agent_cli("gemini")[0]
    gw = gateway(local_smol_config(engine, model_map={"gemini-*": "local-smol"}))  # any Gemini model the CLI asks for
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    settings = {"security": {"auth": {"selectedType": "gemini-api-key"}}, "privacy": {"usageStatisticsEnabled": False}}
    (home / ".gemini" / "settings.json").write_text(json.dumps(settings))
    work = tmp_path / "work"
    work.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GEMINI_API_KEY": MASTER_KEY,
        "GOOGLE_GEMINI_BASE_URL": gw.base_url,
        "GEMINI_CLI_NO_RELAUNCH": "true",
        "GEMINI_CLI_TRUST_WORKSPACE": "true",  # headless runs refuse an untrusted folder
        "CI": "true",
        # the CLI's own system prompt is ~9,000 tokens: idle, this host prefills it in 80 s; with the rest
        # of the suite beside it, past Node's 300 s wait for response headers (the CLI then retries and
        # the turn runs out of time). A short one, set the CLI's documented way, keeps the request's form
        "GEMINI_SYSTEM_MD": str(tmp_path / "system.md"),
    }
    (tmp_path / "system.md").write_text("You are a command-line assistant. Answer briefly.\n")
    res = run_bounded(
        [str(cli), "-p", "Reply with the word hello.", "--output-format", "json"],
        env=env,
        cwd=work,
        timeout=480,
    )
    gw.stop()
    rows = gw.ledger_rows("kind='request' AND protocol='gemini-generate'")
    detail = f"exit {res.returncode}\nstdout: {res.stdout[-2000:]}\nstderr: {res.stderr[-3000:]}\nrows: {rows}"
    assert rows, "Gemini CLI never reached the gateway\n" + detail
    served = [r for r in rows if r["status"] == 200 and r["deployment"] == "local-smol"]
    # the turn itself streams; the CLI's utility calls (its model router's classifier) do not
    assert any(r["stream"] == 1 for r in served), detail
    # on a busy machine the CLI may give up on a slow first prefill and retry: each try is its own row
    assert all(r["status"] in (200, 499) for r in rows), detail
    assert res.returncode == 0, detail
    out = json.loads(res.stdout[res.stdout.index("{") :])
    assert isinstance(out.get("response"), str) and out["response"].strip(), detail
    assert out.get("error") is None, detail
