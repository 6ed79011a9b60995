"""tiergate report | explain: where the money went, and why a request would be routed where it would."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import typer

from tiergate.cli.app import app
from tiergate.cli.common import ConfigOpt, fail, iso_date, load_config_or_fail, open_ledger_or_fail
from tiergate.config.catalog import build_catalog
from tiergate.core.errors import TiergateError


@app.command()
def report(
    config: Path | None = ConfigOpt,
    day: str | None = typer.Option(None, help="one day, YYYY-MM-DD (default today in the config's timezone)"),
    since: str | None = typer.Option(None, help="first day, YYYY-MM-DD (until defaults to today)"),
    until: str | None = typer.Option(None, help="last day, YYYY-MM-DD, inclusive"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    as_csv: bool = typer.Option(False, "--csv", help="one CSV line per group, for a spreadsheet"),
) -> None:
    """Requests, tokens, cost and savings by deployment, tier, agent, task and day (days in the config's timezone)."""
    from zoneinfo import ZoneInfo

    from tiergate.ledger.report import build_report, format_csv, format_report

    if as_json and as_csv:
        fail("give --json or --csv, not both")
    first, last, one = iso_date("--since", since), iso_date("--until", until), iso_date("--day", day)
    if one is not None and (first or last):
        fail("give --day, or --since/--until, not both")
    cfg, ledger = open_ledger_or_fail(config)
    today = dt.datetime.now(ZoneInfo(cfg.timezone)).date().isoformat()
    last = one or last or today
    first = one or first or last
    if first > last:
        ledger.close()
        fail(f"--since {first} is after --until {last}")
    try:
        rep = build_report(ledger, first, last, build_catalog(cfg), tz=cfg.timezone)
    finally:
        ledger.close()
    typer.echo(json.dumps(rep.to_dict(), indent=2) if as_json else format_csv(rep) if as_csv else format_report(rep))


@app.command()
def explain(
    request_file: Path = typer.Argument(..., help="a chat completion request body (JSON)"),
    config: Path | None = ConfigOpt,
    header: list[str] = typer.Option([], "--header", "-H", help="request header, e.g. 'X-Tiergate-Task: coding'"),
) -> None:
    """Print the routing plan and its reasons for a request, without sending anything."""
    from tiergate.api.explain import explain_request

    cfg, _ = load_config_or_fail(config)
    headers = {}
    for h in header:
        k, sep, v = h.partition(":")
        if not sep:
            fail(f"--header: expected 'Name: value', got {h!r}")
        headers[k.strip()] = v.strip()
    try:
        typer.echo(explain_request(cfg, request_file.read_bytes(), headers))
    except OSError as exc:
        fail(f"cannot read {request_file}: {exc.strerror}")
    except TiergateError as exc:
        fail(f"no route: {exc.message}", code=1)


@app.command()
def recommend(
    config: Path | None = ConfigOpt,
    days: int = typer.Option(7, min=1, max=366, help="the days of ledger to weigh"),
    min_requests: int = typer.Option(
        20, min=1, help="the least requests (or, to lower it, shadow comparisons) of a task to advise on it"
    ),
    threshold: float = typer.Option(0.2, min=0.0, max=1.0, help="failure rate at the starting tier that advises"),
    agreement: float = typer.Option(
        0.9, min=0.0, max=1.0, help="share of shadow comparisons a lower tier must agree in to advise lowering"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Tasks whose answers at their starting tier often fail a quality gate: start them a tier higher;
    tasks whose answers a lower tier matched in shadow comparisons (gates.shadow.lower): start them lower.

    Each task that fails at its tier pays twice (the failed answer, then the one a tier up); the evidence
    is counted from the ledger's billed attempts. The evidence to lower one is the shadow comparisons of
    its answers, served at or above its tier, against a lower tier (docs/gates.md).
    """
    import time

    from tiergate.core.recommend import lowering
    from tiergate.core.recommend import recommend as advise
    from tiergate.ledger.report import recommend_inputs, shadow_inputs

    cfg, ledger = open_ledger_or_fail(config)
    since = time.time() - days * 86400
    try:
        requests, failures, served = recommend_inputs(ledger, since)
        shadows = shadow_inputs(ledger, since)
    finally:
        ledger.close()
    recs = advise(cfg.tasks, requests, failures, served, min_requests=min_requests, threshold=threshold)
    lows = lowering(cfg.tasks, shadows, min_requests=min_requests, agreement=agreement)
    if as_json:
        out = [{"direction": "raise", **dataclasses.asdict(r), "failure_rate": r.failure_rate} for r in recs]
        out += [{"direction": "lower", **dataclasses.asdict(r), "agreement": r.agreement} for r in lows]
        typer.echo(json.dumps(out, indent=2))
        return
    if not recs and not lows:
        weighed = ", ".join(f"{t} {n}" for t, n in sorted(requests.items())) or "none"
        typer.echo(f"no task to move: none failed a gate at its tier in {threshold:.0%} of {min_requests}+ requests")
        typer.echo(f"  requests per task over {days} days: {weighed}")
        compared: dict[str, int] = {}
        for s in shadows:
            compared[s.task] = compared.get(s.task, 0) + 1
        shown = ", ".join(f"{t} {n}" for t, n in sorted(compared.items())) or "none (gates.shadow.lower)"
        typer.echo(f"  shadow comparisons per task: {shown}; lowering needs {agreement:.0%} agreement")
        return
    for line in [r.line() for r in recs] + [r.line() for r in lows]:
        typer.echo(line)
