"""The savings replay (bench/savings), small: the same tasks through a real gateway in three arms.

Stand-ins play the four tiers with simulated capability (tiergate.standins.capability) at failure rates
raised above the benchmark's so that a few dozen tasks surely show failures. The qualitative result the
benchmark rests on must hold: with gates no task fails and it costs less than sending everything to the
frontier; the same task routing without gates hands some agents answers they cannot use.
"""

from __future__ import annotations

import asyncio
import json
import sys

from procs import MASTER_KEY, REPO

sys.path.insert(0, str(REPO))

from bench.savings.replay import API_KEY, TIERS, arm_config, capability, replay, result
from bench.savings.workload import workload

RAISED = {
    "qwen3-8b": {"simple": 0.3, "medium": 0.6, "complex": 0.9},
    "gpt-5-nano": {"simple": 0.1, "medium": 0.3, "complex": 0.6},
    "gpt-5-mini": {"simple": 0.0, "medium": 0.1, "complex": 0.3},
    "gpt-5": {"simple": 0.0, "medium": 0.0, "complex": 0.0},
}
TASKS = 40


def test_gated_replay_fails_no_task_and_costs_less_than_all_frontier(standins, gateway, tmp_path):
    local = standins(name="local", models=["qwen3-8b"])
    cloud = standins(name="cloud", models=[m for _, tier, m in TIERS if tier > 0], api_key=API_KEY)
    for s in (local, cloud):
        s.control("capability", capability(7, 0.0, RAISED))
    work = workload(TASKS, 7)
    results = {}
    for arm in ("frontier", "static", "gated"):
        cfg = arm_config(arm, local.base_url, cloud.base_url)
        cfg["ledger"] = f"sqlite:///{tmp_path / f'{arm}.db'}"
        gw = gateway(cfg)
        run = asyncio.run(replay(gw.base_url, MASTER_KEY, work, arm, concurrency=8))
        assert len(gw.rows_when("kind='request'", TASKS)) == TASKS
        report = json.loads(gw.cli("report", "--json").stdout)
        gw.stop()
        results[arm] = result(run, report)
    frontier, static, gated = results["frontier"], results["static"], results["gated"]
    assert frontier.failed == 0 and frontier.served_by == {"frontier": TASKS}
    assert static.failed > 0 and static.gate_failures == 0, static  # answers no gate looked at reach agents
    assert gated.failed == 0, gated
    assert gated.gate_failures >= static.failed and gated.escalated > 0  # the bad answers were caught and climbed
    assert 0 < gated.cost_usd < frontier.cost_usd, (gated, frontier)
    assert static.cost_usd < gated.cost_usd  # escalations are paid for: gates cost something over no gates
