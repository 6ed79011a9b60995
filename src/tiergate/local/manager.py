"""Load, swap and unload local llama.cpp models inside one memory budget (one manager per app).

How it works (the decisions themselves are pure, in ``swap_policy``):

- ``acquire(name)`` wraps one upstream call. A ready model is marked in use at once
  (no await between the check and the mark, so it cannot be evicted under a request).
  Otherwise the model is queued to load -- once, however many callers ask -- and the
  caller either waits up to ``wait_s`` or gets ``ModelNotReady`` at once while the load
  goes on in the background.
- One worker task performs loads one at a time: it picks the next queued model
  (``serve_order``: grouped by model, oldest group first), asks ``plan_load`` what to
  evict (least recently used idle models; never busy, pinned or attached ones), unloads
  those, then starts the server. When only busy models could make room, they *drain*:
  requests already waiting for them are still served, new ones are not (they overflow
  to the next candidate), and the swap happens when the last request finishes.
- Thrash guard (``SwapGuard``): a load that would evict a model a request brought in less
  than ``min_residency_s`` ago, or that would exceed ``max_swaps`` per ``swap_window_s``, is
  *held*: not queued, the request goes to its next candidate, and the next request after
  the hold asks again (a queued load is not kept: demand may have gone by then).
- A watcher (``model_watcher``) ticks every ``tick_s``: the lock file (an flock on it, or its presence, per
  ``lock_mode``), nvidia-smi (every 5 s, when present and ``gpu_busy_share`` is set),
  crashed servers (restarted with backoff), idle models past their TTL, and pinned/default
  models (the default only when it fits without evicting).
- Ports are stable: a model keeps the port it first got across reloads, so
  ``base_url(name)`` does not change (unless another program takes that port).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from tiergate.background import reraise_if_stopping, stop
from tiergate.config.local_models import LocalModelsConfig
from tiergate.core.errors import ModelNotReady
from tiergate.local.model_metrics import LocalModelMetrics
from tiergate.local.model_slot import (
    BACKOFF_MAX_S,
    HOST,
    ModelSlot,
    estimate_or_error,
    free_port,
)
from tiergate.local.model_watcher import ModelWatcher
from tiergate.local.pressure import PressureMonitor
from tiergate.local.process import LlamaCppProcess
from tiergate.local.swap_policy import (
    CannotFit,
    ModelView,
    SwapGuard,
    SwapHistory,
    plan_load,
    serve_order,
)

log = logging.getLogger("tiergate.local.manager")

NEVER = float("inf")


class LocalModelManager(ModelWatcher):
    """Keeps the right local models loaded within ``cfg.budget_mb``; see the module docstring."""

    def __init__(
        self,
        cfg: LocalModelsConfig,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        process_factory: Callable[..., Any] | None = None,
        tick_s: float = 1.0,
        on_event: Callable[[str, str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.cfg, self._on_event = cfg, on_event  # on_event(event, model, details) feeds the ledger
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self._factory = process_factory or LlamaCppProcess
        self._tick_s = tick_s
        self._slots = {m.name: ModelSlot(m) for m in cfg.models}
        self.metrics = LocalModelMetrics(self.registry, self._slots)
        for slot in self._slots.values():
            self._publish(slot)
        self._seq = itertools.count(1)
        self._waiting: dict[int, str] = {}  # request seq -> model, for requests waiting in acquire()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._running = False
        self._pressure = PressureMonitor(cfg.lock_file, cfg.gpu_busy_share, cfg.lock_mode)
        self._swaps = SwapHistory()
        self._log_dir: Path | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, wait: bool = False) -> None:
        """Estimate memory, start the worker and watcher, and queue the pinned models and the default.
        ``wait=True`` returns only when those are ready or have failed."""
        if self._running:
            return
        self._running = True
        self._changed = asyncio.Event()  # bound to this loop on first wait
        self._log_dir = Path(tempfile.mkdtemp(prefix="tiergate-local-"))
        self._pressure.find_tools()
        for slot in self._slots.values():
            if slot.memory_mb is None and slot.cfg.gguf is not None:
                mem, err = await asyncio.to_thread(estimate_or_error, slot.cfg.gguf, slot.cfg.server_ctx)
                if err:
                    self._fail(slot, err, retry_in=BACKOFF_MAX_S)
                else:
                    slot.memory_mb, slot.memory_estimated = mem, True
        self._refresh_lock()
        self._worker = asyncio.create_task(self._run_worker(), name="local-models-worker")
        self._watcher = asyncio.create_task(self._run_watcher(), name="local-models-watcher")
        wanted = [s.name for s in self._slots.values() if s.cfg.pinned or s.name == self.cfg.default]
        for name in wanted:
            self.request_load(name, on_demand=False)
        while wait and any(self._slots[n].state in ("queued", "loading", "unloading") for n in wanted):
            await self._changed.wait()

    async def stop(self) -> None:
        """Stop every server tiergate started (SIGTERM, then SIGKILL after a grace period)."""
        if not self._running:
            return
        self._running = False
        for task in (self._worker, self._watcher):
            await stop(task)
        self._worker = self._watcher = None
        if self._tasks:  # unloads in progress finish on their own (bounded by the stop grace)
            await asyncio.gather(*self._tasks, return_exceptions=True)
        managed = [s for s in self._slots.values() if not s.cfg.attached]
        await asyncio.gather(*(s.proc.stop() for s in managed if s.proc is not None), return_exceptions=True)
        for slot in managed:
            if slot.state == "ready":
                self.metrics.unloads.labels(slot.name, "stopped").inc()
            slot.proc, slot.drain_seq, slot.drain_for = None, None, None
            self._set_state(slot, "stopped")
        self._pressure.release_lock()
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
        self._notify()

    # ------------------------------------------------------------------ queries
    def base_url(self, name: str) -> str:
        """The model's OpenAI base URL (ending /v1); stable across reloads (see module docstring)."""
        slot = self._slot(name)
        if slot.cfg.attach is not None:
            return slot.cfg.attach
        return f"http://{HOST}:{self._port_for(slot)}/v1"

    def unavailable(self) -> dict[str, str]:
        """Model name -> why it cannot serve a request right now (cheap, no I/O)."""
        out = {}
        for slot in self._slots.values():
            self._observe(slot)
            why = self._describe(slot)
            if why is not None:
                out[slot.name] = why
        return out

    def states(self) -> dict[str, str]:
        """Model name -> stopped | queued | loading | ready | unloading | failed (for placement)."""
        return {name: slot.state for name, slot in self._slots.items()}

    def status(self) -> list[dict[str, Any]]:
        """One row per model, for ``tiergate models`` and the admin endpoint."""
        now, wall = self._clock(), time.time()
        waiting = list(self._waiting.values())
        rows = []
        for slot in self._slots.values():
            self._observe(slot)
            url = self.base_url(slot.name) if slot.port or slot.cfg.attached else None
            why, default, n = self._describe(slot), slot.name == self.cfg.default, waiting.count(slot.name)
            rows.append(slot.status_row(now, wall, reason=why, base_url=url, default=default, waiting=n))
        return rows

    def pressure_reason(self) -> str | None:
        """Why other GPU work makes the models busy (a lock file held, nvidia-smi's figures), or None; no I/O."""
        return self._pressure.reason()

    @property
    def waiting(self) -> int:
        """Requests waiting in acquire() for a model to load or free up (the queue-depth metric)."""
        return len(self._waiting)

    # ------------------------------------------------------------------ requests
    @contextlib.asynccontextmanager
    async def acquire(self, name: str, *, wait_s: float | None = None) -> AsyncIterator[str]:
        """Hold ``name`` loaded and in use around one upstream call; yields its base URL.

        Raises ``ModelNotReady`` when it cannot serve within ``wait_s`` (default
        ``cfg.load_wait_s``; 0 = at once); a load it triggered goes on in the background.
        """
        slot = self._slot(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, self.cfg.load_wait_s if wait_s is None else wait_s)
        seq = next(self._seq)
        self._waiting[seq] = name
        try:
            while (why := self._ready_or_reason(slot, seq)) is not None:
                remaining = deadline - loop.time()
                hopeless = slot.state == "failed" and slot.retry_at - self._clock() > remaining
                if remaining <= 0 or hopeless or not self._running:
                    raise ModelNotReady(name, why)
                changed = self._changed
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(remaining, self._tick_s))
        finally:
            del self._waiting[seq]
        slot.in_flight += 1
        self._publish(slot)
        try:
            yield self.base_url(name)
        finally:
            slot.in_flight -= 1
            slot.requests_served += 1
            slot.last_used = slot.used_at = self._clock()
            self._publish(slot)
            self._notify()

    def request_load(self, name: str, *, on_demand: bool = True) -> None:
        """Queue ``name`` to load in the background unless it is loaded, loading, cooling down
        after a failure, the GPU is busy or the swap guard holds it. Idempotent; returns at once.
        ``on_demand``: a request wants it (such a load earns the minimum residency)."""
        slot = self._slot(name)
        if not self._running or slot.cfg.attached or slot.state in ("queued", "loading", "ready", "unloading"):
            return
        if (slot.state == "failed" and self._clock() < slot.retry_at) or self._pressure_for(slot):
            return
        if slot.memory_mb is None and slot.cfg.gguf is not None:
            mem, err = estimate_or_error(slot.cfg.gguf, slot.cfg.server_ctx)
            if err:
                slot.failures += 1
                self._fail(slot, err, retry_in=BACKOFF_MAX_S)
                return
            slot.memory_mb, slot.memory_estimated = mem, True
        plan = plan_load(self._views(), name, budget_mb=self.cfg.budget_mb, guard=self._guard())
        if isinstance(plan, CannotFit) and plan.held:
            self._hold(slot, plan)
            return
        slot.queued_seq, slot.wait_reason, slot.on_demand = next(self._seq), None, on_demand
        self._set_state(slot, "queued")
        self._notify()

    def _ready_or_reason(self, slot: ModelSlot, seq: int) -> str | None:
        if not self._running:
            return "stopped (local model manager not running)"
        self._observe(slot)
        busy = self._pressure_for(slot)
        if busy:
            return busy
        if slot.admits(seq):
            return None
        self.request_load(slot.name)
        return self._describe(slot) or "not ready"

    # ------------------------------------------------------------------ worker: one load at a time
    async def _run_worker(self) -> None:
        while True:
            changed = self._changed
            job = self._next_job()
            if job is None:
                await changed.wait()
                continue
            try:
                await self._execute(*job)
            except Exception as exc:  # never let one bad load stop all future loads (a cancellation is not one)
                reraise_if_stopping(exc)
                log.exception("local model load of %s failed unexpectedly", job[0].name)
                self._fail(job[0], f"unexpected error: {exc}", retry_in=BACKOFF_MAX_S)

    def _next_job(self) -> tuple[ModelSlot, tuple[str, ...]] | None:
        while True:
            queued = [s for s in self._slots.values() if s.state == "queued"]
            for slot in [s for s in queued if self._pressure_for(s)]:
                self._set_state(slot, "stopped")  # other work has the GPU: drop the load
                queued.remove(slot)
                self._notify()
            if not queued:
                self._set_drains((), None)
                return None
            queue = [(s.name, s.queued_seq) for s in queued]
            queue += [(m, seq) for seq, m in self._waiting.items() if self._slots[m].state == "queued"]
            loaded = {s.name for s in self._slots.values() if s.state == "ready"}
            target = self._slots[serve_order(queue, loaded)[0][0]]
            plan = plan_load(self._views(), target.name, budget_mb=self.cfg.budget_mb, guard=self._guard())
            if isinstance(plan, CannotFit):
                if plan.held:  # the guard changed its mind since the load was queued: drop it
                    self._hold(target, plan)
                    continue
                if plan.permanent:
                    self._fail(target, f"cannot fit: {plan.reason}", retry_in=NEVER)
                    continue
                if target.wait_reason != plan.reason:
                    target.wait_reason = plan.reason
                    self._notify()
                self._set_drains(plan.wait_for, target.name)
                return None
            self._set_drains((), None)
            for name in plan.evict:
                self._set_state(self._slots[name], "unloading")
            target.wait_reason = None
            self._set_state(target, "loading")
            self._notify()
            return target, plan.evict

    async def _execute(self, target: ModelSlot, evict: tuple[str, ...]) -> None:
        if evict:
            self._swaps.record(self._clock())
        for name in evict:
            victim = self._slots[name]
            victim.swaps_out += 1
            self.metrics.swaps.labels(name, target.name).inc()
            self._event("swap", name, {"for": target.name})
            await self._unload(victim, "evicted")
        self._refresh_lock()
        if self._pressure_for(target):
            self._set_state(target, "stopped")
            self._notify()
            return
        large = self.cfg.lock_file is not None and (target.memory_mb or 0) > self.cfg.budget_mb / 2
        if large and not self._pressure.take_lock(f"tiergate pid {os.getpid()} loading {target.name}\n"):
            self._set_state(target, "stopped")  # the lock appeared since the last stat: other work has the GPU
            self._notify()
            return
        try:
            await self._start_process(target)
        finally:
            if large:
                self._pressure.release_lock()

    async def _start_process(self, slot: ModelSlot) -> None:
        m = slot.cfg
        assert self._log_dir is not None
        slot.proc = proc = self._factory(**slot.launch_args(self._port_for(slot), self._log_dir))
        started = self._clock()
        try:
            await proc.start(timeout_s=self.cfg.load_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any start failure is reported as the model's state
            slot.proc = None
            with contextlib.suppress(Exception):
                await proc.stop(grace_s=1.0)
            retry_in = slot.load_failed()
            self.metrics.load_failures.labels(m.name).inc()
            self._event("load_failed", m.name, {"error": str(exc)[:300]})
            text = str(exc) or type(exc).__name__
            self._fail(slot, text.splitlines()[0], retry_in=retry_in, detail=text)
            return
        took = slot.loaded(self._clock(), started=started, port=getattr(proc, "port", None))
        self.metrics.loads.labels(m.name).inc()
        self.metrics.load_seconds.labels(m.name).observe(took)
        self._event("load", m.name, {"load_time_s": round(took, 3)})
        self._set_state(slot, "ready")
        self._notify()

    def _event(self, event: str, model: str, details: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # recording must never break model management
            self._on_event and self._on_event(event, model, details)

    async def _unload(self, slot: ModelSlot, reason: str) -> None:
        self._set_state(slot, "unloading")
        proc, slot.proc = slot.proc, None
        if proc is not None:
            with contextlib.suppress(Exception):
                await proc.stop()
        slot.drain_seq = slot.drain_for = None
        slot.failures, slot.restart_wanted = 0, False
        self.metrics.unloads.labels(slot.name, reason).inc()
        self._event("unload", slot.name, {"reason": reason})
        self._set_state(slot, "stopped")
        self._notify()

    # ------------------------------------------------------------------ helpers
    def _slot(self, name: str) -> ModelSlot:
        try:
            return self._slots[name]
        except KeyError:
            raise KeyError(f"no local model named {name!r}; configured: {', '.join(self._slots)}") from None

    def _port_for(self, slot: ModelSlot) -> int:
        if slot.port is None:
            slot.port = free_port()
        return slot.port

    def _pressure_for(self, slot: ModelSlot) -> str | None:
        return self._pressure.reason_for(slot)

    def _describe(self, slot: ModelSlot) -> str | None:
        return slot.describe(self._clock(), pressure=self._pressure_for(slot), running=self._running)

    def _views(self) -> list[ModelView]:
        waiting: dict[str, int] = {}
        for seq, name in self._waiting.items():
            if self._slots[name].admits(seq):
                waiting[name] = waiting.get(name, 0) + 1  # about to be served: as good as in flight
        return [s.view(waiting.get(s.name, 0)) for s in self._slots.values()]

    def _guard(self) -> SwapGuard:
        c = self.cfg
        return self._swaps.guard(self._clock(), c.min_residency_s, c.max_swaps, c.swap_window_s)

    def _hold(self, slot: ModelSlot, plan: CannotFit) -> None:
        """The swap guard refuses ``slot``'s load for now: not queued; a later request asks again."""
        now = self._clock()
        if slot.held_until <= now:  # once per hold, not once per request
            self._event("swap_held", slot.name, {"reason": plan.reason})
        slot.wait_reason, slot.held_until = plan.reason, max(plan.retry_at or now, now)
        if slot.state == "queued":
            self._set_state(slot, "stopped")
            self._notify()
        self._publish(slot)

    def _set_drains(self, names: tuple[str, ...], target: str | None) -> None:
        changed = False
        for slot in self._slots.values():
            drain = slot.name in names and slot.state == "ready"
            if drain and (slot.drain_seq is None or slot.drain_for != target):
                slot.drain_seq, slot.drain_for = next(self._seq), target
            elif not drain and slot.drain_seq is not None:
                slot.drain_seq = slot.drain_for = None
            else:
                continue
            changed = True
            self._publish(slot)
        if changed:
            self._notify()

    def _fail(self, slot: ModelSlot, why: str, *, retry_in: float, detail: str | None = None) -> None:
        slot.error, slot.error_detail = why, detail or why
        slot.retry_at = self._clock() + retry_in
        self._set_state(slot, "failed")
        self._notify()

    def _set_state(self, slot: ModelSlot, state: str) -> None:
        if slot.state != state:
            slot.state, slot.since = state, self._clock()
        self._publish(slot)

    def _publish(self, slot: ModelSlot) -> None:
        self.metrics.set_state(slot.name, slot.public_state())
        self.metrics.in_flight.labels(slot.name).set(slot.in_flight)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
