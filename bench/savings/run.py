"""Replay an agent workload through tiergate in three arms and compare cost, failed tasks and latency.

  .venv/bin/python bench/savings/run.py [--tasks 1000] [--seed 19] [--time-scale 0.1] [--concurrency 16]

Two OpenAI-chat stand-ins play the tiers (bench/savings/replay.py: local qwen3-8b free at tier 0;
gpt-5-nano, gpt-5-mini and gpt-5 at tiers 1 to 3, at their list prices from the gateway's price
database), each model failing the tasks above its class at the documented, seeded rates. For each
arm a fresh ``tiergate serve`` (its own ledger) gets the same tasks over HTTP; the cost is the one
``tiergate report --json`` gives for that ledger. See bench/README.md, "Savings".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from bench.savings.replay import (  # noqa: E402
    API_KEY,
    ARMS,
    FAIL_RATES,
    TIERS,
    ArmResult,
    arm_config,
    capability,
    class_table,
    replay,
    result,
    table,
)
from bench.savings.workload import workload  # noqa: E402

from procs import MASTER_KEY, start_gateway, start_standin  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(tasks: int, seed: int, time_scale: float, concurrency: int) -> list[ArmResult]:
    work = workload(tasks, seed)
    local = start_standin("openai", "local", ["qwen3-8b"])
    cloud = start_standin("openai", "cloud", [m for _, tier, m in TIERS if tier > 0], api_key=API_KEY)
    results = []
    try:
        for s in (local, cloud):
            s.control("capability", capability(seed, time_scale))
        for arm in ARMS:
            with tempfile.TemporaryDirectory(prefix=f"savings-{arm}-") as tmp:
                gw = start_gateway(Path(tmp), arm_config(arm, local.base_url, cloud.base_url))
                try:
                    log(f"arm {arm}: {tasks} tasks, {concurrency} at a time")
                    done = asyncio.run(replay(gw.base_url, MASTER_KEY, work, arm, concurrency=concurrency))
                    rows = gw.rows_when("kind='request'", tasks)
                    assert len(rows) >= tasks, f"the ledger has {len(rows)} request rows of {tasks}"
                    report = json.loads(gw.cli("report", "--json").stdout)
                finally:
                    gw.stop()
                results.append(result(done, report))
                log(f"arm {arm}: {done.wall_s:.1f} s, ${report['cost_usd']:.4f}, {len(done.failed)} failed")
    finally:
        local.stop()
        cloud.stop()
    return results


def rates_table() -> str:
    lines = ["| model (tier) | simple | medium | complex |", "|---|---:|---:|---:|"]
    for _, tier, model in TIERS:
        r = FAIL_RATES[model]
        lines.append(f"| {model} ({tier}) | {r['simple']:.0%} | {r['medium']:.0%} | {r['complex']:.0%} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=19, help="the workload's and the failure draws' seed")
    ap.add_argument("--time-scale", type=float, default=0.1, help="simulated model time x this (0: no waits)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    results = run(args.tasks, args.seed, args.time_scale, args.concurrency)
    print(f"{args.tasks} tasks, seed {args.seed}, time scale {args.time_scale:g}, concurrency {args.concurrency}\n")
    print(table(results, args.time_scale))
    print("\ncost by class of task (the ledger's cost by agent):\n")
    print(class_table(results))
    print("\nfailure rates (share of each class of task a model fails, in a way the gates can see):\n")
    print(rates_table())
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in results], indent=2))


if __name__ == "__main__":
    main()
