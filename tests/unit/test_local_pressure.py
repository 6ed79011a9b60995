"""GPU pressure: nvidia-smi parsing, the busy verdict, and the lock file."""

from __future__ import annotations

import pytest

from tiergate.local.pressure import (
    PressureMonitor,
    gpu_pressure_reason,
    lock_file_reason,
    parse_compute_apps,
    parse_gpu_total_mb,
)


def test_parse_nvidia_smi_reports():
    assert parse_gpu_total_mb("24576\n") == 24576
    assert parse_gpu_total_mb("24576\n24576\n") == 49152  # two GPUs
    assert parse_gpu_total_mb("") == 0
    apps = "1234, 6000\n 99 , 1500\n777, [N/A]\n\n"
    assert parse_compute_apps(apps) == [(1234, 6000), (99, 1500)]


PRESSURE = [
    # (id, total, apps, own pids, exempt MB, share, busy?)
    ("others below the share", 24000, [(1, 6000)], set(), 0, 0.5, None),
    ("others above the share", 24000, [(1, 13000)], set(), 0, 0.5, "other processes use 54% of GPU memory (limit 50%)"),
    ("our own servers do not count", 24000, [(1, 20000), (2, 1000)], {1}, 0, 0.5, None),
    ("attached servers' configured memory is exempt", 24000, [(5, 14000)], set(), 4000, 0.5, None),
    ("no GPU memory reported", 0, [(1, 100)], set(), 0, 0.5, None),
    ("exactly at the share is not busy", 1000, [(1, 500)], set(), 0, 0.5, None),
]


@pytest.mark.parametrize(
    "total,apps,own,exempt,share,expected", [c[1:] for c in PRESSURE], ids=[c[0] for c in PRESSURE]
)
def test_gpu_pressure_reason(total, apps, own, exempt, share, expected):
    reason = gpu_pressure_reason(total, apps, own_pids=own, exempt_mb=exempt, share=share)
    assert reason == (None if expected is None else f"gpu busy: {expected}")


def test_lock_file_reason(tmp_path):
    lock = tmp_path / "gpu.lock"
    assert lock_file_reason(lock, exists=True, ours=False) == f"gpu busy: lock file {lock} exists"
    assert lock_file_reason(lock, exists=True, ours=True) is None
    assert lock_file_reason(lock, exists=False, ours=False) is None
    assert lock_file_reason(None, exists=True, ours=False) is None


def test_monitor_sees_lock_and_takes_it_exclusively(tmp_path):
    lock = tmp_path / "gpu.lock"
    mon = PressureMonitor(lock, None)
    assert mon.refresh_lock() is False and mon.reason() is None
    lock.write_text("training job")
    assert mon.refresh_lock() is True and mon.reason() == f"gpu busy: lock file {lock} exists"
    assert mon.take_lock("tiergate") is False  # someone else holds it
    assert lock.read_text() == "training job"
    lock.unlink()
    assert mon.refresh_lock() is True
    assert mon.take_lock("tiergate loading big") is True
    mon.refresh_lock()
    assert lock.read_text() == "tiergate loading big" and mon.reason() is None  # our own lock is not pressure
    mon.release_lock()
    assert not lock.exists() and mon.reason() is None
    assert PressureMonitor(tmp_path / "no-such-dir" / "x.lock", None).take_lock("t") is True  # cannot create: go on
