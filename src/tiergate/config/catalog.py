"""The routing catalog built from a validated config: deployments with their providers' endpoints and keys.

The catalog itself (``tiergate.core.catalog``) knows nothing of config
files; this is the one place that turns config rows into it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from types import MappingProxyType

from tiergate.config.prices import database_context_window, resolve_price
from tiergate.config.schema import DeploymentConfig, ProviderConfig, TiergateConfig
from tiergate.core.capabilities import capabilities_of
from tiergate.core.catalog import AwsSigning, Catalog, Deployment, ReadLimits, WildcardDeployments, WildcardRoute
from tiergate.core.limits import deployment_counters


def build_catalog(
    cfg: TiergateConfig,
    *,
    local_urls: Mapping[str, str] | None = None,
    probed: Mapping[str, frozenset[str]] | None = None,
) -> Catalog:
    """``local_urls``: where each managed local model is served (from the model manager); ``probed``: the
    capabilities local engines reported (``local/engine_probe.py``), over the family's guess, under config's."""
    deployments: dict[str, Deployment] = {}
    routes: list[WildcardRoute] = []
    for d in cfg.deployments:
        if d.local_model is not None:
            deployments[d.name] = _managed(cfg, d, (local_urls or {}).get(d.local_model))
        elif "*" in d.name:
            routes.append(WildcardRoute(d.name, partial(_served, cfg, d)))
        else:
            deployments[d.name] = _served(cfg, d, d.name, None)
            if probed and d.name in probed and d.capabilities is None:
                deployments[d.name] = replace(deployments[d.name], capabilities=probed[d.name])
    fixed = MappingProxyType(deployments)
    aliases = {k: tuple(v) for k, v in cfg.aliases.items()}
    for alias in cfg.routing.cheapest_first:
        aliases[alias] = cheapest_first(aliases[alias], fixed)
    return Catalog(
        deployments=WildcardDeployments(fixed, tuple(routes)) if routes else fixed,
        aliases=MappingProxyType(aliases),
        tasks=MappingProxyType(dict(cfg.tasks)),
        fallbacks=MappingProxyType({k: tuple(v) for k, v in cfg.routing.fallbacks.items()}),
        escalate=cfg.routing.escalate,
        embeddings_local_only=cfg.routing.embeddings_local_only,
        model_map=tuple(cfg.model_map.items()),
        balanced=MappingProxyType({a: _shares(cfg, a) for a in cfg.routing.balance}),
        wildcards=tuple(r.pattern for r in routes),
    )


def cheapest_first(members: tuple[str, ...], deployments: Mapping[str, Deployment]) -> tuple[str, ...]:
    """An alias's members by input + output price per token, as LiteLLM's cost-based-routing picks; members
    with no price (or that are not fixed deployments) keep their order after the priced ones."""

    def cost(name: str) -> tuple[int, float]:
        d = deployments.get(name)
        if d is None or not d.priced:
            return (1, 0.0)
        return (0, d.rates.input + d.rates.output)

    return tuple(sorted(members, key=cost))


def _shares(cfg: TiergateConfig, alias: str) -> tuple[float, ...]:
    """A balanced alias's members' weights, in its order; all 0 counts as all equal."""
    weight = {d.name: d.weight for d in cfg.deployments}
    shares = tuple(weight.get(m, 1.0) for m in cfg.aliases[alias])
    return shares if any(shares) else tuple(1.0 for _ in shares)


def _served(cfg: TiergateConfig, d: DeploymentConfig, name: str, part: str | None) -> Deployment:
    """A provider's deployment; for a wildcard route, the one serving client model ``name`` (``part``: what
    its * matched), priced and given capabilities for that model."""
    assert d.provider is not None and d.model is not None
    p = cfg.providers[d.provider]
    model = d.model if part is None else (d.model.replace("*", part) if "*" in d.model else d.model)
    window = d.context_window
    if part is not None and "context_window" not in d.model_fields_set:  # the window of the model it became
        window = database_context_window(d.provider, p.base_url, model) or window
    return Deployment(
        name=name,
        provider=d.provider,
        api=p.api,
        base_url=p.base_url,
        model=model,
        tier=d.tier,
        local=p.local,
        context_window=window,
        max_output_tokens=d.max_output_tokens,
        reasoning_floor=d.reasoning_floor_tokens,
        **resolve_price(  # the price database is read here, once per deployment, never per request
            d.price, local=p.local, provider=d.provider, base_url=p.base_url, model=d.base_model or model
        ).fields(),
        api_key=p.api_key.get_secret_value() if p.api_key else None,
        headers=MappingProxyType(_headers(p)),
        timeout_s=p.timeout_s,
        limits=read_limits(cfg, p),
        capabilities=_capabilities(d, model),
        api_version=p.api_version,
        aws=_aws(p),
        rate=deployment_counters(name, d.rpm, d.tpm),
    )


def _aws(p: ProviderConfig) -> AwsSigning | None:
    if p.api != "bedrock-converse" or p.aws_access_key_id is None or p.aws_secret_access_key is None:
        return None
    token = p.aws_session_token.get_secret_value() if p.aws_session_token else None
    assert p.region is not None  # the schema requires one
    return AwsSigning(
        p.region, p.aws_access_key_id.get_secret_value(), p.aws_secret_access_key.get_secret_value(), token
    )


def _headers(p: ProviderConfig) -> dict[str, str]:
    if p.entra_token is not None:
        return {**p.headers, "Authorization": f"Bearer {p.entra_token.get_secret_value()}"}
    return dict(p.headers)


def read_limits(cfg: TiergateConfig, p: ProviderConfig | None) -> ReadLimits:
    """A provider's bounds on reading its answers; a managed local model gets the defaults."""
    if p is None:
        return ReadLimits(stream_timeout_s=cfg.routing.request_timeout_s)
    return ReadLimits(
        stream_timeout_s=p.stream_timeout_s or cfg.routing.request_timeout_s,
        stream_idle_timeout_s=p.stream_idle_timeout_s,
        max_event_bytes=p.max_event_kb * 1024,
        max_response_bytes=int(p.max_response_mb * 1024 * 1024),
    )


def _managed(cfg: TiergateConfig, d: DeploymentConfig, url: str | None) -> Deployment:
    assert cfg.local_models is not None and d.local_model is not None
    m = next(m for m in cfg.local_models.models if m.name == d.local_model)
    return Deployment(
        name=d.name,
        provider="local-models",
        api="openai-chat",
        base_url=url or "http://127.0.0.1:0/v1",
        model=d.model or m.name,
        tier=d.tier,
        local=True,
        context_window=min(d.context_window, m.context) if "context_window" in d.model_fields_set else m.context,
        max_output_tokens=d.max_output_tokens,
        reasoning_floor=d.reasoning_floor_tokens,
        **resolve_price(d.price, local=True, provider="local-models", base_url="", model=m.name).fields(),
        local_model=m.name,
        limits=read_limits(cfg, None),
        capabilities=_capabilities(d, d.model or m.name),
        rate=deployment_counters(d.name, d.rpm, d.tpm),
    )


def _capabilities(d: DeploymentConfig, model: str) -> frozenset[str]:
    return capabilities_of(model, declared=frozenset(d.capabilities) if d.capabilities is not None else None)
