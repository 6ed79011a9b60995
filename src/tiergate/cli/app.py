"""The command tree: the root app and its groups; each command module adds its commands to them."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="A local-first hybrid LLM gateway for agent fleets.")
keys_app = typer.Typer(no_args_is_help=True, help="Virtual keys: create, list, revoke.")
sessions_app = typer.Typer(no_args_is_help=True, help="Agent sessions: list, kill, revive.")
jobs_app = typer.Typer(no_args_is_help=True, help="Scheduled jobs and reports: list, run, history, pause, resume.")
app.add_typer(keys_app, name="keys")
app.add_typer(sessions_app, name="sessions")
app.add_typer(jobs_app, name="jobs")
