"""The runtime record of one configured local model, and how it reads to a human."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiergate.config.local_models import LocalModelConfig
from tiergate.local.gguf_memory import estimate_file_memory_mb
from tiergate.local.swap_policy import ModelView

HOST = "127.0.0.1"
STABLE_AFTER_S = 30.0  # a server that ran this long before crashing resets the failure count
MAX_AUTO_RESTARTS = 5  # consecutive failures after which only a request retries a load
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 30.0


def backoff_s(failures: int) -> float:
    """Seconds before retrying after ``failures`` consecutive failed loads or crashes."""
    # the exponent is bounded: requests keep retrying a broken model, and 2**1024 does not fit a float
    doublings = min(max(failures - 1, 0), 32)
    return min(BACKOFF_START_S * 2.0**doublings, BACKOFF_MAX_S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def estimate_or_error(path: Path, ctx: int) -> tuple[int | None, str | None]:
    """(MiB, None) from the GGUF, or (None, why) when the file cannot be read."""
    try:
        return estimate_file_memory_mb(path, ctx), None
    except FileNotFoundError:
        return None, f"gguf not found: {path}"
    except OSError as exc:
        return None, f"cannot read gguf {path}: {exc}"


@dataclass(eq=False)
class ModelSlot:
    """State of one model, owned by ``LocalModelManager`` and changed only on its event loop.

    ``state``: stopped | queued | loading | ready | unloading | failed. Attached servers are
    always ``ready``.
    """

    cfg: LocalModelConfig
    memory_mb: int | None = None
    memory_estimated: bool = False
    port: int | None = None
    state: str = "stopped"
    proc: Any = None
    in_flight: int = 0
    queued_seq: int = 0
    drain_seq: int | None = None  # while draining: only requests with a smaller seq are admitted
    drain_for: str | None = None
    wait_reason: str | None = None  # why a queued load has not started, or why a swap is held
    held_until: float = 0.0  # a held swap (min residency, swap rate) may be asked again from then
    on_demand: bool = False  # the current load was asked for by a request (not a default or pinned restore)
    error: str | None = None
    error_detail: str | None = None
    retry_at: float = 0.0
    failures: int = 0
    restart_wanted: bool = False
    since: float = 0.0  # clock time the current state began
    last_used: float = 0.0  # clock time of the last request's end, or of becoming ready (LRU order)
    used_at: float | None = None  # clock time of the last request's end
    ready_at: float = 0.0
    requests_served: int = 0
    loads: int = 0
    swaps_out: int = 0
    crashes: int = 0
    load_time_s: float | None = None

    def __post_init__(self) -> None:
        if self.cfg.attached:
            self.memory_mb, self.state = self.cfg.memory_mb or 0, "ready"
        elif self.cfg.memory_mb is not None:
            self.memory_mb = self.cfg.memory_mb

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def draining(self) -> bool:
        return self.drain_seq is not None

    def admits(self, seq: int) -> bool:
        """Ready for the request numbered ``seq`` (a draining model takes only earlier ones)."""
        return self.state == "ready" and (self.drain_seq is None or seq < self.drain_seq)

    def launch_args(self, port: int, log_dir: Path) -> dict[str, Any]:
        """Keyword arguments of the process factory (``LlamaCppProcess``) for this model's server."""
        m = self.cfg
        assert m.gguf is not None
        extra = [*(("--gpu-layers", str(m.gpu_layers)) if m.gpu_layers is not None else ()), *m.extra_args]
        return {
            "gguf": m.gguf,
            "port": port,
            "host": HOST,
            "ctx": m.server_ctx,
            "threads": m.threads or max(1, (os.cpu_count() or 2) // 2),
            "parallel": m.parallel,
            "alias": m.name,
            "extra_args": extra,
            "log_path": log_dir / f"{m.name}.log",
            "supervise": False,
        }

    def public_state(self) -> str:
        """stopped, queued, loading, ready, busy (serving or draining), unloading or failed."""
        if self.state == "ready" and (self.in_flight or self.draining):
            return "busy"
        return self.state

    def describe(self, now: float, *, pressure: str | None, running: bool) -> str | None:
        """Why this model cannot take a new request now, or None when it can."""
        if pressure:
            return pressure
        if self.state == "ready":
            if not self.draining:
                return None
            return f"draining for swap to {self.drain_for} ({self.in_flight} in flight)"
        if self.state == "loading":
            return f"loading (started {now - self.since:.0f}s ago)"
        if self.state == "queued":
            return f"queued to load: {self.wait_reason}" if self.wait_reason else "queued to load"
        if self.state == "failed":
            return f"failed: {self.error}"
        if self.state == "stopped" and running and self.wait_reason and now < self.held_until:
            return f"stopped: {self.wait_reason}"
        return self.state if running else "stopped"

    def loaded(self, now: float, *, started: float, port: int | None) -> float:
        """Its server answered READY: ready for requests, the errors of earlier tries forgotten; the load time."""
        self.port = port or self.port
        self.load_time_s = took = now - started
        self.loads += 1
        self.ready_at = self.last_used = now
        self.restart_wanted, self.error, self.error_detail = False, None, None
        return took

    def load_failed(self) -> float:
        """Its server did not start: count the failure; seconds until the next try (backoff)."""
        if self.port is not None and not port_free(self.port):
            self.port = None  # another program took it: the retry picks a new one
        self.failures += 1
        return backoff_s(self.failures)

    def crashed(self, now: float) -> None:
        """The server died while ready: count it (a long-lived one starts the failure count again)."""
        self.failures = 1 if now - self.ready_at >= STABLE_AFTER_S else self.failures + 1
        self.crashes += 1
        self.restart_wanted, self.proc = True, None
        self.drain_seq = self.drain_for = None

    def restart_due(self, now: float, *, default: str | None) -> bool:
        """A failed model the watcher loads again by itself: wanted, pinned or the default, backoff over."""
        auto = self.restart_wanted or self.cfg.pinned or self.name == default
        return self.state == "failed" and auto and self.failures <= MAX_AUTO_RESTARTS and now >= self.retry_at

    def view(self, waiting: int) -> ModelView:
        """The policy's view; ``waiting`` requests about to be served count as in flight."""
        return ModelView(
            self.name,
            self.memory_mb or 0,
            self.state,
            self.in_flight + waiting,
            self.cfg.pinned,
            self.cfg.attached,
            self.last_used,
            self.cfg.idle_ttl,
            self.ready_at,
            self.on_demand,
        )

    def status_row(
        self, now: float, wall: float, *, reason: str | None, base_url: str | None, default: bool, waiting: int
    ) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.public_state(),
            "reason": reason,
            "memory_mb": self.memory_mb,
            "memory_estimated": self.memory_estimated,
            "pinned": self.cfg.pinned,
            "default": default,
            "attached": self.cfg.attached,
            "in_flight": self.in_flight,
            "waiting": waiting,
            "requests_served": self.requests_served,
            "last_used": None if self.used_at is None else wall - (now - self.used_at),
            "load_time_s": self.load_time_s,
            "loads": self.loads,
            "swaps_out": self.swaps_out,
            "crashes": self.crashes,
            "idle_ttl_s": self.cfg.idle_ttl,
            "pid": getattr(self.proc, "pid", None),
            "base_url": base_url,
            "error_detail": self.error_detail if self.state == "failed" else None,
        }
