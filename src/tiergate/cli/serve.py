"""tiergate serve | migrate: run the gateway, or bring the ledger's schema up to date."""

from __future__ import annotations

from pathlib import Path

import typer

from tiergate.cli.app import app
from tiergate.cli.common import ConfigOpt, fail, load_config_or_fail, open_ledger_or_fail
from tiergate.core.errors import TiergateError


@app.command()
def serve(
    config: Path | None = ConfigOpt,
    host: str | None = typer.Option(None, help="bind address (default server.host, 127.0.0.1)"),
    port: int | None = typer.Option(None, help="port (default server.port, 4000; 0 picks a free one)"),
    workers: int = typer.Option(1, help="worker processes sharing the port (use the cores)"),
    log_level: str = typer.Option("warning", help="log level"),
    log_format: str | None = typer.Option(
        None, help="text or json: one JSON object per line with the request id (default observability.log_format)"
    ),
) -> None:
    """Run the gateway until SIGTERM/SIGINT; usage records are flushed before exit."""
    from tiergate.observability.logs import configure_logging
    from tiergate.server import check_workers, run_loop, run_workers
    from tiergate.server import serve as serve_one

    if log_format not in (None, "text", "json"):
        fail(f"--log-format: must be text or json, not {log_format!r}")
    configure_logging(log_level, log_format or "text")  # the config's own warnings, while it loads
    cfg, source = load_config_or_fail(config, allow_discovery=True)
    fmt = log_format or cfg.observability.log_format
    if fmt != (log_format or "text"):
        configure_logging(log_level, fmt)
    bind_host, bind_port = host or cfg.server.host, cfg.server.port if port is None else port
    try:
        check_workers(cfg, workers)
        if workers > 1:
            run_workers(cfg, source, bind_host, bind_port, workers, log=(log_level, fmt))
        else:
            run_loop(serve_one(cfg, source, bind_host, bind_port))
    except TiergateError as exc:  # config errors, shared state unreachable at start
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot listen on {bind_host}:{bind_port}: {exc.strerror}")


@app.command()
def migrate(config: Path | None = ConfigOpt) -> None:
    """Bring the ledger's schema up to date (every start does it too) and print what was applied."""
    cfg, ledger = open_ledger_or_fail(config)
    applied = ledger.applied_migrations
    ledger.close()
    for name in applied:
        typer.echo(f"applied {name}")
    typer.echo(f"ledger {cfg.ledger_display}: schema up to date" + ("" if applied else " (nothing to apply)"))
