"""Serving: one process, or N worker processes sharing one port (SO_REUSEPORT).

Workers share keys, session kills, emergency mode and the ledger through the
ledger. Budgets and guardian spend/age limits need ``state: redis://...`` to
be shared; without it, and always for the local model manager (one process
owns the model servers), several workers are refused rather than silently
enforcing limits per process (docs/decisions/0002-workers.md).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import signal
import socket
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from tiergate.config.schema import TiergateConfig
from tiergate.core.errors import ConfigError

T = TypeVar("T")


def per_process_state(cfg: TiergateConfig) -> list[str]:
    """Config that needs state shared between workers, which this version keeps per process."""
    found = []
    if cfg.budgets and cfg.state is None:
        found.append("budgets (without state: redis://...)")
    if cfg.limits and cfg.state is None:
        found.append("limits (without state: redis://...)")
    if (cfg.guardian.session_max_usd is not None or cfg.guardian.session_max_age is not None) and cfg.state is None:
        found.append("guardian.session_max_usd / session_max_age (without state: redis://...)")
    if cfg.local_models is not None:
        found.append("local_models")
    return found


# Young-generation collections every GC_YOUNG_THRESHOLD container allocations (CPython's default is 700).
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the request path (docs/decisions/0003-hot-path.md).

    Each proxied request allocates a few hundred objects, nearly all freed by
    reference counting; with CPython's defaults a young collection ran every few
    requests and a full one walked every object of the app (config, catalog,
    aiohttp, pydantic). Freezing what startup built moves it out of the
    collector's sight, and a higher young threshold makes collections rare;
    cycles are still collected. Measured: about 10% less CPU per request.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def check_workers(cfg: TiergateConfig, workers: int) -> None:
    if workers < 1:
        raise ConfigError("--workers: must be 1 or more")
    shared = per_process_state(cfg)
    if workers > 1 and shared:
        raise ConfigError(
            f"--workers {workers}: {', '.join(shared)} would be enforced per process, not across workers; "
            "run one worker, or set state: redis://... for budgets and limits"
        )


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop where it is installed (not on Windows): with tiergate's own upstream
    client every socket the request path touches is an asyncio transport, and uvloop's are ~8-12 % less
    CPU per request at 4 connections (docs/decisions/0004-upstream-client.md)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def serve(
    cfg: TiergateConfig,
    source: str,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    announce: bool = True,
    ready: Any = None,
) -> None:
    """Serve until SIGTERM/SIGINT; then drain (server.drain_timeout_s), cut what is left, flush the ledger.

    aiohttp's own stop closes idle keep-alive connections at once (a request
    already on its way there is lost) and waits 60 s twice for a handler, so a
    stream in flight held the process for two minutes; the drain in
    ``client_protocol.ConnectionGate`` answers those requests and bounds the wait.
    """
    from aiohttp import web

    from tiergate.api.gateway import GATEWAY
    from tiergate.api.ui_live import LIVE_HUB
    from tiergate.app import create_app
    from tiergate.background import stop as stop_task
    from tiergate.client_protocol import CUT_WAIT_S, ConnectionGate

    # shutdown_timeout: aiohttp's last wait, for handlers the drain has cut already
    runner = web.AppRunner(create_app(cfg), access_log=None, handle_signals=False, shutdown_timeout=CUT_WAIT_S)
    await runner.setup()
    assert runner.server is not None
    gate = ConnectionGate(runner.server, cfg.server, metrics=runner.app[GATEWAY].metrics, app=runner.app)
    loop = asyncio.get_running_loop()
    # before the listening line: a SIGTERM sent as soon as it is read must find the handler
    stop, hurry = asyncio.Event(), asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        # A second Ctrl-C ends the drain at once. Not a second SIGTERM: systemd signals every process of
        # the unit and the --workers parent forwards its own, so each worker may see two at once.
        if stop.is_set() and sig == signal.SIGINT:
            hurry.set()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    listener = await loop.create_server(gate, host, port, backlog=1024, reuse_port=reuse_port)
    sweeper = asyncio.create_task(gate.sweep_forever())
    tune_gc()  # after startup built its long-lived objects
    actual = listener.sockets[0].getsockname()[1] if listener.sockets else port
    if announce:
        print(
            f"tiergate listening on http://{host}:{actual} (config: {source}; "
            f"{len(cfg.deployments)} deployments; ledger: {cfg.ledger_display})",
            flush=True,
        )
    if ready is not None:
        ready.put(actual)
    await stop.wait()
    listener.close()  # stop accepting first
    runner.app[LIVE_HUB].stop()  # open dashboard streams end now rather than hold the drain
    if announce:
        print(
            f"tiergate stopping: answering requests in flight (up to {cfg.server.drain_timeout_s:g} s), "
            "then flushing the ledger",
            flush=True,
        )
    await gate.drain(cfg.server.drain_timeout_s, hurry)
    await stop_task(sweeper)
    await runner.cleanup()


def _worker(
    cfg: TiergateConfig, source: str, host: str, port: int, ready: Any, log: tuple[str, str] | None = None
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards a SIGTERM instead
    if log is not None:  # a spawned process starts with no logging set up: the parent's level and format
        from tiergate.observability.logs import configure_logging

        configure_logging(*log)
    try:
        run_loop(serve(cfg, source, host, port, reuse_port=True, announce=False, ready=ready))
    except Exception as exc:  # reported to the parent, which exits non-zero
        ready.put(f"error: {exc}")
        sys.exit(1)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def run_workers(
    cfg: TiergateConfig, source: str, host: str, port: int, workers: int, *, log: tuple[str, str] | None = None
) -> None:
    """Start N workers on one port, announce once they all listen, stop them all on SIGTERM/SIGINT."""
    port = port or _free_port(host)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(cfg, source, host, port, ready, log), daemon=False) for _ in range(workers)
    ]
    for p in procs:
        p.start()
    stop = {"sig": False}

    def forward(*_: object) -> None:
        stop["sig"] = True
        for p in procs:
            if p.is_alive() and p.pid:
                p.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for _ in procs:
        answer = ready.get(timeout=120)
        if isinstance(answer, str):
            forward()
            raise ConfigError(f"a worker failed to start: {answer}")
    print(
        f"tiergate listening on http://{host}:{port} (config: {source}; {workers} workers; "
        f"{len(cfg.deployments)} deployments; ledger: {cfg.ledger_display})",
        flush=True,
    )
    for p in procs:
        p.join()
    print("tiergate stopped: every worker finished its requests and flushed the ledger", flush=True)
