"""The local model manager's watcher: every ``tick_s``, what changed outside a request.

The lock file and GPU pressure (nvidia-smi every 5 s, when present), servers that crashed while ready
(restarted with backoff), idle models past their TTL, and pinned models and the default to bring back.
A mixin of ``LocalModelManager``: it acts on the manager's slots through the manager's own transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from tiergate.background import reraise_if_stopping
from tiergate.local.model_slot import backoff_s
from tiergate.local.swap_policy import expired_idle, residents_to_restore

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from tiergate.config.local_models import LocalModelsConfig
    from tiergate.local.model_metrics import LocalModelMetrics
    from tiergate.local.model_slot import ModelSlot
    from tiergate.local.pressure import PressureMonitor
    from tiergate.local.swap_policy import ModelView

log = logging.getLogger("tiergate.local.manager")


class ModelWatcher:
    # what the watcher reads and calls of the manager (LocalModelManager provides each)
    cfg: LocalModelsConfig
    metrics: LocalModelMetrics
    _slots: dict[str, ModelSlot]
    _pressure: PressureMonitor
    _clock: Callable[[], float]
    _tick_s: float

    def request_load(self, name: str, *, on_demand: bool = True) -> None:
        raise NotImplementedError

    def _views(self) -> list[ModelView]:
        raise NotImplementedError

    def _set_state(self, slot: ModelSlot, state: str) -> None:
        raise NotImplementedError

    def _fail(self, slot: ModelSlot, why: str, *, retry_in: float, detail: str | None = None) -> None:
        raise NotImplementedError

    def _event(self, event: str, model: str, details: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _unload(self, slot: ModelSlot, reason: str) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        raise NotImplementedError

    def _notify(self) -> None:
        raise NotImplementedError

    async def _run_watcher(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:
                reraise_if_stopping(exc)
                log.exception("local model watcher tick failed")
            await asyncio.sleep(self._tick_s)

    async def tick(self) -> None:
        """One watcher pass: pressure, crashes, idle TTLs, restarts, pinned models and the default."""
        self._refresh_lock()
        await self._probe_gpu()
        for slot in self._slots.values():
            self._observe(slot)
        now = self._clock()
        keep = (self.cfg.default,) if self.cfg.default else ()
        for name in expired_idle(self._views(), now, keep=keep):
            slot = self._slots[name]
            self._set_state(slot, "unloading")
            self._spawn(self._unload(slot, "idle"))
        for slot in self._slots.values():
            if slot.restart_due(now, default=self.cfg.default):
                self.request_load(slot.name, on_demand=slot.on_demand)
        for name in residents_to_restore(self._views(), self.cfg.budget_mb, default=self.cfg.default):
            self.request_load(name, on_demand=False)

    def _observe(self, slot: ModelSlot) -> None:
        """Notice a server that died while ready (sync, cheap) and schedule its restart."""
        proc = slot.proc
        if slot.state != "ready" or proc is None or proc.running:
            return
        slot.crashed(self._clock())
        self.metrics.unloads.labels(slot.name, "crashed").inc()
        self._event("crash", slot.name, {"crashes": slot.crashes})
        with contextlib.suppress(RuntimeError):  # outside the loop (a sync caller): nothing to clean up with
            asyncio.get_running_loop()
            self._spawn(proc.stop(grace_s=0.5))
        self._fail(slot, f"crashed (exit code {proc.returncode}); restarting", retry_in=backoff_s(slot.failures))

    def _refresh_lock(self) -> None:
        if self._pressure.refresh_lock():
            self._notify()
        self.metrics.gpu_busy.set(1 if self._pressure.reason() else 0)

    async def _probe_gpu(self) -> None:
        if await self._pressure.probe_slots(self._slots.values(), self._clock()):
            self._notify()
