"""``tiergate import-litellm``: a LiteLLM proxy config written out as the native tiergate.yaml it means.

The same translation that serves a LiteLLM config as it is (config/litellm.py),
rendered as YAML with comments: where each deployment came from and why its
tier, what LiteLLM settings were ignored, which values LiteLLM took from its
``environment_variables`` section. Secrets stay references: ``os.environ/NAME``
becomes ``env:NAME``; a literal key is kept, and flagged. Pure: a dict in, text
out; the CLI reads and writes the files.
"""

from __future__ import annotations

from typing import Any

import yaml

from tiergate.config.litellm import TIER_RULE, translate_litellm
from tiergate.config.litellm_providers import PREFIXES

ORDER = ("server", "auth", "ledger", "providers", "deployments", "aliases", "routing", "budgets", "tasks")
SECRETS = {"api_key", "master_key", "ledger"}


def _env_refs(node: Any) -> Any:
    """LiteLLM's ``os.environ/NAME`` as tiergate's ``env:NAME`` (both are read; the native file uses its own)."""
    if isinstance(node, dict):
        return {k: _env_refs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_env_refs(v) for v in node]
    if isinstance(node, str) and node.startswith("os.environ/"):
        return "env:" + node.removeprefix("os.environ/")
    return node


def _literal_secrets(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _literal_secrets(v, f"{path}.{k}" if path else str(k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _literal_secrets(v, f"{path}[{i}]")]
    leaf = path.rsplit(".", 1)[-1]
    return [path] if leaf in SECRETS and isinstance(node, str) and node and not node.startswith("env:") else []


def _dump(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=110)


def _comment(text: str) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in text.splitlines())


def render_native(raw: dict[str, Any], *, source: str) -> str:
    """The tiergate.yaml equivalent of the LiteLLM config ``raw`` (read from ``source``)."""
    # every provider's key variable as if set: the native file names it (env:NAME) for whoever runs it
    t = translate_litellm(raw, {p.key_env: "" for p in PREFIXES.values() if p.key_env and p.key_required})
    cfg = _env_refs(t.config)
    head = [
        f"tiergate config imported from the LiteLLM config {source} (tiergate import-litellm).",
        "It means what that file meant; `tiergate serve --config` also reads the LiteLLM file as it is.",
        TIER_RULE + ".",
        "Prices not written here come from the price database when the config loads (check-config shows them).",
    ]
    env = raw.get("environment_variables")
    if isinstance(env, dict) and env:
        head += ["", "LiteLLM set these from its environment_variables section; set them in the environment instead:"]
        head += [f"  {k}" for k in env]
    if t.unsupported:
        head += ["", "LiteLLM settings with no meaning here, left out:"] + [f"  {u}" for u in t.unsupported]
    for path, note in t.notes:
        head.append(f"warning: {path}: {note}")
    literal = _literal_secrets(cfg)
    if literal:
        head += ["", "literal secrets (prefer env:NAME): " + ", ".join(literal)]
    out = [_comment("\n".join(head))]
    for key in (*ORDER, *(k for k in cfg if k not in ORDER)):
        if key not in cfg or cfg[key] in ({}, []):
            continue
        value = cfg[key]
        if key == "deployments":
            out.append("\ndeployments:\n")
            for dep in value:
                origin = t.origins.get(str(dep["name"]))
                item = _dump([dep])
                out.append((f"  # {origin}\n" if origin else "") + "".join(f"  {ln}\n" for ln in item.splitlines()))
            continue
        if key == "aliases":
            out.append("\n# a LiteLLM model group with several entries: an alias over them")
            if cfg.get("routing", {}).get("balance"):
                out.append(", balanced (routing.balance)")
            if cfg.get("routing", {}).get("cheapest_first"):
                out.append(", tried cheapest first (routing.cheapest_first: router_settings.routing_strategy)")
            out.append("\n")
        elif key == "routing":
            out.append("\n# from router_settings and litellm_settings\n")
        elif key == "budgets":
            out.append("\n# max_budget / budget_duration: a global budget\n")
        else:
            out.append("\n")
        out.append(_dump({key: value}))
    return "".join(out)
