"""The savings replay's parts: the simulated tiers, each arm's gateway config, the replay of a workload
through a running gateway over HTTP, and the table of the arms.

The tiers are two OpenAI-chat stand-ins (tiergate.standins): one local (tier 0) and one "cloud"
serving three models (tiers 1 to 3), each model with its own simulated capability
(``FAIL_RATES``, ``SPEED``; tiergate.standins.capability). Cloud prices are not written in the
config: the gateway takes each model's list price from its price database (genai-prices), as it
would for the real model; the local tier is free.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from bench.savings.workload import KINDS, TASK_TIERS, Task

# deployment, tier, model; the provider is the local stand-in for tier 0, the cloud one above
TIERS = (
    ("local-qwen3-8b", 0, "qwen3-8b"),
    ("nano", 1, "gpt-5-nano"),
    ("mini", 2, "gpt-5-mini"),
    ("frontier", 3, "gpt-5"),
)
# share of each class of task a model fails (in a way the gates can see); the frontier does them all
FAIL_RATES = {
    "qwen3-8b": {"simple": 0.05, "medium": 0.40, "complex": 0.85},
    "gpt-5-nano": {"simple": 0.02, "medium": 0.08, "complex": 0.40},
    "gpt-5-mini": {"simple": 0.0, "medium": 0.02, "complex": 0.10},
    "gpt-5": {"simple": 0.0, "medium": 0.0, "complex": 0.0},
}
# (seconds to the first token, seconds per completion token) at full speed; a run scales them
SPEED = {
    "qwen3-8b": (0.25, 0.020),
    "gpt-5-nano": (0.6, 0.006),
    "gpt-5-mini": (0.9, 0.010),
    "gpt-5": (1.5, 0.020),
}
ARMS = ("frontier", "static", "gated", "auto")
ARM_TITLES = {
    "frontier": "(a) everything to the frontier",
    "static": "(b) task routing, gates off",
    "gated": "(c) task routing, gates on",
    "auto": "(d) `auto` from tier 0, gates on",
}
API_KEY = "sk-standin-cloud"


def capability(seed: int, time_scale: float, rates: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """The body of ``POST /_control/capability`` for both stand-ins (each reads the models it serves)."""
    rates = rates or FAIL_RATES
    return {
        "seed": seed,
        "profiles": {
            model: {"fail": rates[model], "first_s": first * time_scale, "per_token_s": per * time_scale}
            for model, (first, per) in SPEED.items()
        },
    }


def arm_config(arm: str, local_url: str, cloud_url: str) -> dict[str, Any]:
    """The gateway config of one arm (without its ledger); every arm has the same tiers and tasks table."""
    deployments: list[dict[str, Any]] = []
    for name, tier, model in TIERS:
        d: dict[str, Any] = {"name": name, "provider": "box" if tier == 0 else "openai", "model": model, "tier": tier}
        d["context_window"] = 32768 if tier == 0 else 400000
        deployments.append(d)
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": {
            "box": {"api": "openai-chat", "base_url": f"{local_url}/v1", "local": True},
            "openai": {"api": "openai-chat", "base_url": f"{cloud_url}/v1", "api_key": API_KEY},
        },
        "deployments": deployments,
        "tasks": dict(TASK_TIERS),
        "routing": {"num_retries": 0, "attempt_timeout_s": 120, "request_timeout_s": 300},
        # auto starts every task at tier 0: three escalations let a complex task climb to the frontier
        "gates": {"apply_to": "none"} if arm == "static" else {"max_escalations": 3 if arm == "auto" else 2},
    }


@dataclass
class TaskRun:
    task: Task
    status: int
    why: str | None  # the task's check: None passed
    latency_s: float
    deployment: str
    escalated: bool


@dataclass
class ArmRun:
    arm: str
    runs: list[TaskRun] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failed(self) -> list[TaskRun]:
        return [r for r in self.runs if r.why is not None]


async def replay(base_url: str, key: str, tasks: list[Task], arm: str, *, concurrency: int = 16) -> ArmRun:
    """Send every task through the gateway as its agent would, ``concurrency`` at a time, and check each answer."""
    out = ArmRun(arm)
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(300.0), limits=limits) as client:

        async def one(t: Task) -> TaskRun:
            body = {**t.body, "model": "frontier" if arm == "frontier" else "auto"}
            headers = {"Authorization": f"Bearer {key}", "X-Tiergate-Agent": f"replay-{t.task_type}"}
            if arm in ("static", "gated"):  # task routing: the task's tier is where it starts
                headers["X-Tiergate-Task"] = t.task_type
            async with gate:
                t0 = time.perf_counter()
                resp = await client.post("/v1/chat/completions", json=body, headers=headers)
                latency = time.perf_counter() - t0
            why = t.check(resp.json()) if resp.status_code == 200 else f"HTTP {resp.status_code}: {resp.text[:200]}"
            reason = resp.headers.get("x-tiergate-reason", "")
            return TaskRun(
                t, resp.status_code, why, latency, resp.headers.get("x-tiergate-deployment", "-"), "escalated" in reason
            )

        t0 = time.perf_counter()
        out.runs = list(await asyncio.gather(*(one(t) for t in tasks)))
        out.wall_s = time.perf_counter() - t0
    return out


@dataclass(frozen=True)
class ArmResult:
    """One arm's line of the table: the cost from the gateway's own report, the rest from the replay."""

    arm: str
    tasks: int
    cost_usd: float
    failed: int
    escalated: int
    gate_failures: int
    p50_s: float
    p95_s: float
    served_by: dict[str, int]
    failures: dict[str, int]  # failed tasks by class
    cost_by_class: dict[str, float]  # from the report's cost by agent (replay-<task type>)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def result(run: ArmRun, report: dict[str, Any]) -> ArmResult:
    lat = sorted(r.latency_s for r in run.runs)
    served: dict[str, int] = {}
    failures: dict[str, int] = {}
    for r in run.runs:
        served[r.deployment] = served.get(r.deployment, 0) + 1
        if r.why is not None:
            failures[r.task.level] = failures.get(r.task.level, 0) + 1
    level_of = {f"replay-{t}": level for level, kinds in KINDS.items() for _, t, _ in kinds}
    by_class: dict[str, float] = {}
    for agent, group in report["by_agent"].items():
        level = level_of.get(agent, "other")
        by_class[level] = by_class.get(level, 0.0) + float(group["cost_usd"])
    return ArmResult(
        arm=run.arm,
        tasks=len(run.runs),
        cost_usd=float(report["cost_usd"]),
        failed=len(run.failed),
        escalated=sum(r.escalated for r in run.runs),
        gate_failures=int(report["gate_failures"]),
        p50_s=statistics.median(lat) if lat else 0.0,
        p95_s=lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else 0.0,
        served_by=dict(sorted(served.items())),
        failures=failures,
        cost_by_class=by_class,
    )


def table(results: list[ArmResult], time_scale: float) -> str:
    """Markdown: one line per arm, cost against the all-frontier arm."""
    base = next((r.cost_usd for r in results if r.arm == "frontier"), 0.0)
    scale = f" (÷ {time_scale:g}: at full model speed)" if time_scale > 0 else ""
    lines = [
        f"| arm | tasks | cost (ledger) | vs all-frontier | failed tasks | escalated | gate failures "
        f"| latency p50 / p95{scale} | served by |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        saved = f"{1 - r.cost_usd / base:.1%} cheaper" if base > 0 and r.arm != "frontier" else "—"
        div = time_scale if time_scale > 0 else 1.0
        served = ", ".join(f"{k} {v}" for k, v in r.served_by.items())
        fails = f"{r.failed}" + (
            f" ({', '.join(f'{k} {v}' for k, v in sorted(r.failures.items()))})" if r.failed else ""
        )
        lines.append(
            f"| {ARM_TITLES[r.arm]} | {r.tasks} | ${r.cost_usd:.4f} | {saved} | {fails} | {r.escalated} "
            f"| {r.gate_failures} | {r.p50_s / div:.2f} s / {r.p95_s / div:.2f} s | {served} |"
        )
    return "\n".join(lines)


def class_table(results: list[ArmResult]) -> str:
    """Markdown: where each arm's money went, by class of task."""
    levels = list(KINDS)
    lines = ["| arm | " + " | ".join(levels) + " |", "|---|" + "---:|" * len(levels)]
    for r in results:
        cells = " | ".join(f"${r.cost_by_class.get(level, 0.0):.4f}" for level in levels)
        lines.append(f"| {ARM_TITLES[r.arm]} | {cells} |")
    return "\n".join(lines)
