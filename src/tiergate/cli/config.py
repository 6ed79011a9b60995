"""tiergate check-config | import-litellm: validate a config and show what it resolves to, or convert LiteLLM's."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tiergate.cli.app import app
from tiergate.cli.common import fail, plural
from tiergate.config.catalog import build_catalog
from tiergate.config.schema import TiergateConfig
from tiergate.core.errors import ConfigError

if TYPE_CHECKING:
    from tiergate.core.catalog import Deployment


def describe(cfg: TiergateConfig) -> str:

    cat = build_catalog(cfg)
    lines = ["tiers:"]
    for tier, names in cat.tiers().items():
        parts = []
        for n in names:
            d = cat.deployments[n]
            where = "local" if d.local else d.provider
            only = ", embeddings only" if "chat" not in d.capabilities else ""
            parts.append(f"{n} ({d.model} via {where}, {d.api}{only}, {price_text(d)})")
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


def price_text(d: Deployment) -> str:
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
        fail(str(exc))
    cfg, problems = check_config_dict(raw, env=environment(), exists=Path.is_file)
    errors = [f"error: {p}" for p in problems if not p.warning]
    warnings = [f"warning: {p}" for p in problems if p.warning]
    warnings += unpriced_warnings(cfg) if cfg is not None else []
    for line in (*errors, *warnings):
        typer.echo(f"  {line}", err=True)
    if errors or (strict and warnings):
        fail(f"{file}: {plural(len(errors), 'error')}" + (f", {plural(len(warnings), 'warning')}" if warnings else ""))
    assert cfg is not None
    typer.echo(f"{file}: ok" + (f" ({plural(len(warnings), 'warning')})" if warnings else ""))
    if is_litellm_config(raw):
        typer.echo(f"LiteLLM config: {TIER_RULE}")
    typer.echo(describe(cfg))


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
            fail(f"{file}: not a LiteLLM proxy config (no model_list, or it has providers/deployments)")
        text = render_native(raw, source=str(file))
    except ConfigError as exc:
        fail(f"{file}: {exc}")
    if output is None:
        typer.echo(text, nl=False)
        return
    if output.exists() and not force:
        fail(f"{output} exists; pass --force to overwrite it")
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}; check it with: tiergate check-config {output}", err=True)
