"""Accept a LiteLLM proxy ``config.yaml`` as it is, by translating it to tiergate's shape.

LiteLLM groups deployments under a shared ``model_name`` (its load-balancing
group); here each entry becomes a deployment and each group an alias, so
clients keep sending the names they sent before. Tiers are inferred from
price (free → 0, then rising with cost) unless ``model_info.tier`` is set; an
entry without costs is priced from the price database (config/prices.py), as
LiteLLM prices it from its own.
"""

from __future__ import annotations

import re
from typing import Any

from tiergate.config.prices import database_price
from tiergate.core.errors import ConfigError

LITELLM_KEYS = {"model_list", "router_settings", "general_settings", "litellm_settings", "environment_variables"}
# tiergate's own sections may sit beside LiteLLM's, so a migrating user can add tasks or a ledger path
TIERGATE_EXTRAS = {"server", "ledger", "tasks", "aliases", "routing", "auth"}
LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "[::1]")

# provider prefix in litellm_params.model -> (api, default base_url, local)
PREFIXES: dict[str, tuple[str, str, bool]] = {
    "openai": ("openai-chat", "https://api.openai.com/v1", False),
    "anthropic": ("anthropic-messages", "https://api.anthropic.com", False),
    "openrouter": ("openai-chat", "https://openrouter.ai/api/v1", False),
    "deepseek": ("openai-chat", "https://api.deepseek.com/v1", False),
    "groq": ("openai-chat", "https://api.groq.com/openai/v1", False),
    "gemini": ("openai-chat", "https://generativelanguage.googleapis.com/v1beta/openai", False),
    "moonshot": ("openai-chat", "https://api.moonshot.ai/v1", False),
    "ollama": ("openai-chat", "http://127.0.0.1:11434/v1", True),
    "ollama_chat": ("openai-chat", "http://127.0.0.1:11434/v1", True),
    "hosted_vllm": ("openai-chat", "http://127.0.0.1:8000/v1", True),
    "lm_studio": ("openai-chat", "http://127.0.0.1:1234/v1", True),
}
TIER_BY_OUTPUT_PRICE = ((0.0, 0), (1.0, 1), (5.0, 2))  # output USD/Mtok upper bounds; above -> 3


def is_litellm_config(raw: dict[str, Any]) -> bool:
    return "model_list" in raw and not ({"providers", "deployments"} & raw.keys())


def _tier_for(output_per_mtok: float) -> int:
    for bound, tier in TIER_BY_OUTPUT_PRICE:
        if output_per_mtok <= bound:
            return tier
    return 3


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "provider"


def _entry(i: int, item: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    if not isinstance(item, dict) or "model_name" not in item or "litellm_params" not in item:
        raise ConfigError(f"model_list[{i}]: needs model_name and litellm_params")
    params = item["litellm_params"]
    if not isinstance(params, dict) or not isinstance(params.get("model"), str):
        raise ConfigError(f"model_list[{i}].litellm_params.model: required, e.g. openai/gpt-4o-mini")
    return str(item["model_name"]), params, item.get("model_info") or {}


def translate_litellm(raw: dict[str, Any]) -> dict[str, Any]:
    """A tiergate config dict equivalent to a LiteLLM proxy config dict."""
    unknown = set(raw) - LITELLM_KEYS - TIERGATE_EXTRAS
    if unknown:
        raise ConfigError(
            f"{sorted(unknown)[0]}: unknown top-level key in a LiteLLM config; "
            f"allowed: {', '.join(sorted(LITELLM_KEYS | TIERGATE_EXTRAS))}"
        )
    providers: dict[str, dict[str, Any]] = {}
    deployments: list[dict[str, Any]] = []
    aliases: dict[str, list[str]] = {}
    for i, item in enumerate(raw.get("model_list") or []):
        group, params, info = _entry(i, item)
        prefix, _, upstream_model = params["model"].partition("/")
        if not upstream_model:
            prefix, upstream_model = "openai", params["model"]
        if prefix not in PREFIXES:
            raise ConfigError(
                f"model_list[{i}].litellm_params.model: provider prefix {prefix!r} is not supported; "
                f"allowed: {', '.join(sorted(PREFIXES))}"
            )
        api, default_base, local = PREFIXES[prefix]
        base = params.get("api_base") or params.get("base_url") or default_base
        local = local or any(h in base for h in LOCAL_HOSTS)
        pkey = f"{prefix}-{_slug(base.split('//', 1)[-1])}"
        prov = providers.setdefault(pkey, {"api": api, "base_url": base, "local": local})
        if params.get("api_key"):
            prov["api_key"] = params["api_key"]
        costs = [info.get(k, params.get(k)) for k in ("input_cost_per_token", "output_cost_per_token")]
        price_in, price_out = (float(c or 0) * 1e6 for c in costs)
        if costs == [None, None] and not local:  # as LiteLLM does: the price database's price
            db = database_price(prefix, base, params["model"])
            price_out = db.rates.output if db is not None else 0.0
        dep: dict[str, Any] = {
            "name": f"{group}#{i}",
            "provider": pkey,
            "model": upstream_model,
            "tier": int(info.get("tier", 0 if local else _tier_for(price_out))),
        }
        if costs != [None, None]:
            dep["price"] = {"input_per_mtok": price_in, "output_per_mtok": price_out}
        for src, dst in (("max_input_tokens", "context_window"), ("max_tokens", "max_output_tokens")):
            if info.get(src):
                dep[dst] = int(info[src])
        deployments.append(dep)
        aliases.setdefault(group, []).append(dep["name"])
    for group, members in list(aliases.items()):
        if len(members) == 1:  # a group of one is simply a deployment under the group's name
            next(d for d in deployments if d["name"] == members[0])["name"] = group
            del aliases[group]
    out: dict[str, Any] = {"providers": providers, "deployments": deployments, "aliases": aliases}
    rs = raw.get("router_settings") or {}
    routing: dict[str, Any] = {}
    if "num_retries" in rs:
        routing["num_retries"] = int(rs["num_retries"])
    if "timeout" in rs:
        routing["request_timeout_s"] = float(rs["timeout"])
    fallbacks: dict[str, list[str]] = {}
    for entry in rs.get("fallbacks") or []:
        if isinstance(entry, dict):
            for src, dsts in entry.items():
                fallbacks[str(src)] = [str(d) for d in (dsts if isinstance(dsts, list) else [dsts])]
    if fallbacks:
        routing["fallbacks"] = fallbacks
    if routing:
        out["routing"] = routing
    gs = raw.get("general_settings") or {}
    if gs.get("master_key"):
        out["auth"] = {"master_key": gs["master_key"]}
    for key in TIERGATE_EXTRAS & raw.keys():
        value = raw[key]
        out[key] = {**out[key], **value} if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out
