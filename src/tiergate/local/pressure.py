"""Is the accelerator wanted by other work? A lock file, and nvidia-smi's memory report.

The lock file has two meanings (``local_models.lock_mode``):

- ``flock`` (default): busy while another process holds an flock on it, as the shell
  mutex ``exec 200>/var/run/gpu.lock; flock -n 200`` does. That mutex leaves the file
  behind when it is released, so the file's presence means nothing; a missing file is free.
  The probe takes the lock for an instant (non-blocking) and lets it go.
- ``exists``: busy while the file exists (a job creates it and deletes it when done).

Large loads take the lock in the same sense (flock it, or create the file exclusively),
so other GPU work sees tiergate too. Parsing and the verdicts are pure; the probes (an
open+flock or a stat, one nvidia-smi run) are small functions the manager's watcher calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the slot's shape only; model_slot imports nothing of this module
    from tiergate.local.model_slot import ModelSlot

if sys.platform != "win32":
    import fcntl

log = logging.getLogger("tiergate.local.pressure")

NVIDIA_SMI_TIMEOUT_S = 5.0
GPU_PROBE_EVERY_S = 5.0
GPU_TOTAL_ARGS = ("--query-gpu=memory.total", "--format=csv,noheader,nounits")
GPU_APPS_ARGS = ("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")


def lock_file_reason(path: Path | None, *, held: bool, ours: bool, mode: str = "flock") -> str | None:
    """The busy reason for a lock file held (flocked, or present in ``exists`` mode) by someone else."""
    if path is None or not held or ours:
        return None
    if mode == "exists":
        return f"gpu busy: lock file {path} exists"
    return f"gpu busy: lock file {path} is locked (flock) by another process"


def parse_gpu_total_mb(text: str) -> int:
    """Sum of ``memory.total`` over all GPUs (MiB), from ``csv,noheader,nounits`` output."""
    total = 0
    for line in text.splitlines():
        line = line.strip()
        if line:
            total += int(float(line))
    return total


def parse_compute_apps(text: str) -> list[tuple[int, int]]:
    """``(pid, used MiB)`` per compute process; lines nvidia-smi cannot fill (``[N/A]``) are skipped."""
    apps = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2:
            continue
        try:
            apps.append((int(parts[0]), int(float(parts[1]))))
        except ValueError:
            continue
    return apps


def gpu_pressure_reason(
    total_mb: int, apps: Iterable[tuple[int, int]], *, own_pids: Collection[int], exempt_mb: int, share: float
) -> str | None:
    """Busy when processes other than ours (less ``exempt_mb``: attached local servers we know of)
    use more than ``share`` of the GPU memory."""
    if total_mb <= 0:
        return None
    other = sum(mb for pid, mb in apps if pid not in own_pids)
    other = max(0, other - exempt_mb)
    used = other / total_mb
    if used <= share:
        return None
    return f"gpu busy: other processes use {used:.0%} of GPU memory (limit {share:.0%})"


async def query_nvidia_smi(exe: str) -> tuple[str, str] | None:
    """The two nvidia-smi reports (total memory, compute apps), or None when it fails."""
    out = []
    for args in (GPU_TOTAL_ARGS, GPU_APPS_ARGS):
        try:
            proc = await asyncio.create_subprocess_exec(
                exe, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
            )
        except OSError:
            return None
        try:
            stdout, _ = await asyncio.wait_for(proc.communicate(), NVIDIA_SMI_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return None
        if proc.returncode != 0:
            return None
        out.append(stdout.decode(errors="replace"))
    return out[0], out[1]


def create_lock_file(path: Path, text: str) -> bool:
    """Create ``path`` exclusively; False when it already exists (someone else holds it)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


def remove_lock_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def flock_held(path: Path) -> bool:
    """True while another open file holds an flock on ``path``; a missing or unreadable file is free."""
    if sys.platform == "win32":  # no flock: the file's presence is all there is to go by
        return os.path.exists(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def take_flock(path: Path, text: str) -> int | None:
    """Open (creating) ``path`` and flock it without blocking; the fd holding the lock, or None when
    another process holds it. The file stays after release, like the shell mutex's."""
    if sys.platform == "win32":
        return 0 if create_lock_file(path, text) else None
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # who holds it, for a human reading the file
        os.ftruncate(fd, 0)
        os.write(fd, text.encode())
    return fd


def release_flock(path: Path, fd: int) -> None:
    if sys.platform == "win32":
        remove_lock_file(path)
        return
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class PressureMonitor:
    """The current verdict on other GPU work, refreshed by the manager's watcher.

    ``reason()`` is cheap (no I/O): it reads what the last ``refresh_lock()`` (a stat) and
    ``probe_gpu()`` (nvidia-smi, at most every 5 s, only when on PATH) found.
    """

    def __init__(self, lock_file: Path | None, gpu_busy_share: float | None, lock_mode: str = "flock") -> None:
        self.lock_file, self.share, self.mode = lock_file, gpu_busy_share, lock_mode
        self.lock_held = self.own_lock = False
        self._lock_fd: int | None = None  # flock mode: the open file holding our lock
        self.gpu_reason: str | None = None
        self._nvidia_smi: str | None = None
        self._next_probe = 0.0

    def find_tools(self) -> None:
        self._nvidia_smi = shutil.which("nvidia-smi") if self.share is not None else None

    def reason(self) -> str | None:
        lock = lock_file_reason(self.lock_file, held=self.lock_held, ours=self.own_lock, mode=self.mode)
        return lock or self.gpu_reason

    def refresh_lock(self) -> bool:
        """Probe the lock file (an flock attempt, or a stat); True when the verdict changed."""
        if self.lock_file is None:
            held = False
        elif self.mode == "exists":
            held = os.path.exists(self.lock_file)
        else:  # while we hold it ourselves the probe fails too; reason() discounts our own lock
            held = flock_held(self.lock_file)
        changed, self.lock_held = held != self.lock_held, held
        return changed

    def reason_for(self, slot: ModelSlot) -> str | None:
        """Other GPU work makes every model that uses budget memory busy (a remote attach does not)."""
        if slot.cfg.attached and not slot.memory_mb:
            return None
        return self.reason()

    async def probe_slots(self, slots: Iterable[ModelSlot], now: float) -> bool:
        """``probe_gpu`` for these models: their own servers' memory is not other work; True on a change."""
        slots = list(slots)
        own = {s.proc.pid for s in slots if s.proc is not None and s.proc.pid}
        exempt = sum(s.memory_mb or 0 for s in slots if s.cfg.attached)
        return await self.probe_gpu(now, own_pids=own, exempt_mb=exempt)

    async def probe_gpu(self, now: float, *, own_pids: Collection[int], exempt_mb: int) -> bool:
        """Ask nvidia-smi when due; True when the verdict changed."""
        if self._nvidia_smi is None or self.share is None or now < self._next_probe:
            return False
        self._next_probe = now + GPU_PROBE_EVERY_S
        out = await query_nvidia_smi(self._nvidia_smi)
        reason = None
        if out is not None:
            reason = gpu_pressure_reason(
                parse_gpu_total_mb(out[0]),
                parse_compute_apps(out[1]),
                own_pids=own_pids,
                exempt_mb=exempt_mb,
                share=self.share,
            )
        changed, self.gpu_reason = reason != self.gpu_reason, reason
        return changed

    def take_lock(self, text: str) -> bool:
        """Take the lock for a large load. False when another process holds it (other work has the
        GPU); True when it was taken, or when it cannot be taken at all (logged; the load goes on)."""
        if self.lock_file is None:
            return True
        try:
            if self.mode == "exists":
                self.own_lock = create_lock_file(self.lock_file, text)
            else:
                self._lock_fd = take_flock(self.lock_file, text)
                self.own_lock = self._lock_fd is not None
        except OSError as exc:
            log.warning("cannot take lock file %s: %s", self.lock_file, exc)
            return True
        if not self.own_lock:
            self.lock_held = True
        return self.own_lock

    def release_lock(self) -> None:
        if self.own_lock and self.lock_file is not None:
            if self._lock_fd is not None:
                release_flock(self.lock_file, self._lock_fd)
            else:
                remove_lock_file(self.lock_file)
        self.own_lock, self._lock_fd = False, None
        self.refresh_lock()
