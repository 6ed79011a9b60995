"""GPU pressure: nvidia-smi parsing, the busy verdict, and the lock file (flock and exists modes)."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess

import pytest

from tiergate.local.pressure import (
    PressureMonitor,
    flock_held,
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
    assert lock_file_reason(lock, held=True, ours=False, mode="exists") == f"gpu busy: lock file {lock} exists"
    assert (
        lock_file_reason(lock, held=True, ours=False)
        == f"gpu busy: lock file {lock} is locked (flock) by another process"
    )
    assert lock_file_reason(lock, held=True, ours=True) is None
    assert lock_file_reason(lock, held=False, ours=False) is None
    assert lock_file_reason(None, held=True, ours=False) is None


def test_exists_mode_sees_the_file_and_takes_it_exclusively(tmp_path):
    lock = tmp_path / "gpu.lock"
    mon = PressureMonitor(lock, None, "exists")
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
    assert PressureMonitor(tmp_path / "no-such-dir" / "x.lock", None, "exists").take_lock("t") is True  # go on


@contextlib.contextmanager
def flocked(path):
    """Another holder of the seed's mutex: its own open file with an exclusive flock on it."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
        fcntl.flock(f, fcntl.LOCK_UN)


def test_flock_mode_busy_only_while_the_file_is_locked(tmp_path):
    lock = tmp_path / "gpu.lock"
    mon = PressureMonitor(lock, None)  # flock is the default
    assert not flock_held(lock) and mon.refresh_lock() is False and mon.reason() is None  # no file: free
    lock.write_text("left behind by the last holder")
    assert not flock_held(lock) and mon.refresh_lock() is False and mon.reason() is None  # unlocked file: free
    with flocked(lock):
        assert flock_held(lock)
        assert mon.refresh_lock() is True
        assert mon.reason() == f"gpu busy: lock file {lock} is locked (flock) by another process"
        assert mon.take_lock("tiergate") is False  # a large load does not start
    assert mon.refresh_lock() is True and mon.reason() is None
    assert lock.read_text() == "left behind by the last holder"  # the probe wrote nothing


def test_flock_mode_large_loads_hold_the_lock_others_see_and_leave_the_file(tmp_path):
    lock = tmp_path / "gpu.lock"
    mon = PressureMonitor(lock, None, "flock")
    assert mon.take_lock("tiergate pid 1 loading big\n") is True
    assert lock.read_text() == "tiergate pid 1 loading big\n"
    assert flock_held(lock)  # another process (another open file) sees it held
    mon.refresh_lock()
    assert mon.reason() is None  # our own lock is not pressure
    mon.release_lock()
    assert lock.exists() and not flock_held(lock)  # released like the seed's mutex: the file stays
    with flocked(lock):  # and the next holder can take it
        assert flock_held(lock)
    assert PressureMonitor(tmp_path / "no-such-dir" / "x.lock", None).take_lock("t") is True  # cannot: go on


def test_flock_mode_honours_the_seed_shell_mutex(tmp_path):
    """Seed 004's gpu_acquire / gpu_release, run by bash with util-linux flock."""
    if shutil.which("flock") is None or shutil.which("bash") is None:
        pytest.skip("needs bash and util-linux flock")
    lock = tmp_path / "gpu.lock"
    script = f"""
gpu_acquire() {{
    exec 200>{lock}
    flock -n 200 || return 1  # non-blocking, fail if busy
}}
gpu_release() {{
    flock -u 200
}}
gpu_acquire || exit 3
echo acquired
read line
gpu_release
echo released
read line
"""
    proc = subprocess.Popen(["bash", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "acquired\n"
        mon = PressureMonitor(lock, None)
        assert mon.refresh_lock() is True and "is locked (flock)" in mon.reason()
        assert mon.take_lock("tiergate") is False
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "released\n"  # bash still has fd 200 open, the file is still there
        assert lock.exists() and mon.refresh_lock() is True and mon.reason() is None
        assert mon.take_lock("tiergate") is True
        mon.release_lock()
        proc.stdin.write("go\n")
        proc.stdin.flush()
    finally:
        proc.stdin.close()
        assert proc.wait(30) == 0
    assert lock.exists() and PressureMonitor(lock, None).refresh_lock() is False  # left behind: still free
