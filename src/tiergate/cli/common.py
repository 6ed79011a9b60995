"""What every command shares: the --config option, loading a config or a ledger, failing with a message."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from tiergate.config.loading import find_config, load_config
from tiergate.config.schema import TiergateConfig
from tiergate.core.errors import ConfigError

if TYPE_CHECKING:
    from tiergate.ledger.base import Ledger

ConfigOpt = typer.Option(None, "--config", "-c", help="config file (default ./tiergate.yaml, then the user config dir)")


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"tiergate: {message}", err=True)
    raise typer.Exit(code)


def load_config_or_fail(config: Path | None, *, allow_discovery: bool = False) -> tuple[TiergateConfig, str]:
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
        fail(str(exc))
        raise  # unreachable


def open_ledger_or_fail(config: Path | None) -> tuple[TiergateConfig, Ledger]:
    from tiergate.core.errors import LedgerUnavailable
    from tiergate.ledger.base import open_ledger

    cfg, _ = load_config_or_fail(config)
    try:
        return cfg, open_ledger(cfg.ledger_url, spool=cfg.ledger_spool_dir, timeout_s=cfg.ledger_timeout_s)
    except LedgerUnavailable as exc:
        fail(exc.message, code=1)


def plural(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def iso_date(option: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        fail(f"{option}: expected YYYY-MM-DD, got {value!r}")
