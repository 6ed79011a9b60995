"""create_app(config) builds everything; nothing happens at import.

The server is aiohttp, chosen by measurement (docs/decisions/0001-http-stack.md);
upstream calls go through tiergate's own lean HTTP/1.1 client
(docs/decisions/0004-upstream-client.md); webhooks use aiohttp's client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import orjson
from aiohttp import web

from tiergate.adapters.registry import protocol_adapters
from tiergate.adapters.upstream_http import UpstreamHTTP
from tiergate.api import admin, admin_jobs, anthropic, codex_catalog, gemini, ollama, openai, responses, ui
from tiergate.api.auth import KeyStore
from tiergate.api.common import BODIES_IN_FLIGHT
from tiergate.api.edge import REQUEST_IDS, EdgeRoutes
from tiergate.api.gateway import GATEWAY, Gateway
from tiergate.api.inbound import BodiesInFlight
from tiergate.background import reraise_if_stopping, stop
from tiergate.config.catalog import build_catalog
from tiergate.config.schema import TiergateConfig
from tiergate.core.errors import ConfigError, LedgerUnavailable
from tiergate.core.ids import IdSource
from tiergate.guardrails.alerts import AlertDispatcher, LedgerSeen
from tiergate.guardrails.budgets import EMERGENCY_FLAG, BudgetGuard
from tiergate.guardrails.ledger_watch import LedgerWatch
from tiergate.guardrails.limits import LimitGuard
from tiergate.guardrails.outages import GuardedState, Outages
from tiergate.guardrails.sessions import SessionTracker
from tiergate.ledger.base import Ledger, open_ledger
from tiergate.ledger.records import LocalModelEvent
from tiergate.local.engine_probe import probe_local_capabilities
from tiergate.local.manager import LocalModelManager
from tiergate.observability.metrics import Metrics
from tiergate.observability.tracing import Tracing
from tiergate.router.executor import Executor
from tiergate.state.base import SharedState
from tiergate.state.memory import MemoryState

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from tiergate.jobs.scheduler import Scheduler

log = logging.getLogger("tiergate.app")


async def sync_flags(ledger: Ledger, state: SharedState) -> None:
    """Flags set by the CLI or another process (emergency mode) into shared state; kept while the ledger is down."""
    try:
        flags = await asyncio.to_thread(ledger.flags)
    except LedgerUnavailable as exc:
        log.warning("flags not refreshed, keeping the last known ones: %s", exc.message)
        return
    before = await state.flag(EMERGENCY_FLAG)
    if flags.get(EMERGENCY_FLAG) != before:
        await state.set_flag(EMERGENCY_FLAG, flags.get(EMERGENCY_FLAG))


async def watch_control(gw: Gateway, interval_s: float = 1.0, ledger_watch: LedgerWatch | None = None) -> None:
    """About once a second: kills and flags from elsewhere, idle sessions expiring, the ledger writer's health.

    Once a minute, from the first tick (so a restart prunes at once): ended budget windows, and
    session rows past ``guardian.session_retention``.
    """
    ticks = 0
    while True:
        await asyncio.sleep(interval_s)
        ticks += 1
        try:
            if await gw.sessions.sync():
                await sync_flags(gw.ledger, gw.state)
            gw.sessions.flush()
            gw.sessions.expire_idle()
            watch_dependencies(gw)
            if ledger_watch is not None:
                ledger_watch.check()
            if gw.budgets.pending_reconcile:
                await gw.budgets.reconcile()
            if ticks % 60 == 0:
                await gw.budgets.prune()
            if ticks % 60 == 1:
                await asyncio.to_thread(gw.sessions.prune)
            if ticks % 60 == 2:  # stored Responses past responses.store_days
                await asyncio.to_thread(gw.ledger.prune_responses, before=time.time())
        except Exception as exc:  # keep the last known control state
            reraise_if_stopping(exc)
            log.warning("could not sync control state from the ledger", exc_info=True)


def watch_dependencies(gw: Gateway) -> None:
    """The ledger database's health into Outages (Redis outages are seen by the calls themselves)."""
    health = getattr(gw.ledger, "health", None)
    if health is None or gw.outages is None:
        return
    h = health()
    if h.get("ok", True):
        gw.outages.up("ledger")
    else:
        gw.outages.down("ledger", str(h.get("error") or "unreachable"))


def start_jobs(gw: Gateway, session: aiohttp.ClientSession) -> Scheduler:
    """The job scheduler (docs/jobs.md), built only when the config has jobs: no jobs, no cost."""
    from tiergate.jobs.delivery import Deliverer, resolve_sinks
    from tiergate.jobs.runner import JobRunner
    from tiergate.jobs.scheduler import Scheduler, owner_id
    from tiergate.ledger.job_runs import JobRuns

    s = gw.config.scheduler
    sinks = resolve_sinks(dict(gw.config.sinks), gw.config.alerts)
    deliverer = Deliverer(
        sinks, session, retries=s.delivery_retries, timeout_s=s.delivery_timeout, backoff_s=s.delivery_backoff
    )
    store = JobRuns(gw.ledger, owner_id())
    runner = JobRunner(
        gw.config, pipeline=gw.pipeline, catalog=gw.catalog, store=store, deliverer=deliverer, session=session
    )
    return Scheduler(list(gw.config.jobs), runner, store)


def check_auth_configured(config: TiergateConfig, ledger: Ledger) -> None:
    if config.auth.required and config.auth.master_key is None and not ledger.list_keys():
        raise ConfigError(
            "auth.master_key: auth is required but no key exists; set auth.master_key: env:TIERGATE_MASTER_KEY "
            "(or export TIERGATE_MASTER_KEY), or create a key with 'tiergate keys create --name NAME'"
        )


def start_tracing(config: TiergateConfig, exporter: SpanExporter | None = None) -> Tracing | None:
    """The tracer provider when ``observability.tracing`` is set (opentelemetry imported only then)."""
    t = config.observability.tracing
    if t is None:
        return None
    try:
        return Tracing(
            service_name=t.service_name,
            endpoint=t.endpoint,
            headers=t.headers,
            sample_ratio=t.sample_ratio,
            exporter=exporter,
        )
    except ImportError as exc:
        raise ConfigError(
            f"observability.tracing: needs the OpenTelemetry SDK ({exc.name} is not installed); "
            "pip install 'tiergate[tracing]', or remove observability.tracing"
        ) from None


def create_app(
    config: TiergateConfig, *, ledger: Ledger | None = None, span_exporter: SpanExporter | None = None
) -> web.Application:
    """An aiohttp application serving both client protocols for this config.

    ``span_exporter``: where spans also go when tracing is on (tests give the SDK's in-memory one)."""
    max_body = int(config.server.max_body_mb * 1024 * 1024)
    # api/common.read_body decompresses, bounded; aiohttp would answer br/zstd/corrupt gzip in plain text
    app = web.Application(client_max_size=max_body, handler_args={"auto_decompress": False})
    app["max_body_bytes"] = max_body
    app[BODIES_IN_FLIGHT] = BodiesInFlight(
        max(max_body, int(config.server.max_body_in_flight_mb * 1024 * 1024)),
        config.server.large_body_mb_per_s * 1024 * 1024,
    )
    app[REQUEST_IDS] = IdSource()
    owns_ledger = ledger is None
    ledger = ledger or open_ledger(config.ledger_url, spool=config.ledger_spool_dir, timeout_s=config.ledger_timeout_s)
    check_auth_configured(config, ledger)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        r = config.routing
        upstream = UpstreamHTTP(connect_timeout_s=r.connect_timeout_s)  # no cookie jar: callers never share state
        session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())  # webhooks only
        metrics = Metrics(max_label_values=config.observability.metrics.max_label_values)
        local = (
            LocalModelManager(
                config.local_models,
                registry=metrics.registry,
                on_event=lambda event, model, details: ledger.record(
                    LocalModelEvent(time.time(), model, event, orjson.dumps(details).decode())
                ),
            )
            if config.local_models
            else None
        )
        urls = (
            {m.name: local.base_url(m.name) for m in config.local_models.models}
            if local and config.local_models
            else {}
        )
        probed = await probe_local_capabilities(config, session)  # once, bounded; the family's guess if down
        catalog = build_catalog(config, local_urls=urls, probed=probed)
        deployments = catalog.deployments  # the spend metric's tier label, read at scrape time, not per request
        metrics.per_request.tier_of = lambda name: str(d.tier) if (d := deployments.get(name)) is not None else ""
        for name in catalog.unpriced():  # also in /health and check-config
            log.warning("deployment %s has no price (unknown model, no price: line): recorded at $0", name)
        if local is not None:
            await local.start(wait=True)
        state: SharedState
        outages = Outages(config.on_outage, metrics=metrics)
        if config.state:
            from tiergate.state.redis_state import RedisState

            redis_state = RedisState(config.state, prefix=config.state_prefix, timeout_s=config.state_timeout_s)
            await redis_state.start()  # unreachable Redis at start: refuse to start with a clear error
            state = GuardedState(redis_state, outages)  # later outages: explicit per-concern modes
        else:
            state = MemoryState()
        adapters = protocol_adapters(upstream)  # (client protocol, upstream api) -> adapter
        keys = KeyStore(
            ledger,
            master_key=config.auth.master_key.get_secret_value() if config.auth.master_key else None,
            required=config.auth.required,
            max_failures_per_minute=config.auth.max_failures_per_minute,
            metrics=metrics,
        )
        keys.reload_if_changed()
        # the writer first: a PostgreSQL spool left by the last run is replayed before budgets and sessions
        # are rebuilt from the ledger (docs/guardrails.md, "What the ledger guarantees")
        ledger.start()
        sent = LedgerSeen(ledger)  # alerts already sent, by this process or an earlier one: not sent again
        sent.load()
        alerts = AlertDispatcher(config.alerts, session, seen=sent)
        budgets = BudgetGuard(
            config.budgets, catalog=catalog, state=state, tz=config.timezone, alerts=alerts, outages=outages
        )
        budgets.seed_from_ledger(ledger)
        sessions = SessionTracker(
            config.guardian,
            ledger=ledger,
            alerts=alerts,
            shared=state if config.state else None,
            metrics=metrics,
            tz=config.timezone,
        )
        sessions.load()
        await sync_flags(ledger, state)
        tracing = start_tracing(config, span_exporter)
        executor = Executor(
            catalog=catalog,
            routing=r,
            state=state,
            ledger=ledger,
            metrics=metrics,
            adapters=adapters,
            local=local,
            context_reroute_at=config.guardian.context_reroute_at,
            gates=config.gates.policy(),
            shadow=config.gates.shadow,
        )
        gw = Gateway(
            config=config,
            catalog=catalog,
            ledger=ledger,
            keys=keys,
            state=state,
            metrics=metrics,
            executor=executor,
            upstream=upstream,
            started_at=time.time(),
            budgets=budgets,
            sessions=sessions,
            alerts=alerts,
            local=local,
            outages=outages,
            limits=LimitGuard(
                config.limits, state=state, mode=config.on_outage.limits, metrics=metrics, outages=outages
            )
            if config.limits
            else None,
            tracing=tracing,
        )
        app[GATEWAY] = gw
        ledger_watch = LedgerWatch(ledger, metrics=metrics, alerts=alerts)
        watchers = [
            asyncio.create_task(keys.watch()),
            asyncio.create_task(watch_control(gw, ledger_watch=ledger_watch)),
        ]
        if gw.limits is not None:
            watchers.append(asyncio.create_task(gw.limits.renew_forever()))
        scheduler = start_jobs(gw, session) if config.jobs else None
        if scheduler is not None:
            watchers.append(asyncio.create_task(scheduler.run_forever(), name="job-scheduler"))
        try:
            yield
        finally:
            for w in watchers:
                await stop(w)
            if scheduler is not None:
                await scheduler.close()  # runs in flight give their claims back to other replicas
            sessions.flush()  # session totals since the last tick, before the ledger closes
            await alerts.drain()
            await alerts.close()
            if executor.shadow is not None:
                await executor.shadow.close()
            await session.close()
            await upstream.close()
            if local is not None:
                await local.stop()
            if config.state:
                await state.close()
            if owns_ledger:
                await asyncio.to_thread(ledger.close)
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)  # the spans still queued are exported

    app.cleanup_ctx.append(lifecycle)
    routes = EdgeRoutes(app)
    openai.add_routes(routes)
    anthropic.add_routes(routes)
    responses.add_routes(routes)
    ollama.add_routes(routes)
    codex_catalog.add_routes(routes)
    gemini.add_routes(routes)
    admin.add_routes(routes)
    admin_jobs.add_routes(routes)
    ui.add_routes(app, routes)
    routes.finish()
    return app
