"""The per-app object every handler reaches through ``request.app[GATEWAY]``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from aiohttp import web

from tiergate.adapters.upstream_http import UpstreamHTTP
from tiergate.api.auth import KeyStore
from tiergate.config.schema import TiergateConfig
from tiergate.core.catalog import Catalog
from tiergate.guardrails.alerts import AlertDispatcher
from tiergate.guardrails.budgets import BudgetGuard
from tiergate.guardrails.limits import LimitGuard
from tiergate.guardrails.outages import Outages
from tiergate.guardrails.sessions import SessionTracker
from tiergate.ledger.base import Ledger
from tiergate.local.manager import LocalModelManager
from tiergate.observability.metrics import Metrics
from tiergate.observability.tracing import Tracing
from tiergate.pipeline.service import RequestPipeline
from tiergate.router.executor import Executor
from tiergate.state.base import SharedState


@dataclass
class Gateway:
    config: TiergateConfig
    catalog: Catalog
    ledger: Ledger
    keys: KeyStore
    state: SharedState
    metrics: Metrics
    executor: Executor
    upstream: UpstreamHTTP
    started_at: float
    budgets: BudgetGuard
    sessions: SessionTracker
    alerts: AlertDispatcher
    local: LocalModelManager | None = None
    outages: Outages | None = None
    limits: LimitGuard | None = None  # None without limits[]: the request path then skips them entirely
    tracing: Tracing | None = None  # None without observability.tracing: no tracing work per request
    pipeline: RequestPipeline = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.pipeline = RequestPipeline(
            executor=self.executor,
            budgets=self.budgets,
            sessions=self.sessions,
            limits=self.limits,
            ledger=self.ledger,
            metrics=self.metrics,
            request_timeout_s=self.config.routing.request_timeout_s,
            privacy=self.config.privacy,
            tracing=self.tracing,
        )


GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
