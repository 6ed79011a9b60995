"""Names in a config that must point at something: providers, local models, deployments, aliases.

Read from the plain mapping, not the validated models, so the check runs
even when other fields fail validation: check-config then reports a wrong
type and a dangling name in the same run instead of one per run. The
schema's model validator calls the same function on a valid config. Pure:
tolerant of any shape, since the shapes themselves are the schema's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def listed(names: Iterable[str]) -> str:
    """``a, b, c`` (sorted, without duplicates) for a message; never a Python list."""
    return ", ".join(sorted(set(names))) or "none"


def _rows(value: Any) -> list[tuple[int, Mapping[str, Any]]]:
    return [(i, r) for i, r in enumerate(value) if isinstance(r, Mapping)] if isinstance(value, list | tuple) else []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _names(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple) else []


def reference_problems(raw: Mapping[str, Any]) -> list[str]:
    """``path: message`` for every name that points at nothing, in file order."""
    out: list[str] = []
    deployments = _rows(raw.get("deployments"))
    providers = _mapping(raw.get("providers"))
    names = [str(d["name"]) for _, d in deployments if isinstance(d.get("name"), str)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        out.append(f"deployments: duplicate names {', '.join(dupes)}")
    local_names = [str(m.get("name")) for _, m in _rows(_mapping(raw.get("local_models")).get("models"))]
    for i, d in deployments:
        local_model, provider = d.get("local_model"), d.get("provider")
        if local_model is not None:
            if local_model not in local_names:
                out.append(
                    f"deployments[{i}].local_model: unknown local model {local_model!r}; "
                    f"allowed: {listed(local_names)} (local_models.models[].name)"
                )
            if provider is not None:
                out.append(f"deployments[{i}]: give either provider or local_model, not both")
        elif provider is None or d.get("model") is None:
            out.append(f"deployments[{i}]: provider and model are required (or local_model)")
        elif provider not in providers:
            out.append(f"deployments[{i}].provider: unknown provider {provider!r}; allowed: {listed(providers)}")
    known = set(names)
    aliases = _mapping(raw.get("aliases"))
    for alias, targets in aliases.items():
        if alias in known:
            out.append(f"aliases.{alias}: clashes with a deployment of the same name")
        if isinstance(targets, list | tuple) and not targets:
            out.append(f"aliases.{alias}: names no deployment, so a request for it could only fail")
        out += [
            f"aliases.{alias}: unknown deployment {t!r}; allowed: {listed(known)}"
            for t in _names(targets)
            if t not in known
        ]
    targets_ok = known | {str(a) for a in aliases}
    for pattern, target in _mapping(raw.get("model_map")).items():
        if isinstance(target, str) and target not in targets_ok and target != "auto" and not target.startswith("task/"):
            out.append(
                f"model_map.{pattern}: unknown target {target!r}; allowed: auto, task/<type>, {listed(targets_ok)}"
            )
    for src, dsts in _mapping(_mapping(raw.get("routing")).get("fallbacks")).items():
        out += [
            f"routing.fallbacks.{src}: unknown deployment or alias {t!r}; allowed: {listed(targets_ok)}"
            for t in [src, *_names(dsts)]
            if t not in targets_ok
        ]
    for field in ("balance", "cheapest_first"):
        for i, alias in enumerate(_names(_mapping(raw.get("routing")).get(field))):
            if alias not in aliases:
                out.append(f"routing.{field}[{i}]: unknown alias {alias!r}; allowed: {listed(aliases)}")
    return out
