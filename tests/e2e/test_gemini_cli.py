"""The real Gemini CLI completes a headless turn through tiergate on a real local llama.cpp model.

Gemini CLI (npm ``@google/gemini-cli``) speaks only Gemini's API: it posts
``/v1beta/models/{model}:streamGenerateContent?alt=sse`` with its key in
``x-goog-api-key``, a long system instruction, its tools as
``functionDeclarations`` with ``parametersJsonSchema`` and
``thinkingConfig.includeThoughts``. Headless ``-p`` needs
``security.auth.selectedType: gemini-api-key`` in its settings.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from procs import MASTER_KEY, require, run_bounded, start_engine

REPO = Path(__file__).resolve().parents[2]
NPM_PREFIX = REPO / ".venv" / "npm"
GEMINI = NPM_PREFIX / "node_modules" / ".bin" / "gemini"


def gemini_cli() -> Path:
    """Install the CLI from npm into the project's venv once; skip only when npm is missing."""
    require(shutil.which("npm") is not None, "npm is not installed: cannot install @google/gemini-cli")
    if not GEMINI.exists():
        res = run_bounded(
            ["npm", "install", "--prefix", str(NPM_PREFIX), "--no-audit", "--no-fund", "@google/gemini-cli"],
            timeout=300,
        )
        assert res.returncode == 0, f"npm install failed:\n{res.stdout}\n{res.stderr}"
    return GEMINI


@pytest.fixture(scope="module")
def engine():
    # Gemini CLI's system instruction and tool declarations are long: one slot with a wide context
    proc = start_engine(ctx=32768, parallel=1, extra_args=["--verbosity", "1", "--temp", "0", "--seed", "7"])
    yield proc
    proc.stop_blocking()


@pytest.mark.timeout(600)  # the first turn prefills a long prompt on 2 CPU cores
def test_gemini_cli_turn_through_tiergate_on_local_llamacpp(engine, gateway, tmp_path):
    cli = gemini_cli()
    gw = gateway(
        {
            "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
            "providers": {"box": {"api": "openai-chat", "base_url": engine.base_url, "local": True}},
            "deployments": [
                {
                    "name": "local-smol",
                    "provider": "box",
                    "model": "smollm2",
                    "tier": 0,
                    "context_window": 32768,
                    "max_output_tokens": 64,
                }
            ],
            "model_map": {"gemini-*": "local-smol"},  # whatever Gemini model the CLI asks for
            "routing": {"attempt_timeout_s": 240, "request_timeout_s": 300},
        }
    )
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
    }
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
