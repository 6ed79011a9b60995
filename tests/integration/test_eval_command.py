"""`tiergate eval`: the shipped starter suite through a running gateway, per target, checked against the ledger."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from procs import tiered_config

STARTER = str(Path(__file__).parents[2] / "evals" / "starter.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gw(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    cfg = tiered_config(local, cheap)
    cfg["server"] = {"port": free_port()}  # the CLI reaches the gateway at the configured port
    return gateway(cfg)


def test_the_starter_suite_on_two_targets(gw):
    out = json.loads(gw.cli("eval", STARTER, "--targets", "local-8b,cheap", "--runs", "2", "--json").stdout)
    assert out["suite"] == "starter" and out["runs_per_task"] == 2
    local, cheap = out["targets"]
    assert (local["target"], cheap["target"]) == ("local-8b", "cheap")
    assert local["runs"] == cheap["runs"] == 14 and local["errors"] == cheap["errors"] == 0
    # the stand-ins answer with their own scripted words, and call the tool they are offered:
    # only the tool-call task passes (the other checks look for real answers)
    by_task = {(r["target"], r["task"]): r for r in out["runs"]}
    assert by_task[("cheap", "call-a-tool")]["passed"] is True, by_task[("cheap", "call-a-tool")]
    assert by_task[("cheap", "extract-date")]["failures"] == ["contains: '2026-12-01' not in the answer"]
    assert "json_schema: at name" in by_task[("cheap", "extract-json")]["failures"][0]
    assert local["passed"] == cheap["passed"] == 2 and local["pass_rate"] == pytest.approx(2 / 14)
    assert local["served_elsewhere"] == cheap["served_elsewhere"] == 0
    assert local["latency_p95_ms"] >= local["latency_p50_ms"] > 0
    # tokens and cost are the gateway's own, as the ledger has them
    rows = gw.rows_when("kind='request' AND agent='eval'", 28)
    assert len(rows) == 28
    billed = sum(r["cost_usd"] for r in rows if r["deployment"] == "cheap")
    assert cheap["cost_usd"] == pytest.approx(billed, rel=1e-6) and billed > 0 and local["cost_usd"] == 0
    assert cheap["prompt_tokens"] == sum(r["prompt_tokens"] for r in rows if r["deployment"] == "cheap")


def test_markdown_table_and_bad_suites(gw, tmp_path):
    md = gw.cli("eval", STARTER, "--targets", "cheap", "--runs", "1", "--markdown").stdout
    assert "### starter" in md and "| target | pass rate |" in md and "| cheap | 14% | 1/7 |" in md
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - name: a\n    prompt: hi\n    checks: [{contains: x, regex: y}]\n  - prompt: no name\n")
    res = gw.cli("eval", str(bad), "--targets", "cheap", check=False)
    assert res.returncode == 2
    assert "tasks.0.checks.0" in res.stderr and "exactly one of" in res.stderr and "tasks.1.name" in res.stderr
