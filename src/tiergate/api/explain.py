"""Dry-run routing: the plan and its reasons for a request, with nothing sent."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from tiergate.api.auth import identity_from_headers
from tiergate.api.openai import chat_features
from tiergate.config.catalog import build_catalog
from tiergate.config.schema import TiergateConfig
from tiergate.core.errors import BadRequest
from tiergate.router.policy import WorldSnapshot, decide

REACHABLE_FROM_OPENAI = frozenset({"openai-chat", "anthropic-messages"})


def explain_request(cfg: TiergateConfig, raw: bytes, headers: Mapping[str, str]) -> str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request file is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request file must hold a JSON object")
    ident, features = chat_features(raw, body, identity_from_headers("explain", None, headers))
    catalog = build_catalog(cfg)
    plan = decide(features, catalog, WorldSnapshot(reachable_apis=REACHABLE_FROM_OPENAI))
    lines = [
        f"request: model={features.model} task={features.task or '-'} ~{features.prompt_tokens_est} prompt tokens"
        f" max_tokens={features.max_tokens or '-'} stream={features.stream} local_only={features.local_only}",
        f"route: {plan.summary}",
    ]
    if plan.warning:
        lines.append(f"warning: {plan.warning}")
    lines.append("candidates, in order:")
    for i, c in enumerate(plan.candidates, 1):
        d = catalog.deployments[c.deployment]
        est = d.cost(features.prompt_tokens_est, features.max_tokens or 256)
        lines.append(
            f"  {i}. {c.deployment} (tier {c.tier}, {'local' if d.local else d.provider}, ~${est:.6f}): {c.reason}"
        )
    if plan.skipped:
        lines.append("skipped:")
        lines += [f"  - {s.deployment}: {s.reason}" for s in plan.skipped]
    return "\n".join(lines)
