"""Helpers both benchmarks share: log lines, per-core CPU accounting, free ports, waiting for a quiet machine."""

from __future__ import annotations

import socket
import sys
import time

PROXY_CPU = "0"  # the target under test
LOAD_CPU = "1"  # load generator, upstream
FOREIGN_MAX = 15.0  # % of a core used by other processes before a measurement is redone


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_times() -> dict[str, tuple[int, int]]:
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                vals = list(map(int, vals))
                idle = vals[3] + vals[4]
                out[name[3:]] = (sum(vals[:8]) - idle, sum(vals[:8]))
    return out


def busy_pct(before, after, cpu: str) -> float:
    b = after[cpu][0] - before[cpu][0]
    t = after[cpu][1] - before[cpu][1]
    return 100.0 * b / t if t else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet_wait(max_wait: float) -> float:
    deadline = time.monotonic() + max_wait
    while True:
        a = cpu_times()
        time.sleep(0.3)
        b = cpu_times()
        busy = max(busy_pct(a, b, PROXY_CPU), busy_pct(a, b, LOAD_CPU))
        if busy < FOREIGN_MAX / 2 or time.monotonic() > deadline:
            return busy
