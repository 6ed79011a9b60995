"""With no config file: build one from what is running here and which keys are set.

Local runtimes found on their standard ports become tier 0; each cloud key
variable adds that vendor's usual cheap and strong models at list prices.
Only what can be served is offered: a default task whose minimum tier no
discovered deployment reaches is left out (an unknown task routes as tier>=0,
with a warning), instead of listing task/coding in /v1/models and answering 503.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tiergate.config.checks import unreachable_tasks
from tiergate.config.loading import config_from_dict, environment
from tiergate.config.schema import TiergateConfig
from tiergate.local.discovery import DiscoveredRuntime, discover_local_runtimes

# env var -> (provider name, api, base_url, [(model, tier, input $/Mtok, output $/Mtok)])
CLOUD_DEFAULTS: tuple[tuple[str, str, str, str, tuple[tuple[str, int, float, float], ...]], ...] = (
    (
        "GROQ_API_KEY",
        "groq",
        "openai-chat",
        "https://api.groq.com/openai/v1",
        (("llama-3.1-8b-instant", 1, 0.05, 0.08),),
    ),
    ("DEEPSEEK_API_KEY", "deepseek", "openai-chat", "https://api.deepseek.com/v1", (("deepseek-chat", 1, 0.27, 1.10),)),
    (
        "GEMINI_API_KEY",
        "gemini",
        "openai-chat",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        (("gemini-2.5-flash", 1, 0.30, 2.50),),
    ),
    (
        "OPENROUTER_API_KEY",
        "openrouter",
        "openai-chat",
        "https://openrouter.ai/api/v1",
        (("openai/gpt-4o-mini", 1, 0.15, 0.60),),
    ),
    (
        "OPENAI_API_KEY",
        "openai",
        "openai-chat",
        "https://api.openai.com/v1",
        (("gpt-4o-mini", 1, 0.15, 0.60), ("gpt-4o", 3, 2.50, 10.0)),
    ),
    (
        "ANTHROPIC_API_KEY",
        "anthropic",
        "anthropic-messages",
        "https://api.anthropic.com",
        (("claude-haiku-4-5", 2, 1.0, 5.0), ("claude-sonnet-4-5", 3, 3.0, 15.0)),
    ),
)
DEFAULT_TASKS = {"classification": 0, "extraction": 0, "summarization": 0, "coding": 1, "reasoning": 3}
MAX_MODELS_PER_RUNTIME = 8


def build_raw_config(runtimes: list[DiscoveredRuntime], env: Mapping[str, str]) -> dict[str, Any]:
    """Pure: a raw config dict from discovered runtimes and the names of the key variables set."""
    providers: dict[str, Any] = {}
    deployments: list[dict[str, Any]] = []
    for rt in runtimes:
        providers[rt.kind] = {"api": "openai-chat", "base_url": rt.base_url, "local": True}
        for model in rt.models[:MAX_MODELS_PER_RUNTIME] or ("default",):
            short = model.rsplit("/", 1)[-1].removesuffix(".gguf")
            deployments.append({"name": f"{rt.kind}/{short}", "provider": rt.kind, "model": model, "tier": 0})
    for var, name, api, base, models in CLOUD_DEFAULTS:
        if not env.get(var):
            continue
        providers[name] = {"api": api, "base_url": base, "api_key": f"env:{var}"}
        for model, tier, pin, pout in models:
            deployments.append(
                {
                    "name": f"{name}/{model}",
                    "provider": name,
                    "model": model,
                    "tier": tier,
                    "context_window": 128000,
                    "price": {"input_per_mtok": pin, "output_per_mtok": pout},
                }
            )
    aliases: dict[str, list[str]] = {}
    local = [d["name"] for d in deployments if providers[d["provider"]].get("local")]
    if local:
        aliases["local/fast"] = local
    cloud = [d for d in deployments if not providers[d["provider"]].get("local")]
    if cloud:
        top = max(d["tier"] for d in cloud)
        aliases["cloud/frontier"] = [d["name"] for d in cloud if d["tier"] == top]
        cheap = [d["name"] for d in cloud if d["tier"] < top]
        if cheap:
            aliases["cloud/cheap"] = cheap
    out_of_reach = unreachable_tasks(DEFAULT_TASKS, (d["tier"] for d in deployments))
    tasks = {t: tier for t, tier in DEFAULT_TASKS.items() if t not in out_of_reach}
    return {"providers": providers, "deployments": deployments, "aliases": aliases, "tasks": tasks}


async def discover_config() -> tuple[TiergateConfig, str]:
    env = environment()
    runtimes = await discover_local_runtimes()
    raw = build_raw_config(runtimes, env)
    cfg = config_from_dict(raw, env=env, source="discovery")
    found = [f"{rt.kind} at {rt.base_url} ({len(rt.models)} models)" for rt in runtimes]
    clouds = [name for var, name, *_ in CLOUD_DEFAULTS if env.get(var)]
    summary = (
        "no config file; discovered: "
        + ("; ".join(found) if found else "no local runtime on ports 8080, 11434, 1234, 8000")
        + "; cloud keys: "
        + (", ".join(clouds) if clouds else "none")
    )
    if not cfg.deployments:
        summary += "\nnothing to route to: start a local runtime or set a provider key, or write tiergate.yaml"
    elif left_out := unreachable_tasks(DEFAULT_TASKS, (d.tier for d in cfg.deployments)):
        needs = ", ".join(f"{t} (tier>={tier})" for t, tier in left_out.items())
        summary += f"; tasks left out, no deployment reaches their tier: {needs}"
    return cfg, summary
