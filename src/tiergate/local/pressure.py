"""Is the accelerator wanted by other work? A lock file, and nvidia-smi's memory report.

Parsing and the verdict are pure; the probes (a stat, one nvidia-smi run) are small
functions the manager calls from its watcher task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Collection, Iterable
from pathlib import Path

log = logging.getLogger("tiergate.local.pressure")

NVIDIA_SMI_TIMEOUT_S = 5.0
GPU_PROBE_EVERY_S = 5.0
GPU_TOTAL_ARGS = ("--query-gpu=memory.total", "--format=csv,noheader,nounits")
GPU_APPS_ARGS = ("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")


def lock_file_reason(path: Path | None, *, exists: bool, ours: bool) -> str | None:
    """The busy reason for a lock file that exists and was not created by this gateway."""
    if path is None or not exists or ours:
        return None
    return f"gpu busy: lock file {path} exists"


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


class PressureMonitor:
    """The current verdict on other GPU work, refreshed by the manager's watcher.

    ``reason()`` is cheap (no I/O): it reads what the last ``refresh_lock()`` (a stat) and
    ``probe_gpu()`` (nvidia-smi, at most every 5 s, only when on PATH) found.
    """

    def __init__(self, lock_file: Path | None, gpu_busy_share: float | None) -> None:
        self.lock_file, self.share = lock_file, gpu_busy_share
        self.lock_exists = self.own_lock = False
        self.gpu_reason: str | None = None
        self._nvidia_smi: str | None = None
        self._next_probe = 0.0

    def find_tools(self) -> None:
        self._nvidia_smi = shutil.which("nvidia-smi") if self.share is not None else None

    def reason(self) -> str | None:
        return lock_file_reason(self.lock_file, exists=self.lock_exists, ours=self.own_lock) or self.gpu_reason

    def refresh_lock(self) -> bool:
        """Stat the lock file; True when the verdict changed."""
        exists = self.lock_file is not None and os.path.exists(self.lock_file)
        changed, self.lock_exists = exists != self.lock_exists, exists
        return changed

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
        """Create the lock file for a large load. False when it exists (other work has the GPU);
        True when it was taken, or when it cannot be created at all (logged; the load goes on)."""
        if self.lock_file is None:
            return True
        try:
            self.own_lock = create_lock_file(self.lock_file, text)
        except OSError as exc:
            log.warning("cannot create lock file %s: %s", self.lock_file, exc)
            return True
        if not self.own_lock:
            self.lock_exists = True
        return self.own_lock

    def release_lock(self) -> None:
        if self.own_lock and self.lock_file is not None:
            remove_lock_file(self.lock_file)
        self.own_lock = False
        self.refresh_lock()
