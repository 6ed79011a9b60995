"""Scrape-time series: nvidia-smi's report read, local throughput between scrapes, the snapshot rendered."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from tiergate.observability.gpu import MIB, GpuProbe, GpuReading, parse_gpu_readings
from tiergate.observability.metrics import Metrics
from tiergate.observability.scrape import LocalThroughput, ScrapeSnapshot


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("", []),
        ("0, 1024, 24576, 37\n", [GpuReading("0", 1024 * MIB, 24576 * MIB, 0.37)]),
        (
            "0, 10, 20, 0\n1, [N/A], 8192, [Not Supported]\n",
            [GpuReading("0", 10 * MIB, 20 * MIB, 0.0), GpuReading("1", None, 8192 * MIB, None)],
        ),
        ("garbage line\n, 1, 2, 3\n", []),
    ],
)
def test_nvidia_smi_report_parsed(text, want):
    assert parse_gpu_readings(text) == want


def test_local_throughput_is_the_ratio_of_growth_between_scrapes():
    t = LocalThroughput()
    assert t.update({"local": (100, 2.0)}) == {"local": 50.0}
    assert t.update({"local": (400, 4.0)}) == {"local": 150.0}
    assert t.update({"local": (400, 4.0)}) == {"local": 150.0}  # nothing new: the last figure stays


def _fake_smi(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\necho run >> {tmp_path}/runs\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def test_gpu_probe_caches_and_bounds_nvidia_smi(tmp_path):
    now = [0.0]
    probe = GpuProbe(_fake_smi(tmp_path, "echo '0, 512, 1024, 50'"), cache_s=5, clock=lambda: now[0])

    async def scrapes():
        a = await probe.readings()
        b = await probe.readings()  # within the cache: no second run
        now[0] = 6.0
        c = await probe.readings()
        return a, b, c

    a, b, c = asyncio.run(scrapes())
    assert a == b == c == [GpuReading("0", 512 * MIB, 1024 * MIB, 0.5)]
    assert (tmp_path / "runs").read_text().count("run") == 2
    hung = GpuProbe(_fake_smi(tmp_path, "exec sleep 30"), timeout_s=0.5)
    assert asyncio.run(hung.readings()) == []  # a hung driver: no readings, and /metrics is not held
    assert asyncio.run(GpuProbe(_fake_smi(tmp_path, "exit 9")).readings()) == []


def test_no_gpu_means_no_gpu_series():
    m = Metrics(gpu=GpuProbe(exe=None))
    m.scraped.snapshot = ScrapeSnapshot()
    text = m.render().decode()
    assert "tiergate_gpu_" not in text
    m.scraped.snapshot = ScrapeSnapshot(gpus=(GpuReading("0", 1, 2, 0.25),))
    text = m.render().decode()
    assert 'tiergate_gpu_utilization_ratio{gpu="0"} 0.25' in text
    assert 'tiergate_gpu_memory_total_bytes{gpu="0"} 2.0' in text
