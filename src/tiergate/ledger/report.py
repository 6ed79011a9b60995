"""Where the money went, and what routing saved: served requests grouped by deployment, tier, agent, task and day.

Savings are measured two ways (docs/guardrails.md, "What routing saved"):

- against the **configured frontier**: every request's tokens priced at the
  reference deployment of the highest tier, the cheapest priced deployment of
  that tier (so the saving is never inflated by picking the dearest); this is
  the seeds' "vs all-frontier" baseline, and it does not move with the traffic;
- against the **priciest deployment used**: the highest tier that served any
  request in the period, its dearest deployment.

A counterfactual prices each row's own tokens, cache reads and writes
included, with the reference deployment's prices (its cost function, tiers and
all). Days are calendar days in the config's ``timezone``, as budget windows are.

Money counts every request row that reached a deployment, whatever its
status: a stream the client abandoned (499) or that was cut (502) is billed
for what was generated, and the report's spend must match what budgets
count. ``requests`` counts only those answered (status < 400).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from tiergate.core.catalog import Catalog, Deployment
from tiergate.core.recommend import GateFailureRow, ShadowRow
from tiergate.ledger.base import Ledger

GROUPS = ("deployment", "tier", "agent", "task", "day")


@dataclass
class Group:
    requests: int = 0  # that reached a deployment and were billed (answered, or abandoned or cut midway)
    prompt_tokens: int = 0  # cache reads and writes included
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    frontier_cost_usd: float = 0.0  # the same requests all on the configured frontier
    saved_vs_frontier_usd: float = 0.0
    priciest_used_cost_usd: float = 0.0  # the same requests all on the priciest deployment used
    saved_vs_priciest_used_usd: float = 0.0

    def add(self, row: Row, frontier: float, priciest: float) -> None:
        self.requests += not row.gated
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.cache_read_tokens += row.cache_read_tokens
        self.cache_write_tokens += row.cache_write_tokens
        self.cost_usd += row.cost_usd
        self.frontier_cost_usd += frontier
        self.saved_vs_frontier_usd = self.frontier_cost_usd - self.cost_usd
        self.priciest_used_cost_usd += priciest
        self.saved_vs_priciest_used_usd = self.priciest_used_cost_usd - self.cost_usd


@dataclass(frozen=True, slots=True)
class Row:
    """One request that reached a deployment, as the report reads it."""

    ts: float
    deployment: str
    tier: int | None
    local: bool
    agent: str | None
    task: str | None
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    answered: bool = True  # status < 400; a billed failure (abandoned or cut) is False
    gated: bool = False  # an answer that failed a quality gate: paid, not served (an attempt, not a request)


@dataclass
class Report:
    since: str
    until: str
    timezone: str
    requests: int = 0
    failed_requests: int = 0
    billed_failures: int = 0  # of failed_requests: reached a deployment and billed for what it generated
    failed_attempts: int = 0
    gate_failures: int = 0  # of failed_attempts: answers that failed a quality gate, paid for (in the cost)
    shadow_cost_usd: float = 0.0  # shadow comparisons' reference answers (their own budget; not in cost_usd)
    shadow: dict[str, dict[str, float]] = field(default_factory=dict)  # "served_by / task" -> compared, agreed
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    local_share: float = 0.0
    frontier_deployment: str | None = None
    all_frontier_cost_usd: float = 0.0
    saved_vs_frontier_usd: float = 0.0
    priciest_used_deployment: str | None = None
    all_priciest_used_cost_usd: float = 0.0
    saved_vs_priciest_used_usd: float = 0.0
    unpriced_deployments: list[str] = field(default_factory=list)  # served in the period, recorded at $0
    by_deployment: dict[str, Group] = field(default_factory=dict)
    by_tier: dict[str, Group] = field(default_factory=dict)
    by_agent: dict[str, Group] = field(default_factory=dict)
    by_task: dict[str, Group] = field(default_factory=dict)
    by_day: dict[str, Group] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def frontier_reference(catalog: Catalog) -> Deployment | None:
    """The configured frontier: the highest tier with a priced deployment, its cheapest one (then by name)."""
    priced = [d for d in catalog.deployments.values() if d.priced]
    if not priced:
        return None
    top = max(d.tier for d in priced)
    return min((d for d in priced if d.tier == top), key=lambda d: (d.input_per_mtok + d.output_per_mtok, d.name))


def priciest_used(catalog: Catalog, names: Iterable[str]) -> Deployment | None:
    """Of the deployments that served in the period, the dearest of the highest tier."""
    used = [catalog.deployments[n] for n in names if n in catalog.deployments]
    return max(used, key=lambda d: (d.tier, d.input_per_mtok + d.output_per_mtok, d.name)) if used else None


def period_bounds(since: str, until: str, tz: str = "UTC") -> tuple[float, float]:
    """[start of ``since``, end of ``until``) as epoch seconds, the days being calendar days in ``tz``."""
    zone = ZoneInfo(tz)
    start = dt.datetime.combine(dt.date.fromisoformat(since), dt.time(), zone)
    end = dt.datetime.combine(dt.date.fromisoformat(until) + dt.timedelta(days=1), dt.time(), zone)
    return start.timestamp(), end.timestamp()


def day_bounds(day: str, tz: str = "UTC") -> tuple[float, float]:
    """[start, end) of one calendar day in ``tz`` as epoch seconds."""
    return period_bounds(day, day, tz)


def day_of(ts: float, tz: str) -> str:
    return dt.datetime.fromtimestamp(ts, ZoneInfo(tz)).date().isoformat()


def _cache_tokens(extra: str | None) -> tuple[int, int]:
    """Cache reads and writes, kept in the row's extra JSON (router.context.cache_tokens_extra)."""
    if not extra or "cache_" not in extra:
        return 0, 0
    try:
        e = orjson.loads(extra)
        return int(e.get("cache_read_tokens") or 0), int(e.get("cache_write_tokens") or 0)
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0, 0


def build_report(
    ledger: Ledger, since: str, until: str | None = None, catalog: Catalog | None = None, *, tz: str = "UTC"
) -> Report:
    """The report for the days ``since``..``until`` (inclusive; one day when ``until`` is None) in ``tz``."""
    until = until or since
    start, end = period_bounds(since, until, tz)
    rows = ledger.query(
        "SELECT ts, kind, deployment, tier, local, agent, task, prompt_tokens, completion_tokens, cost_usd, status, "
        "reason, extra FROM usage WHERE kind IN ('request', 'attempt') AND ts >= ? AND ts < ?",  # the (kind, ts) index
        (start, end),
    )
    billed = []
    rep = Report(since=since, until=until, timezone=tz)
    for r in rows:
        if r["kind"] == "attempt":
            rep.failed_attempts += 1
            if r["reason"] == "gate failed":  # paid for: its tokens and cost are the period's too
                rep.gate_failures += 1
                billed.append(_row(r, answered=False, gated=True))
        elif not r["deployment"]:
            rep.failed_requests += 1
        else:
            if r["status"] >= 400:
                rep.failed_requests += 1
            billed.append(_row(r, answered=r["status"] < 400))
    _shadows(
        rep,
        ledger.query(
            "SELECT task, deployment, tier, cost_usd, extra FROM usage WHERE kind = 'shadow' AND ts >= ? AND ts < ?",
            (start, end),
        ),
    )
    return summarize(rep, billed, catalog)


def _shadows(rep: Report, rows: Sequence[Any]) -> None:
    """Shadow comparisons by the deployment that served and the task: compared, agreed, their cost."""
    for r in rows:
        extra = _extra(r["extra"])
        rep.shadow_cost_usd += r["cost_usd"]
        key = f"{extra.get('served_by', '-')} / {r['task'] or '-'}"
        if _asked_lower(r["tier"], extra):  # gates.shadow.lower: a lower tier asked what a higher one served
            key = f"{r['deployment']} for {key}"
        g = rep.shadow.setdefault(key, {"compared": 0, "agreed": 0})
        if "agree" in extra:
            g["compared"] += 1
            g["agreed"] += extra["agree"] == "1"


def _asked_lower(tier: int | None, extra: dict[str, Any]) -> bool:
    served = extra.get("served_tier")
    return tier is not None and isinstance(served, str) and served.isdigit() and tier < int(served)


def _extra(raw: str | None) -> dict[str, Any]:
    try:
        extra = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return extra if isinstance(extra, dict) else {}


def _row(r: Any, *, answered: bool, gated: bool = False) -> Row:
    return Row(
        r["ts"],
        r["deployment"],
        r["tier"],
        bool(r["local"]),
        r["agent"],
        r["task"],
        r["prompt_tokens"],
        r["completion_tokens"],
        *_cache_tokens(r["extra"]),
        r["cost_usd"],
        answered,
        gated,
    )


def summarize(rep: Report, billed: list[Row], catalog: Catalog | None) -> Report:
    """Totals, groups and both counterfactuals of the rows that reached a deployment (pure: table-tested)."""
    served = [r for r in billed if r.answered]
    rep.billed_failures = sum(1 for r in billed if not r.answered and not r.gated)
    frontier = frontier_reference(catalog) if catalog is not None else None
    priciest = priciest_used(catalog, {r.deployment for r in billed}) if catalog is not None else None
    total = Group()
    for r in billed:
        # all on the frontier, no answer would have failed a gate: a gated attempt has no counterpart there
        f, p = (0.0, 0.0) if r.gated else (_cost_on(frontier, r), _cost_on(priciest, r))
        total.add(r, f, p)
        for groups, key in (
            (rep.by_deployment, r.deployment),
            (rep.by_tier, f"tier {r.tier}"),
            (rep.by_agent, r.agent or "-"),
            (rep.by_task, r.task or "-"),
            (rep.by_day, day_of(r.ts, rep.timezone)),
        ):
            groups.setdefault(key, Group()).add(r, f, p)
    rep.requests = len(served)
    rep.prompt_tokens, rep.completion_tokens = total.prompt_tokens, total.completion_tokens
    rep.cache_read_tokens, rep.cache_write_tokens = total.cache_read_tokens, total.cache_write_tokens
    rep.cost_usd = total.cost_usd
    rep.local_share = sum(1 for r in served if r.local) / len(served) if served else 0.0
    if frontier is not None:
        rep.frontier_deployment = frontier.name
        rep.all_frontier_cost_usd, rep.saved_vs_frontier_usd = total.frontier_cost_usd, total.saved_vs_frontier_usd
    if priciest is not None:
        rep.priciest_used_deployment = priciest.name
        rep.all_priciest_used_cost_usd = total.priciest_used_cost_usd
        rep.saved_vs_priciest_used_usd = total.saved_vs_priciest_used_usd
    if catalog is not None:
        rep.unpriced_deployments = sorted(
            n for n in rep.by_deployment if n in catalog.deployments and not catalog.deployments[n].priced
        )
    rep.by_day = dict(sorted(rep.by_day.items()))
    return rep


def _cost_on(d: Deployment | None, r: Row) -> float:
    """What row ``r``'s tokens would have cost on ``d``."""
    return d.cost(r.prompt_tokens, r.completion_tokens, r.cache_read_tokens, r.cache_write_tokens) if d else 0.0


def _share(saved: float, baseline: float) -> str:
    return f" ({saved / baseline:.0%})" if baseline > 0 else ""


def format_report(rep: Report) -> str:
    period = rep.since if rep.since == rep.until else f"{rep.since} to {rep.until}"
    lines = [
        f"tiergate report for {period} ({rep.timezone})",
        f"  requests served: {rep.requests}   failed: {rep.failed_requests}"
        + (f" ({rep.billed_failures} billed for what they generated)" if rep.billed_failures else "")
        + "   "
        f"failed attempts (retried or fell over): {rep.failed_attempts}"
        + (f", of them answers that failed a gate (paid, escalated): {rep.gate_failures}" if rep.gate_failures else ""),
        f"  tokens in/out: {rep.prompt_tokens}/{rep.completion_tokens}"
        + (
            f"   cache read/write: {rep.cache_read_tokens}/{rep.cache_write_tokens}"
            if rep.cache_read_tokens or rep.cache_write_tokens
            else ""
        ),
        f"  cost: ${rep.cost_usd:.6f}   served locally: {rep.local_share:.0%}",
    ]
    if rep.frontier_deployment:
        lines.append(
            f"  all on the configured frontier ({rep.frontier_deployment}): ${rep.all_frontier_cost_usd:.6f}, "
            f"saved ${rep.saved_vs_frontier_usd:.6f}{_share(rep.saved_vs_frontier_usd, rep.all_frontier_cost_usd)}"
        )
    if rep.priciest_used_deployment:
        lines.append(
            f"  all on the priciest used ({rep.priciest_used_deployment}): ${rep.all_priciest_used_cost_usd:.6f}, "
            f"saved ${rep.saved_vs_priciest_used_usd:.6f}"
            f"{_share(rep.saved_vs_priciest_used_usd, rep.all_priciest_used_cost_usd)}"
        )
    if rep.shadow:
        lines.append(f"  shadow comparisons (reference answers: ${rep.shadow_cost_usd:.6f}, not in the cost above):")
        for key, sh in sorted(rep.shadow.items()):
            share = f" ({sh['agreed'] / sh['compared']:.0%})" if sh["compared"] else ""
            lines.append(f"    {key:<28} {int(sh['agreed'])} of {int(sh['compared'])} agree{share}")
    if rep.unpriced_deployments:
        lines.append(f"  WARNING: no price known for {', '.join(rep.unpriced_deployments)}: recorded at $0")
    for title in GROUPS:
        groups: dict[str, Group] = getattr(rep, f"by_{title}")
        lines.append(f"  by {title}:")
        ordered = groups.items() if title == "day" else sorted(groups.items(), key=lambda kv: -kv[1].requests)
        for k, g in ordered:
            lines.append(
                f"    {k:<28} {g.requests:>6} req  {g.prompt_tokens:>8} in  {g.completion_tokens:>8} out  "
                f"${g.cost_usd:.6f}  saved ${g.saved_vs_frontier_usd:.6f}"
            )
    return "\n".join(lines)


CSV_FIELDS = ("group", "key", *Group.__dataclass_fields__)


def format_csv(rep: Report) -> str:
    """One line per group (and a total line): for a spreadsheet."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    total = Group(
        rep.requests + rep.billed_failures,  # as in the groups: every billed request
        rep.prompt_tokens,
        rep.completion_tokens,
        rep.cache_read_tokens,
        rep.cache_write_tokens,
        rep.cost_usd,
        rep.all_frontier_cost_usd,
        rep.saved_vs_frontier_usd,
        rep.all_priciest_used_cost_usd,
        rep.saved_vs_priciest_used_usd,
    )
    w.writerow(["total", f"{rep.since}..{rep.until}", *_cells(total)])
    for title in GROUPS:
        for k, g in getattr(rep, f"by_{title}").items():
            w.writerow([title, k, *_cells(g)])
    return out.getvalue()


def _cells(g: Group) -> list[object]:
    return [round(v, 10) if isinstance(v, float) else v for v in asdict(g).values()]


def recommend_inputs(
    ledger: Ledger, since_ts: float
) -> tuple[dict[str, int], list[GateFailureRow], dict[str, list[int]]]:
    """What ``tiergate recommend`` weighs, since ``since_ts``: requests per task, the answers that failed a
    gate (task, tier, gate), and the tiers that served each task."""
    requests: dict[str, int] = {}
    served: dict[str, list[int]] = {}
    for r in ledger.query(
        "SELECT task, tier, count(*) AS n FROM usage WHERE kind = 'request' AND deployment IS NOT NULL "
        "AND task IS NOT NULL AND ts >= ? GROUP BY task, tier",
        (since_ts,),
    ):
        requests[r["task"]] = requests.get(r["task"], 0) + r["n"]
        if r["tier"] is not None:
            served.setdefault(r["task"], []).append(r["tier"])
    failures = [
        GateFailureRow(r["task"], r["tier"], str(r["error"] or "").removeprefix("gate ").split(":")[0])
        for r in ledger.query(
            "SELECT task, tier, error FROM usage WHERE kind = 'attempt' AND reason = 'gate failed' "
            "AND task IS NOT NULL AND tier IS NOT NULL AND ts >= ?",
            (since_ts,),
        )
    ]
    return requests, failures, served


def shadow_inputs(ledger: Ledger, since_ts: float) -> list[ShadowRow]:
    """The shadow comparisons ``tiergate recommend`` weighs for lowering, since ``since_ts``: each with a
    verdict, a task, the tier that served and the tier asked."""
    out = []
    for r in ledger.query(
        "SELECT task, tier, extra FROM usage WHERE kind = 'shadow' AND task IS NOT NULL AND tier IS NOT NULL "
        "AND ts >= ?",
        (since_ts,),
    ):
        extra = _extra(r["extra"])
        served, agree = extra.get("served_tier"), extra.get("agree")
        if isinstance(served, str) and served.isdigit() and agree in ("0", "1"):
            out.append(ShadowRow(r["task"], int(served), r["tier"], agree == "1"))
    return out
