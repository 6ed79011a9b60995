"""tiergate keys create | list | revoke: virtual keys, stored hashed in the ledger."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer

from tiergate.cli.app import keys_app
from tiergate.cli.common import ConfigOpt, fail, open_ledger_or_fail


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="a unique name for the key"),
    agent: str | None = typer.Option(None, "--agent", help="attribute this key's traffic to an agent"),
    admin: bool = typer.Option(False, "--admin", help="an operator's key: /admin and the dashboard take it"),
    config: Path | None = ConfigOpt,
) -> None:
    """Issue a virtual key. It is shown once; only its hash is stored."""
    if admin and agent:
        fail("an admin key is an operator's, not an agent's: give --admin or --agent, not both")
    _, ledger = open_ledger_or_fail(config)
    try:
        key = ledger.create_key(name, agent=agent, admin=admin)
    except ValueError as exc:
        fail(str(exc))
    finally:
        ledger.close()
    typer.echo(key)
    typer.echo(
        f"key {name!r} created{f' for agent {agent!r}' if agent else ''}{' (admin)' if admin else ''}; "
        "store it now, it is not shown again",
        err=True,
    )


@keys_app.command("list")
def keys_list(config: Path | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """List keys (name, prefix, agent, created, revoked); never the keys themselves."""
    _, ledger = open_ledger_or_fail(config)
    rows = ledger.list_keys()
    ledger.close()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "prefix": r.prefix,
                        "agent": r.agent,
                        "admin": r.admin,
                        "created": r.created,
                        "revoked": r.revoked,
                    }
                    for r in rows
                ]
            )
        )
        return
    for r in rows:
        status = "revoked" if r.revoked else "active"
        created = dt.datetime.fromtimestamp(r.created).isoformat(timespec="seconds")
        role = "admin" if r.admin else "agent"
        typer.echo(f"{r.name:<24} {r.prefix}...  agent={r.agent or '-':<16} {role:<5} {status:<8} created {created}")


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(...), config: Path | None = ConfigOpt) -> None:
    """Revoke a key; running gateways refuse it within about a second."""
    _, ledger = open_ledger_or_fail(config)
    ok = ledger.revoke_key(name)
    ledger.close()
    if not ok:
        fail(f"no active key named {name!r}", code=1)
    typer.echo(f"key {name!r} revoked")
