"""tiergate jobs list | run NAME | history [NAME] | pause NAME | resume NAME.

The CLI never runs a job itself: ``run`` queues one in the ledger and the
running gateway's scheduler (any replica) claims it, so the run goes
through the real pipeline and happens once; ``--wait`` follows it to its end.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from tiergate.cli.app import jobs_app
from tiergate.cli.common import ConfigOpt, fail, open_ledger_or_fail
from tiergate.config.schema import TiergateConfig

FINAL = ("ok", "failed", "missed", "skipped", "abandoned")


def _open(config: Path | None) -> tuple[TiergateConfig, Any]:
    from tiergate.ledger.job_runs import JobRuns

    cfg, ledger = open_ledger_or_fail(config)
    return cfg, JobRuns(ledger, owner="cli")


def _known(cfg: TiergateConfig, name: str) -> None:
    from tiergate.config.references import listed

    if name not in {j.name for j in cfg.jobs}:
        fail(f"no job named {name!r}; configured jobs: {listed(j.name for j in cfg.jobs)}", code=1)


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@jobs_app.command("list")
def jobs_list(config: Path | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Each job: its schedule, next run, whether it is paused, and its last run."""
    from tiergate.ledger.job_runs import job_overview

    cfg, runs = _open(config)
    try:
        rows = job_overview(cfg.jobs, runs, default_tz=cfg.timezone, now=time.time())
    finally:
        runs.ledger.close()
    _show(rows, as_json=as_json, empty="no jobs configured (see docs/jobs.md)", line=_job_line)


def _job_line(r: dict[str, Any]) -> None:
    state = "paused" if r["paused"] else "disabled" if not r["enabled"] else "active"
    last = r["last_run"]
    last_text = f"{last['status']} at {_when(last['ended'] or last['requested'])}" if last else "never ran"
    typer.echo(
        f"{r['name']:<24} {r['kind']:<7} {r['schedule']:<16} {state:<8} next {r['next_run_local']}  "
        f"last: {last_text}  deliver: {', '.join(r['deliver']) or '-'}"
    )


def _show(rows: list[dict[str, Any]], *, as_json: bool, empty: str, line: Callable[[dict[str, Any]], None]) -> None:
    """Rows as JSON, or one line each (``empty`` when there are none)."""
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(empty)
    for r in rows:
        line(r)


@jobs_app.command("run")
def jobs_run(
    name: str = typer.Argument(..., help="the job to run now, once"),
    config: Path | None = ConfigOpt,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="follow the run to its end"),
    timeout: float = typer.Option(900, help="seconds to wait for the outcome"),
) -> None:
    """Queue one run now; the running gateway picks it up within about a second."""

    cfg, runs = _open(config)
    try:
        _known(cfg, name)
        run_id = runs.request(name, now=time.time())
        typer.echo(f"job {name}: run {run_id} requested")
        if not wait:
            return
        deadline = time.monotonic() + timeout
        rec = runs.run(run_id)
        while rec is not None and rec["status"] not in FINAL and time.monotonic() < deadline:
            time.sleep(0.5)
            rec = runs.run(run_id)
    finally:
        runs.ledger.close()
    if rec is None or rec["status"] not in FINAL:
        state = rec["status"] if rec else "gone"
        hint = " (no gateway claimed it: is 'tiergate serve' running with this config?)" if state == "requested" else ""
        fail(f"run {run_id} still {state} after {timeout:g}s{hint}", code=1)
    _print_run(rec)
    if rec["status"] != "ok":
        raise typer.Exit(1)


def _print_run(r: dict[str, Any]) -> None:
    took = f"{r['ended'] - r['started']:.1f}s" if r["ended"] and r["started"] else "-"
    typer.echo(
        f"{_when(r['started'] or r['requested'])}  {r['job']:<24} {r['run_id']}  {r['trigger']:<8} {r['status']:<9} "
        f"{took:>7}  {r['deployment'] or '-':<16} ${r['cost_usd']:.6f}  delivered: {_delivered(r['delivered'])}"
        + (f"\n    error: {r['error']}" if r["error"] else "")
    )


def _delivered(raw: str | None) -> str:
    if not raw:
        return "-"
    try:
        d = json.loads(raw)
    except ValueError:
        return raw
    return ", ".join(f"{k} {'ok' if v == 'ok' else 'FAILED'}" for k, v in d.items()) or "-"


@jobs_app.command("history")
def jobs_history(
    name: str | None = typer.Argument(None, help="one job (default all)"),
    config: Path | None = ConfigOpt,
    limit: int = typer.Option(20, min=1, max=1000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run records, newest first: start, status, duration, deployment, cost, where it was delivered."""
    cfg, runs = _open(config)
    try:
        if name is not None:
            _known(cfg, name)
        rows = runs.history(name, limit=limit)
    finally:
        runs.ledger.close()
    _show(rows, as_json=as_json, empty="no runs recorded", line=_print_run)


def _set_paused(name: str, config: Path | None, paused: bool) -> None:
    from tiergate.ledger.job_runs import PAUSE_FLAG

    cfg, runs = _open(config)
    try:
        _known(cfg, name)
        runs.ledger.set_flag(PAUSE_FLAG + name, "1" if paused else None)
    finally:
        runs.ledger.close()
    typer.echo(f"job {name} {'paused' if paused else 'resumed'} (running gateways see it within a second)")


@jobs_app.command("pause")
def jobs_pause(name: str = typer.Argument(...), config: Path | None = ConfigOpt) -> None:
    """Stop scheduling a job (a run in flight finishes); its slots while paused are not caught up."""
    _set_paused(name, config, True)


@jobs_app.command("resume")
def jobs_resume(name: str = typer.Argument(...), config: Path | None = ConfigOpt) -> None:
    _set_paused(name, config, False)
