"""GPU memory and utilisation from nvidia-smi, read at scrape time: bounded, cached, absent without a GPU.

One run per ``CACHE_S`` at most (a scrape every second must not fork nvidia-smi
every second), ``TIMEOUT_S`` at most per run (a hung driver must not hang
/metrics); no nvidia-smi on PATH, a failed or timed-out run: no readings, no
error. Parsing is pure (``parse_gpu_readings``); the probe is the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

QUERY = ("--query-gpu=index,memory.used,memory.total,utilization.gpu", "--format=csv,noheader,nounits")
CACHE_S = 5.0
TIMEOUT_S = 2.0
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GpuReading:
    gpu: str  # nvidia-smi's index
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    utilization_ratio: float | None  # 0..1


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def parse_gpu_readings(text: str) -> list[GpuReading]:
    """One reading per line ``index, used MiB, total MiB, utilisation %``; a field it cannot fill is None."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not parts[0]:
            continue
        used, total, util = (_number(p) for p in parts[1:])
        out.append(
            GpuReading(
                parts[0],
                None if used is None else int(used * MIB),
                None if total is None else int(total * MIB),
                None if util is None else util / 100,
            )
        )
    return out


class GpuProbe:
    """The last nvidia-smi readings, refreshed when older than ``cache_s``; one run at a time."""

    def __init__(
        self,
        exe: str | None = None,
        *,
        cache_s: float = CACHE_S,
        timeout_s: float = TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.exe = exe if exe is not None else shutil.which("nvidia-smi")
        self.cache_s, self.timeout_s, self.clock = cache_s, timeout_s, clock
        self._readings: list[GpuReading] = []
        self._at: float | None = None
        self._lock = asyncio.Lock()

    async def readings(self) -> list[GpuReading]:
        if self.exe is None:
            return []
        async with self._lock:
            if self._at is None or self.clock() - self._at >= self.cache_s:
                self._readings = await self._run(self.exe)
                self._at = self.clock()
            return self._readings

    async def _run(self, exe: str) -> list[GpuReading]:
        try:
            proc = await asyncio.create_subprocess_exec(
                exe, *QUERY, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
            )
        except OSError:
            return []
        try:
            async with asyncio.timeout(self.timeout_s):
                stdout, _ = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return []
        if proc.returncode != 0:
            return []
        return parse_gpu_readings(stdout.decode(errors="replace"))
