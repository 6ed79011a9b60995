"""tiergate serve | migrate: run the gateway, or bring the ledger's schema up to date."""

from __future__ import annotations

import logging
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
) -> None:
    """Run the gateway until SIGTERM/SIGINT; usage records are flushed before exit."""
    from tiergate.server import check_workers, run_loop, run_workers
    from tiergate.server import serve as serve_one

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg, source = load_config_or_fail(config, allow_discovery=True)
    bind_host, bind_port = host or cfg.server.host, cfg.server.port if port is None else port
    try:
        check_workers(cfg, workers)
        if workers > 1:
            run_workers(cfg, source, bind_host, bind_port, workers)
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
