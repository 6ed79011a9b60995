"""The routing catalog built from a validated config: deployments with their providers' endpoints and keys.

The catalog itself (``tiergate.core.catalog``) knows nothing of config
files; this is the one place that turns config rows into it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from tiergate.config.prices import resolve_price
from tiergate.config.schema import DeploymentConfig, ProviderConfig, TiergateConfig
from tiergate.core.capabilities import capabilities_of
from tiergate.core.catalog import Catalog, Deployment, ReadLimits


def build_catalog(cfg: TiergateConfig, *, local_urls: Mapping[str, str] | None = None) -> Catalog:
    """``local_urls``: where each managed local model is served (from the model manager)."""
    deployments: dict[str, Deployment] = {}
    for d in cfg.deployments:
        if d.local_model is not None:
            deployments[d.name] = _managed(cfg, d, (local_urls or {}).get(d.local_model))
            continue
        assert d.provider is not None and d.model is not None
        p = cfg.providers[d.provider]
        deployments[d.name] = Deployment(
            name=d.name,
            provider=d.provider,
            api=p.api,
            base_url=p.base_url,
            model=d.model,
            tier=d.tier,
            local=p.local,
            context_window=d.context_window,
            max_output_tokens=d.max_output_tokens,
            **resolve_price(  # the price database is read here, once per catalog, never per request
                d.price, local=p.local, provider=d.provider, base_url=p.base_url, model=d.model
            ).fields(),
            api_key=p.api_key.get_secret_value() if p.api_key else None,
            headers=MappingProxyType(dict(p.headers)),
            timeout_s=p.timeout_s,
            limits=read_limits(cfg, p),
            capabilities=_capabilities(d, d.model),
        )
    return Catalog(
        deployments=MappingProxyType(deployments),
        aliases=MappingProxyType({k: tuple(v) for k, v in cfg.aliases.items()}),
        tasks=MappingProxyType(dict(cfg.tasks)),
        fallbacks=MappingProxyType({k: tuple(v) for k, v in cfg.routing.fallbacks.items()}),
        escalate=cfg.routing.escalate,
        embeddings_local_only=cfg.routing.embeddings_local_only,
        model_map=tuple(cfg.model_map.items()),
    )


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
        **resolve_price(d.price, local=True, provider="local-models", base_url="", model=m.name).fields(),
        local_model=m.name,
        limits=read_limits(cfg, None),
        capabilities=_capabilities(d, d.model or m.name),
    )


def _capabilities(d: DeploymentConfig, model: str) -> frozenset[str]:
    return capabilities_of(model, declared=frozenset(d.capabilities) if d.capabilities is not None else None)
