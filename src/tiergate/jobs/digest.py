"""The daily digest (seeds 000 and 003): spend, savings against all-frontier, groups, failures, forecast.

``build_digest`` reads the ledger (the day's report from ledger/report.py,
escalations, session kills, failed job runs, each budget's window so far);
``forecast`` and the two renderers are pure: Markdown for chat sinks and
files, HTML (autoescaped: agent and task names come from clients) for
e-mail.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from jinja2 import Environment, StrictUndefined

from tiergate.config.guardrails import BudgetConfig
from tiergate.core.catalog import Catalog
from tiergate.core.windows import window_bounds
from tiergate.ledger.base import Ledger
from tiergate.ledger.report import Group, Report, build_report, day_bounds

FORECAST_COLUMNS = {"global": None, "agent": "agent", "deployment": "deployment", "task": "task", "key": "key_name"}
TOP_GROUPS = 10


@dataclass(frozen=True, slots=True)
class Forecast:
    budget: str
    window: str
    limit_usd: float
    spent_usd: float
    projected_usd: float

    @property
    def over(self) -> bool:
        return self.projected_usd > self.limit_usd

    @property
    def left_usd(self) -> float:
        """What the window still allows (seed 003's "budget remaining")."""
        return max(0.0, self.limit_usd - self.spent_usd)


@dataclass
class Digest:
    day: str
    timezone: str
    report: Report
    escalations: int = 0
    fell_over: int = 0
    sessions_killed: int = 0
    job_failures: list[str] = field(default_factory=list)
    forecasts: list[Forecast] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return f"tiergate digest for {self.day}: ${self.report.cost_usd:.2f} spent"


def forecast(
    budget: str, window: str, limit_usd: float, spent: float, start: float, end: float, now: float
) -> Forecast:
    """Spend so far in the window, projected linearly to its end (pure)."""
    elapsed = max(now - start, 60.0)  # a minute in: no projection from a few seconds of traffic
    projected = spent if now >= end else spent * (end - start) / elapsed
    return Forecast(budget, window, limit_usd, spent, max(spent, projected))


def _day(period: str, now: float, tz: str) -> str:
    today = dt.datetime.fromtimestamp(now, ZoneInfo(tz)).date()
    return (today - dt.timedelta(days=1) if period == "yesterday" else today).isoformat()


def build_digest(
    ledger: Ledger, catalog: Catalog | None, budgets: list[BudgetConfig], *, period: str, now: float, tz: str
) -> Digest:
    day = _day(period, now, tz)
    start, end = day_bounds(day, tz)
    rep = build_report(ledger, day, day, catalog, tz=tz)
    d = Digest(day, tz, rep)
    rows = ledger.query(
        "SELECT reason, fallbacks FROM usage WHERE kind = 'request' AND ts >= ? AND ts < ? AND (fallbacks > 0 "
        "OR reason LIKE '%escalat%')",
        (start, end),
    )
    d.escalations = sum(1 for r in rows if "escalat" in (r["reason"] or ""))
    d.fell_over = sum(1 for r in rows if (r["fallbacks"] or 0) > 0)
    kills = ledger.session_kills(since=start)  # kills and revives since the day began: the day's kills only
    d.sessions_killed = sum(
        1 for k in kills if k["killed_reason"] and k["killed_at"] is not None and k["killed_at"] < end
    )
    failed = ledger.query(
        "SELECT job, COUNT(*) AS n FROM job_runs WHERE status IN ('failed', 'abandoned') AND requested >= ? "
        "AND requested < ? GROUP BY job ORDER BY job",
        (start, end),
    )
    d.job_failures = [f"{r['job']} ({r['n']})" for r in failed]
    for b in budgets:
        if b.limit_usd is None or b.scope not in FORECAST_COLUMNS:
            continue
        w_start, w_end = window_bounds(b.window, now, tz)
        column = FORECAST_COLUMNS[b.scope]
        if column is None:
            spent = ledger.query(
                "SELECT COALESCE(SUM(cost_usd), 0) AS c FROM usage WHERE kind = 'request' AND ts >= ? AND ts < ?",
                (w_start, w_end),
            )[0]["c"]
        else:
            grouped = ledger.query(
                f"SELECT {column} AS v, COALESCE(SUM(cost_usd), 0) AS c FROM usage WHERE kind = 'request' "
                f"AND ts >= ? AND ts < ? GROUP BY {column}",
                (w_start, w_end),
            )
            spent = max(
                [float(r["c"]) for r in grouped if r["v"] and fnmatch.fnmatchcase(r["v"], b.match or "*")], default=0.0
            )
        d.forecasts.append(forecast(b.id, b.window, b.limit_usd, float(spent), w_start, w_end, now))
    return d


def _top(groups: dict[str, Group]) -> list[tuple[str, Group]]:
    return sorted(groups.items(), key=lambda kv: (-kv[1].cost_usd, -kv[1].requests, kv[0]))[:TOP_GROUPS]


_MARKDOWN = """\
**Spend** ${{ '%.4f' % r.cost_usd }} on {{ r.requests }} requests: {{ local }} local, {{ r.requests - local }} cloud \
({{ '%.0f' % (r.local_share * 100) }}% served locally)
{% if r.frontier_deployment %}**Saved** ${{ '%.4f' % r.saved_vs_frontier_usd }} against all-frontier \
({{ r.frontier_deployment }}: ${{ '%.4f' % r.all_frontier_cost_usd }})
{% endif %}**Failures** {{ r.failed_requests }} requests, {{ r.failed_attempts }} failed attempts; \
{{ d.escalations }} escalations, {{ d.fell_over }} fell over to another deployment
**Sessions killed** {{ d.sessions_killed }}{% if d.job_failures %}; **failed jobs** {{ d.job_failures | join(', ') }}\
{% endif %}
{% for title, groups in sections %}
**By {{ title }}**
{% for k, g in groups %}- {{ k }}: ${{ '%.4f' % g.cost_usd }}, {{ g.requests }} req, \
{{ g.prompt_tokens }}/{{ g.completion_tokens }} tokens
{% else %}- none
{% endfor %}{% endfor %}{% if d.forecasts %}
**Budget forecast**
{% for f in d.forecasts %}- {{ f.budget }} ({{ f.window }}): ${{ '%.4f' % f.spent_usd }} so far, \
${{ '%.4f' % f.projected_usd }} projected of ${{ '%.2f' % f.limit_usd }}, \
${{ '%.4f' % f.left_usd }} left{% if f.over %} — OVER{% endif %}
{% endfor %}{% endif %}"""

_HTML = """\
<html><body>
<h2>{{ d.subject }}</h2>
<p><b>Spend</b> ${{ '%.4f' % r.cost_usd }} on {{ r.requests }} requests: {{ local }} local, \
{{ r.requests - local }} cloud ({{ '%.0f' % (r.local_share * 100) }}% served locally)</p>
{% if r.frontier_deployment %}<p><b>Saved</b> ${{ '%.4f' % r.saved_vs_frontier_usd }} against all-frontier \
({{ r.frontier_deployment }}: ${{ '%.4f' % r.all_frontier_cost_usd }})</p>{% endif %}
<p><b>Failures</b> {{ r.failed_requests }} requests, {{ r.failed_attempts }} failed attempts; \
{{ d.escalations }} escalations, {{ d.fell_over }} fell over</p>
<p><b>Sessions killed</b> {{ d.sessions_killed }}{% if d.job_failures %}; <b>failed jobs</b> \
{{ d.job_failures | join(', ') }}{% endif %}</p>
{% for title, groups in sections %}<h3>By {{ title }}</h3>
<table border="1" cellpadding="4"><tr><th>{{ title }}</th><th>cost</th><th>requests</th><th>tokens in/out</th></tr>
{% for k, g in groups %}<tr><td>{{ k }}</td><td>${{ '%.4f' % g.cost_usd }}</td><td>{{ g.requests }}</td>\
<td>{{ g.prompt_tokens }}/{{ g.completion_tokens }}</td></tr>
{% endfor %}</table>
{% endfor %}{% if d.forecasts %}<h3>Budget forecast</h3><ul>
{% for f in d.forecasts %}<li>{{ f.budget }} ({{ f.window }}): ${{ '%.4f' % f.spent_usd }} so far, \
${{ '%.4f' % f.projected_usd }} projected of ${{ '%.2f' % f.limit_usd }}, \
${{ '%.4f' % f.left_usd }} left{% if f.over %} <b>OVER</b>{% endif %}</li>
{% endfor %}</ul>{% endif %}
</body></html>"""


def _context(d: Digest) -> dict[str, object]:
    r = d.report
    sections = [("tier", _top(r.by_tier)), ("agent", _top(r.by_agent)), ("task", _top(r.by_task))]
    return {"d": d, "r": r, "sections": sections, "local": round(r.local_share * r.requests)}


def render_markdown(d: Digest) -> str:
    env = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    return env.from_string(_MARKDOWN).render(**_context(d)).strip() + "\n"


def render_html(d: Digest) -> str:
    env = Environment(undefined=StrictUndefined, autoescape=True)
    return env.from_string(_HTML).render(**_context(d))
