"""tiergate serve | check-config | import-litellm | migrate | keys | report | explain | jobs (cli_jobs.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from tiergate.config.catalog import build_catalog
from tiergate.config.loading import find_config, load_config
from tiergate.config.schema import TiergateConfig
from tiergate.core.errors import ConfigError, TiergateError

if TYPE_CHECKING:
    from tiergate.core.catalog import Deployment
    from tiergate.ledger.base import Ledger

app = typer.Typer(add_completion=False, no_args_is_help=True, help="A local-first hybrid LLM gateway for agent fleets.")
keys_app = typer.Typer(no_args_is_help=True, help="Virtual keys: create, list, revoke.")
app.add_typer(keys_app, name="keys")

ConfigOpt = typer.Option(None, "--config", "-c", help="config file (default ./tiergate.yaml, then the user config dir)")


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"tiergate: {message}", err=True)
    raise typer.Exit(code)


def _load(config: Path | None, *, allow_discovery: bool = False) -> tuple[TiergateConfig, str]:
    try:
        path = find_config(config)
        if path is not None:
            return load_config(path), str(path)
        if allow_discovery:
            from tiergate.local.autoconfig import discover_config

            cfg, summary = asyncio.run(discover_config())
            typer.echo(summary, err=True)
            return cfg, "discovered (no config file)"
        return TiergateConfig(), "defaults (no config file)"
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


def _describe(cfg: TiergateConfig) -> str:

    cat = build_catalog(cfg)
    lines = ["tiers:"]
    for tier, names in cat.tiers().items():
        parts = []
        for n in names:
            d = cat.deployments[n]
            where = "local" if d.local else d.provider
            only = ", embeddings only" if "chat" not in d.capabilities else ""
            parts.append(f"{n} ({d.model} via {where}, {d.api}{only}, {_price_text(d)})")
        lines.append(f"  {tier}: " + "; ".join(parts))
    if cat.wildcards:
        lines.append("wildcard routes (the client's model name passed through): " + ", ".join(cat.wildcards))
    lines.append("aliases:" + ("" if cat.aliases else " none"))
    lines += [
        f"  {a} -> {', '.join(m)}" + (" (balanced round-robin, failing over in turn)" if a in cat.balanced else "")
        for a, m in cat.aliases.items()
    ]
    lines.append("tasks (minimum tier):" + ("" if cat.tasks else " none"))
    lines += [f"  {t}: {tier}" for t, tier in cat.tasks.items()]
    if cat.fallbacks:
        lines.append("fallbacks:")
        lines += [f"  {s} -> {', '.join(d)}" for s, d in cat.fallbacks.items()]
    lines.append("budgets:" + ("" if cfg.budgets else " none"))
    lines += [
        f"  {b.id}: {b.scope}{f' {b.match}' if b.match else ''}, "
        + ", ".join(
            x for x in (f"${b.limit_usd:g}" if b.limit_usd else "", f"{b.max_calls} calls" if b.max_calls else "") if x
        )
        + f" per {b.window}, then {b.action}"
        for b in cfg.budgets
    ]
    lines.append(f"ledger: {cfg.ledger_display}")
    return "\n".join(lines)


def _price_text(d: Deployment) -> str:
    """A deployment's prices and where they came from, as check-config shows them."""
    if not d.priced:
        return "NO PRICE (recorded at $0)"
    r = d.rates
    same = (r.cache_read, r.cache_write) == (r.input, r.input)
    cache = "" if same else f", cache read/write ${r.cache_read:g}/${r.cache_write:g}"
    tiers = f", dearer past {d.price_tiers[0].above} prompt tokens" if d.price_tiers else ""
    return f"${r.input:g}/${r.output:g} per Mtok{cache}{tiers}, from {d.price_source}"


def unpriced_warnings(cfg: TiergateConfig) -> list[str]:
    """One line per cloud deployment that nothing prices: its calls would be recorded, and budgeted, at $0."""
    cat = build_catalog(cfg)
    return [
        f"warning: deployment {n!r} ({cat.deployments[n].model} via {cat.deployments[n].provider}) has no price: "
        "the price database does not know the model and there is no price: line; its calls are recorded at $0 "
        "(add price: {input_per_mtok: ..., output_per_mtok: ...})"
        for n in cat.unpriced()
    ]


@app.command("check-config")
def check_config(
    file: Path = typer.Argument(..., help="config file to validate"),
    strict: bool = typer.Option(False, "--strict", help="warnings fail the check too (exit 2)"),
) -> None:
    """Validate a config, list every problem at once, print the resolved tiers, prices and aliases.

    Exit 2 when an error (with --strict, also a warning) was found; warnings alone exit 0.
    """
    from tiergate.config.litellm import TIER_RULE, is_litellm_config
    from tiergate.config.loading import check_config_dict, environment, read_config_file

    try:
        raw = read_config_file(file)
    except ConfigError as exc:
        _fail(str(exc))
    cfg, problems = check_config_dict(raw, env=environment(), exists=Path.is_file)
    errors = [f"error: {p}" for p in problems if not p.warning]
    warnings = [f"warning: {p}" for p in problems if p.warning]
    warnings += unpriced_warnings(cfg) if cfg is not None else []
    for line in (*errors, *warnings):
        typer.echo(f"  {line}", err=True)
    if errors or (strict and warnings):
        _fail(f"{file}: {_count(len(errors), 'error')}" + (f", {_count(len(warnings), 'warning')}" if warnings else ""))
    assert cfg is not None
    typer.echo(f"{file}: ok" + (f" ({_count(len(warnings), 'warning')})" if warnings else ""))
    if is_litellm_config(raw):
        typer.echo(f"LiteLLM config: {TIER_RULE}")
    typer.echo(_describe(cfg))


@app.command("import-litellm")
def import_litellm(
    file: Path = typer.Argument(..., help="a LiteLLM proxy config.yaml"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write here (default: print)"),
    force: bool = typer.Option(False, "--force", help="overwrite --output if it exists"),
) -> None:
    """Write the native tiergate.yaml a LiteLLM proxy config means, with comments for what changed."""
    from tiergate.config.litellm import is_litellm_config
    from tiergate.config.litellm_import import render_native
    from tiergate.config.loading import read_config_file

    try:
        raw = read_config_file(file)
        if not is_litellm_config(raw):
            _fail(f"{file}: not a LiteLLM proxy config (no model_list, or it has providers/deployments)")
        text = render_native(raw, source=str(file))
    except ConfigError as exc:
        _fail(f"{file}: {exc}")
    if output is None:
        typer.echo(text, nl=False)
        return
    if output.exists() and not force:
        _fail(f"{output} exists; pass --force to overwrite it")
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}; check it with: tiergate check-config {output}", err=True)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


@app.command()
def serve(
    config: Path | None = ConfigOpt,
    host: str | None = typer.Option(None, help="bind address (default server.host, 127.0.0.1)"),
    port: int | None = typer.Option(None, help="port (default server.port, 4000; 0 picks a free one)"),
    workers: int = typer.Option(1, help="worker processes sharing the port (use the cores)"),
    log_level: str = typer.Option("warning", help="log level"),
) -> None:
    """Run the gateway until SIGTERM/SIGINT; usage records are flushed before exit."""
    from tiergate.server import check_workers, run_loop, run_workers
    from tiergate.server import serve as serve_one

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg, source = _load(config, allow_discovery=True)
    bind_host, bind_port = host or cfg.server.host, cfg.server.port if port is None else port
    try:
        check_workers(cfg, workers)
        if workers > 1:
            run_workers(cfg, source, bind_host, bind_port, workers)
        else:
            run_loop(serve_one(cfg, source, bind_host, bind_port))
    except TiergateError as exc:  # config errors, shared state unreachable at start
        _fail(exc.message)
    except OSError as exc:
        _fail(f"cannot listen on {bind_host}:{bind_port}: {exc.strerror}")


def _ledger(config: Path | None) -> tuple[TiergateConfig, Ledger]:
    from tiergate.core.errors import LedgerUnavailable
    from tiergate.ledger.base import open_ledger

    cfg, _ = _load(config)
    try:
        return cfg, open_ledger(cfg.ledger_url, spool=cfg.ledger_spool_dir, timeout_s=cfg.ledger_timeout_s)
    except LedgerUnavailable as exc:
        _fail(exc.message, code=1)


@app.command()
def migrate(config: Path | None = ConfigOpt) -> None:
    """Bring the ledger's schema up to date (every start does it too) and print what was applied."""
    cfg, ledger = _ledger(config)
    applied = ledger.applied_migrations
    ledger.close()
    for name in applied:
        typer.echo(f"applied {name}")
    typer.echo(f"ledger {cfg.ledger_display}: schema up to date" + ("" if applied else " (nothing to apply)"))


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="a unique name for the key"),
    agent: str | None = typer.Option(None, "--agent", help="attribute this key's traffic to an agent"),
    config: Path | None = ConfigOpt,
) -> None:
    """Issue a virtual key. It is shown once; only its hash is stored."""
    _, ledger = _ledger(config)
    try:
        key = ledger.create_key(name, agent=agent)
    except ValueError as exc:
        _fail(str(exc))
    finally:
        ledger.close()
    typer.echo(key)
    typer.echo(
        f"key {name!r} created{f' for agent {agent!r}' if agent else ''}; store it now, it is not shown again", err=True
    )


@keys_app.command("list")
def keys_list(config: Path | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """List keys (name, prefix, agent, created, revoked); never the keys themselves."""
    _, ledger = _ledger(config)
    rows = ledger.list_keys()
    ledger.close()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {"name": r.name, "prefix": r.prefix, "agent": r.agent, "created": r.created, "revoked": r.revoked}
                    for r in rows
                ]
            )
        )
        return
    for r in rows:
        status = "revoked" if r.revoked else "active"
        created = dt.datetime.fromtimestamp(r.created).isoformat(timespec="seconds")
        typer.echo(f"{r.name:<24} {r.prefix}...  agent={r.agent or '-':<16} {status:<8} created {created}")


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(...), config: Path | None = ConfigOpt) -> None:
    """Revoke a key; running gateways refuse it within about a second."""
    _, ledger = _ledger(config)
    ok = ledger.revoke_key(name)
    ledger.close()
    if not ok:
        _fail(f"no active key named {name!r}", code=1)
    typer.echo(f"key {name!r} revoked")


def _date(option: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        _fail(f"{option}: expected YYYY-MM-DD, got {value!r}")


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
        _fail("give --json or --csv, not both")
    first, last, one = _date("--since", since), _date("--until", until), _date("--day", day)
    if one is not None and (first or last):
        _fail("give --day, or --since/--until, not both")
    cfg, ledger = _ledger(config)
    today = dt.datetime.now(ZoneInfo(cfg.timezone)).date().isoformat()
    last = one or last or today
    first = one or first or last
    if first > last:
        ledger.close()
        _fail(f"--since {first} is after --until {last}")
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

    cfg, _ = _load(config)
    headers = {}
    for h in header:
        k, sep, v = h.partition(":")
        if not sep:
            _fail(f"--header: expected 'Name: value', got {h!r}")
        headers[k.strip()] = v.strip()
    try:
        typer.echo(explain_request(cfg, request_file.read_bytes(), headers))
    except OSError as exc:
        _fail(f"cannot read {request_file}: {exc.strerror}")
    except TiergateError as exc:
        _fail(f"no route: {exc.message}", code=1)


@app.command()
def models(config: Path | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Managed local models of the running gateway: state, memory, last used, requests, load time."""
    import urllib.error
    import urllib.request

    cfg, _ = _load(config)
    if cfg.local_models is None:
        _fail("no local_models section in the config", code=1)
    key = cfg.auth.master_key.get_secret_value() if cfg.auth.master_key else ""
    req = urllib.request.Request(
        f"http://{cfg.server.host}:{cfg.server.port}/admin/models", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            rows = json.loads(resp.read())
    except (urllib.error.URLError, OSError) as exc:
        _fail(
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


sessions_app = typer.Typer(no_args_is_help=True, help="Agent sessions: list, kill, revive.")
app.add_typer(sessions_app, name="sessions")


@app.command()
def emergency(
    state: str = typer.Argument(..., help="on | off | status"),
    reason: str = typer.Option("switched on by an operator", help="why (shown in /health and X-Tiergate-Reason)"),
    config: Path | None = ConfigOpt,
) -> None:
    """Emergency mode: every request goes to local tiers only. Running gateways follow within a second."""
    from tiergate.guardrails.budgets import EMERGENCY_FLAG

    if state not in ("on", "off", "status"):
        _fail(f"expected on, off or status, got {state!r}")
    cfg, ledger = _ledger(config)
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

    cfg, ledger = _ledger(config)
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
        _fail("give a session id, --agent NAME or --all-over-usd X")
    cfg, ledger = _ledger(config)
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
        _fail(exc.message, code=1)
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

    cfg, ledger = _ledger(config)
    try:
        revived = ledger.revive_session(session, now=time.time(), kill_ttl_s=cfg.guardian.kill_ttl)
    except TiergateError as exc:
        _fail(exc.message, code=1)
    finally:
        ledger.close()
    if not revived:
        _fail(f"session {session!r} is not killed; nothing to revive", code=1)
    typer.echo(f"session {session!r} revived: its next request starts it afresh")


def _add_jobs() -> None:
    from tiergate.cli_jobs import jobs_app

    app.add_typer(jobs_app, name="jobs")


_add_jobs()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
