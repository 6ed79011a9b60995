"""tiergate emergency | models | sessions: operate a running fleet (its gateways follow the ledger within a second)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import typer

from tiergate.cli.app import app, sessions_app
from tiergate.cli.common import ConfigOpt, fail, load_config_or_fail, open_ledger_or_fail
from tiergate.config.schema import TiergateConfig
from tiergate.core.errors import TiergateError


@app.command()
def emergency(
    state: str = typer.Argument(..., help="on | off | status"),
    reason: str = typer.Option("switched on by an operator", help="why (shown in /health and X-Tiergate-Reason)"),
    config: Path | None = ConfigOpt,
) -> None:
    """Emergency mode: every request goes to local tiers only. Running gateways follow within a second."""
    from tiergate.guardrails.budgets import EMERGENCY_FLAG

    if state not in ("on", "off", "status"):
        fail(f"expected on, off or status, got {state!r}")
    cfg, ledger = open_ledger_or_fail(config)
    if state != "status":
        ledger.set_flag(EMERGENCY_FLAG, reason if state == "on" else None)
    current = ledger.flags().get(EMERGENCY_FLAG)
    ledger.close()
    typer.echo(f"emergency mode: on ({current})" if current else "emergency mode: off")
    if state != "status":
        _send_emergency_alert(cfg, reason if state == "on" else None)


def _send_emergency_alert(cfg: TiergateConfig, reason: str | None) -> None:
    """The alert POST /admin/emergency sends, to the config's sinks; a failed delivery is reported, not fatal."""
    from tiergate.guardrails.alerts import AlertDispatcher, emergency_alert

    async def send() -> tuple[int, int]:
        dispatcher = AlertDispatcher(cfg.alerts)
        dispatcher.emit(emergency_alert(reason, source="cli"))
        await dispatcher.drain(timeout_s=30)
        await dispatcher.close()
        return len(dispatcher.sent), len(cfg.alerts) - len(dispatcher.sent)

    if not cfg.alerts:
        return
    sent, failed = asyncio.run(send())
    typer.echo(f"alert sent to {sent} of {sent + failed} sink(s)", err=failed > 0)


@app.command()
def models(config: Path | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Managed local models of the running gateway: state, memory, last used, requests, load time."""
    import urllib.error
    import urllib.request

    cfg, _ = load_config_or_fail(config)
    if cfg.local_models is None:
        fail("no local_models section in the config", code=1)
    key = cfg.auth.master_key.get_secret_value() if cfg.auth.master_key else ""
    req = urllib.request.Request(
        f"http://{cfg.server.host}:{cfg.server.port}/admin/models", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            rows = json.loads(resp.read())
    except (urllib.error.URLError, OSError) as exc:
        fail(
            f"cannot reach the gateway at {cfg.server.host}:{cfg.server.port} ({exc}); is 'tiergate serve' running?",
            code=1,
        )
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        last = dt.datetime.fromtimestamp(r["last_used"]).isoformat(timespec="seconds") if r.get("last_used") else "-"
        load = f"{r['load_time_s']:.1f}s" if r.get("load_time_s") is not None else "-"
        typer.echo(
            f"{r['name']:<20} {r['state']:<10} {r.get('memory_mb') or 0:>7} MB  served {r['requests_served']:>6}"
            f"  last used {last}  load {load}  {r.get('reason') or ''}"
        )


@sessions_app.command("list")
def sessions_list(config: Path | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Sessions with first/last seen, requests, tokens, cost, largest context share and kill state.

    "default" marks an implicit session (requests without X-Tiergate-Session, one per key and
    agent and day); a kill shows as KILLED until it expires (guardian.kill_ttl) or is revived.
    """
    import time

    from tiergate.guardrails.guardian import kill_in_force
    from tiergate.guardrails.session_rows import rules_from
    from tiergate.ledger.records import SESSION_COLUMNS

    cfg, ledger = open_ledger_or_fail(config)
    rows = [{c: r[c] for c in SESSION_COLUMNS} for r in ledger.sessions()]
    ledger.close()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    rules, now = rules_from(cfg.guardian), time.time()
    for r in rows:
        last = dt.datetime.fromtimestamp(r["last_seen"]).isoformat(timespec="seconds")
        age_h = (r["last_seen"] - r["first_seen"]) / 3600
        status = "active"
        if r["killed_reason"]:
            in_force = kill_in_force(r["killed_at"], rules, now)
            status = f"KILLED ({r['killed_reason']})" if in_force else f"kill expired ({r['killed_reason']})"
        elif r["revived_at"]:
            status = "active (revived)"
        typer.echo(
            f"{r['session']:<36} agent={r['agent'] or '-':<14} {r['requests']:>5} req  "
            f"${r['cost_usd']:.4f}  ctx {r['max_context_ratio']:.0%}  {age_h:.1f}h  last {last}  "
            f"{'default ' if r['implicit'] else ''}{status}"
        )


@sessions_app.command("kill")
def sessions_kill(
    session: str | None = typer.Argument(None, help="a session id (from 'tiergate sessions list')"),
    agent: str | None = typer.Option(None, "--agent", help="every session of this agent"),
    over_usd: float | None = typer.Option(None, "--all-over-usd", help="every session that spent more"),
    include_default: bool = typer.Option(
        False, "--include-default", help="bulk kills also stop default sessions (requests without a session header)"
    ),
    reason: str = typer.Option("killed by an operator", help="shown to the agent in the 403"),
    config: Path | None = ConfigOpt,
) -> None:
    """Stop sessions: their next request gets 403 with the reason, until guardian.kill_ttl or a revive.

    An unknown id is an error (exit 1). --agent and --all-over-usd spare default sessions (one
    per key and agent and day, for requests that name no session) unless --include-default.
    """
    if session is None and agent is None and over_usd is None:
        fail("give a session id, --agent NAME or --all-over-usd X")
    cfg, ledger = open_ledger_or_fail(config)
    try:
        kills = ledger.kill_sessions(
            reason,
            session=session,
            agent=agent,
            over_usd=over_usd,
            include_implicit=include_default,
            kill_ttl_s=cfg.guardian.kill_ttl,
        )
    except TiergateError as exc:
        fail(exc.message, code=1)
    finally:
        ledger.close()
    if session is not None and not kills.killed:
        typer.echo(f"session {session!r} is already killed; nothing changed")
        return
    typer.echo(f"killed {len(kills.killed)} session(s)" + (f": {', '.join(kills.killed)}" if kills.killed else ""))
    if kills.spared:
        typer.echo(
            f"spared {len(kills.spared)} default session(s) (requests without a session header; "
            f"--include-default kills them too): {', '.join(kills.spared)}"
        )


@sessions_app.command("revive")
def sessions_revive(
    session: str = typer.Argument(..., help="a killed session's id"), config: Path | None = ConfigOpt
) -> None:
    """Lift a session's kill: it starts afresh (totals from zero); running gateways follow within a second."""
    import time

    cfg, ledger = open_ledger_or_fail(config)
    try:
        revived = ledger.revive_session(session, now=time.time(), kill_ttl_s=cfg.guardian.kill_ttl)
    except TiergateError as exc:
        fail(exc.message, code=1)
    finally:
        ledger.close()
    if not revived:
        fail(f"session {session!r} is not killed; nothing to revive", code=1)
    typer.echo(f"session {session!r} revived: its next request starts it afresh")
