"""LiteLLM's ``router_settings``, ``litellm_settings`` and ``general_settings`` as tiergate config sections.

Each key LiteLLM documents either becomes the tiergate setting that means the
same (the table in docs/configuration.md, "LiteLLM configs") or is returned
by name as not supported, so the caller can say it in one warning; nothing
is dropped without a word. Pure: dicts in, dicts and names out; a value that
cannot mean anything is a ConfigError naming the LiteLLM field and what is
allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tiergate.core.errors import ConfigError

# LiteLLM's budget_duration -> tiergate's budget window (calendar windows in `timezone`)
BUDGET_WINDOWS = {"1h": "hour", "60m": "hour", "1d": "day", "24h": "day", "7d": "week", "1w": "week"}
BUDGET_WINDOWS |= {"1mo": "month", "30d": "month", "31d": "month"}
BALANCED_STRATEGIES = {"simple-shuffle"}  # round-robin here: the same even share, without the dice
ROUGHLY_BALANCED = {"least-busy", "latency-based-routing", "usage-based-routing", "usage-based-routing-v2"}
STRATEGIES = {*BALANCED_STRATEGIES, *ROUGHLY_BALANCED, "cost-based-routing"}
FALLBACK_KEYS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
# settings whose meaning tiergate already has built in, so they need no line of config
BUILT_IN = {
    "router_settings.enable_pre_call_checks",  # a deployment whose window is too small is always skipped
    "litellm_settings.drop_params",  # translations send each upstream only what its protocol takes
}


@dataclass(slots=True)
class Settings:
    """What the three settings sections become."""

    routing: dict[str, Any] = field(default_factory=dict)
    aliases: dict[str, list[str]] = field(default_factory=dict)
    top: dict[str, Any] = field(default_factory=dict)  # auth, ledger, budgets
    strategy: str = "simple-shuffle"
    unsupported: list[str] = field(default_factory=list)


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: must be a mapping, got {type(value).__name__}")
    return value


def _number(where: str, value: Any, *, low: float, high: float, integer: bool = False) -> Any:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
    if not ok or (integer and value != int(value)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}: must be {kind} from {low:g} to {high:g}, got {value!r}")
    return int(value) if integer else float(value)


def _fallbacks(where: str, value: Any) -> dict[str, list[str]]:
    """LiteLLM's ``[{group: [other, ...]}, ...]`` as ``{group: [other, ...]}``."""
    out: dict[str, list[str]] = {}
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list of {{model_name: [fallback, ...]}}, got {type(value).__name__}")
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}[{i}]: must be {{model_name: [fallback, ...]}}, got {entry!r}")
        for src, dsts in entry.items():
            out.setdefault(str(src), []).extend(str(d) for d in (dsts if isinstance(dsts, list) else [dsts]))
    return out


def _budget(where: str, limit: Any, duration: Any) -> dict[str, Any]:
    usd = _number(f"{where}.max_budget", limit, low=1e-9, high=1e12)
    if duration is None:
        raise ConfigError(
            f"{where}.max_budget: without budget_duration LiteLLM never resets it, and tiergate budgets reset each "
            f"window; add budget_duration, one of {', '.join(BUDGET_WINDOWS)}"
        )
    window = BUDGET_WINDOWS.get(str(duration).strip())
    if window is None:
        raise ConfigError(
            f"{where}.budget_duration: {duration!r} has no tiergate window; allowed: {', '.join(BUDGET_WINDOWS)}"
        )
    return {"name": f"litellm {where}.max_budget", "scope": "global", "window": window, "limit_usd": usd}


def translate_settings(raw: dict[str, Any]) -> Settings:
    out = Settings()
    rs, ls, gs = (_section(raw, n) for n in ("router_settings", "litellm_settings", "general_settings"))
    fallbacks: dict[str, list[str]] = {}
    # module-wide litellm_settings first: the Router's own router_settings win over them, as in LiteLLM
    for name, section in (("litellm_settings", ls), ("router_settings", rs)):
        for key, value in section.items():
            where = f"{name}.{key}"
            if key in FALLBACK_KEYS:  # tried in order after the group's own entries, whatever the failure
                for src, dsts in _fallbacks(where, value).items():
                    have = fallbacks.setdefault(src, [])
                    have += [d for d in dsts if d not in have]
            elif key == "num_retries":
                out.routing["num_retries"] = _number(where, value, low=0, high=10, integer=True)
            elif key in ("timeout", "request_timeout"):  # LiteLLM's per-call timeout: one attempt here
                seconds = _number(where, value, low=0.001, high=86400)
                out.routing["attempt_timeout_s"] = seconds
                out.routing["request_timeout_s"] = max(seconds, 600.0)
            elif key == "allowed_fails":
                out.routing["breaker_failures"] = _number(where, value, low=1, high=1000, integer=True)
            elif key == "cooldown_time":
                out.routing["breaker_cooldown_s"] = _number(where, value, low=0.001, high=86400)
            elif key == "routing_strategy" and name == "router_settings":
                if value not in STRATEGIES:
                    raise ConfigError(f"{where}: unknown strategy {value!r}; allowed: {', '.join(sorted(STRATEGIES))}")
                out.strategy = str(value)
                if value in ROUGHLY_BALANCED:
                    out.unsupported.append(f"{where}={value} (groups are balanced round-robin)")
            elif key == "model_group_alias" and name == "router_settings":
                out.aliases.update(_group_aliases(where, value))
            elif key in ("max_budget", "budget_duration") and name == "litellm_settings":
                continue  # below, with general_settings'
            elif where not in BUILT_IN:
                out.unsupported.append(where)
    if fallbacks:
        out.routing["fallbacks"] = fallbacks
    budgets = [
        _budget(name, section["max_budget"], section.get("budget_duration"))
        for name, section in (("litellm_settings", ls), ("general_settings", gs))
        if section.get("max_budget") is not None
    ]
    if budgets:
        out.top["budgets"] = budgets
    for key, value in gs.items():
        if key == "master_key" and value:
            out.top["auth"] = {"master_key": value}
        elif key == "database_url" and value:
            out.top["ledger"] = value  # env:/os.environ/ resolved later; the ledger field checks the scheme
        elif key not in ("max_budget", "budget_duration", "master_key", "database_url"):
            out.unsupported.append(f"general_settings.{key}")
    return out


def _group_aliases(where: str, value: Any) -> dict[str, list[str]]:
    """``{gpt-4: gpt-4o}`` or ``{gpt-4: {model: gpt-4o, hidden: true}}`` as tiergate aliases."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping of alias -> model_name")
    out = {}
    for alias, target in value.items():
        name = target.get("model") if isinstance(target, dict) else target
        if not isinstance(name, str):
            raise ConfigError(f"{where}.{alias}: must be a model_name or {{model: model_name}}")
        out[str(alias)] = [name]
    return out
