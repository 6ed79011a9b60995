"""Where the money went: a day's requests grouped by deployment, tier, agent and task.

The counterfactual ("on the most expensive tier used") prices every
request's tokens at the priciest deployment that served any request that
day, so the saving from local and cheap tiers is visible in one number.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from tiergate.core.catalog import Catalog
from tiergate.core.money import cost_usd
from tiergate.ledger.base import Ledger


@dataclass
class Group:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class Report:
    day: str
    requests: int
    failed_requests: int
    failed_attempts: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    local_share: float
    all_frontier_cost_usd: float
    frontier_deployment: str | None
    by_deployment: dict[str, Group] = field(default_factory=dict)
    by_tier: dict[str, Group] = field(default_factory=dict)
    by_agent: dict[str, Group] = field(default_factory=dict)
    by_task: dict[str, Group] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def day_bounds(day: str) -> tuple[float, float]:
    """[start, end) of a local calendar day as epoch seconds."""
    d = dt.date.fromisoformat(day)
    start = dt.datetime.combine(d, dt.time()).astimezone()
    return start.timestamp(), (start + dt.timedelta(days=1)).timestamp()


def build_report(ledger: Ledger, day: str, catalog: Catalog | None = None) -> Report:
    start, end = day_bounds(day)
    rows = ledger.query(
        "SELECT kind, deployment, tier, local, agent, task, prompt_tokens, completion_tokens, cost_usd, status "
        "FROM usage WHERE kind IN ('request', 'attempt') AND ts >= ? AND ts < ?",  # the (kind, ts) index
        (start, end),
    )
    served = [r for r in rows if r["kind"] == "request" and r["status"] < 400 and r["deployment"]]
    rep = Report(
        day=day,
        requests=len(served),
        failed_requests=sum(1 for r in rows if r["kind"] == "request" and (r["status"] >= 400 or not r["deployment"])),
        failed_attempts=sum(1 for r in rows if r["kind"] == "attempt"),
        prompt_tokens=sum(r["prompt_tokens"] for r in served),
        completion_tokens=sum(r["completion_tokens"] for r in served),
        cost_usd=sum(r["cost_usd"] for r in served),
        local_share=(sum(1 for r in served if r["local"]) / len(served)) if served else 0.0,
        all_frontier_cost_usd=0.0,
        frontier_deployment=None,
    )
    for r in served:
        for groups, key in (
            (rep.by_deployment, r["deployment"]),
            (rep.by_tier, f"tier {r['tier']}"),
            (rep.by_agent, r["agent"] or "-"),
            (rep.by_task, r["task"] or "-"),
        ):
            g = groups.setdefault(key, Group())
            g.requests += 1
            g.prompt_tokens += r["prompt_tokens"]
            g.completion_tokens += r["completion_tokens"]
            g.cost_usd += r["cost_usd"]
    if catalog is not None:
        used = [catalog.deployments[n] for n in rep.by_deployment if n in catalog.deployments]
        if used:
            top = max(used, key=lambda d: (d.tier, d.input_per_mtok + d.output_per_mtok))
            rep.frontier_deployment = top.name
            rep.all_frontier_cost_usd = cost_usd(
                top.input_per_mtok, top.output_per_mtok, rep.prompt_tokens, rep.completion_tokens
            )
    return rep


def format_report(rep: Report) -> str:
    lines = [
        f"tiergate report for {rep.day}",
        f"  requests served: {rep.requests}   failed: {rep.failed_requests}   "
        f"failed attempts (retried or fell over): {rep.failed_attempts}",
        f"  tokens in/out: {rep.prompt_tokens}/{rep.completion_tokens}",
        f"  cost: ${rep.cost_usd:.6f}   served locally: {rep.local_share:.0%}",
    ]
    if rep.frontier_deployment:
        saved = rep.all_frontier_cost_usd - rep.cost_usd
        lines.append(
            f"  same traffic all on {rep.frontier_deployment}: ${rep.all_frontier_cost_usd:.6f} (saved ${saved:.6f})"
        )
    for title, groups in (
        ("deployment", rep.by_deployment),
        ("tier", rep.by_tier),
        ("agent", rep.by_agent),
        ("task", rep.by_task),
    ):
        lines.append(f"  by {title}:")
        for k, g in sorted(groups.items(), key=lambda kv: -kv[1].requests):
            lines.append(
                f"    {k:<28} {g.requests:>6} req  {g.prompt_tokens:>8} in  "
                f"{g.completion_tokens:>8} out  ${g.cost_usd:.6f}"
            )
    return "\n".join(lines)
