"""The writer thread outlives any batch: a write that raises is counted, shown and kept; the thread goes on."""

from __future__ import annotations

import threading

from procs import wait_until
from tiergate.guardrails.ledger_watch import writer_problems
from tiergate.ledger.writer import BEHIND_AFTER_S, BatchWriter


class Flaky:
    """A write callable that raises for the batches holding a poisoned item, and records the rest."""

    def __init__(self, poison: set[int]) -> None:
        self.poison = poison
        self.written: list[int] = []

    def __call__(self, batch: list[int]) -> None:
        if self.poison & set(batch):
            raise ValueError(f"refused: {sorted(self.poison & set(batch))}")
        self.written.extend(batch)


def test_a_batch_that_raises_does_not_stop_the_thread_and_is_salvaged():
    write, kept = Flaky({3}), []
    w: BatchWriter[int] = BatchWriter(
        write, name="t", gather_s=0.0, salvage=lambda batch, exc: kept.append((batch, str(exc)))
    )
    w.start()
    w.put(1)
    assert wait_until(lambda: write.written == [1], timeout=30)
    w.put(3)
    assert wait_until(lambda: kept, timeout=30)
    st = w.status()
    assert st.alive and st.failing and st.failed_batches == 1 and "refused: [3]" in (st.last_error or "")
    for i in (4, 5):
        w.put(i)
    assert wait_until(lambda: write.written == [1, 4, 5] or sorted(write.written) == [1, 4, 5], timeout=30)
    st = w.status()
    assert st.alive and not st.failing and st.failed_batches == 1 and st.consecutive_failures == 0
    assert kept == [([3], "refused: [3]")]
    assert w.close(30) == []


def test_without_salvage_a_failed_batch_is_queued_again_and_handed_back_by_close():
    write = Flaky({7})
    w: BatchWriter[int] = BatchWriter(write, name="t", gather_s=0.0)
    w.start()
    w.put(7)
    assert wait_until(lambda: w.failed_batches >= 2, timeout=30)  # retried, not dropped
    assert w.status().alive
    write.poison = {99}  # the database takes it now
    assert wait_until(lambda: write.written == [7], timeout=30)
    assert w.close(30) == []
    write2 = Flaky({8})
    w2: BatchWriter[int] = BatchWriter(write2, name="t", gather_s=0.0)
    w2.put(8)  # never started: close hands it back for the owner to keep
    assert w2.close(30) == [8]


def test_an_idle_callback_that_raises_does_not_stop_the_thread():
    calls = []

    def idle() -> None:
        calls.append(1)
        raise RuntimeError("reconnect failed")

    write = Flaky(set())
    w: BatchWriter[int] = BatchWriter(write, name="t", gather_s=0.0, idle=idle, idle_s=0.01)
    w.start()
    assert wait_until(lambda: len(calls) >= 3, timeout=30)
    w.put(1)
    assert wait_until(lambda: write.written == [1], timeout=30)
    assert w.status().alive and w.close(30) == []


def test_lag_grows_while_a_write_is_stuck_and_returns_to_zero():
    now = [1000.0]
    gate = threading.Event()

    def slow(batch: list[int]) -> None:
        gate.wait(60)

    w: BatchWriter[int] = BatchWriter(slow, name="t", gather_s=0.0, clock=lambda: now[0])
    assert w.status().lag_s == 0.0
    w.start()
    w.put(1)
    assert wait_until(lambda: w._busy_since is not None, timeout=30)
    w.put(2)
    now[0] += BEHIND_AFTER_S + 1
    st = w.status()
    assert st.behind and st.lag_s >= BEHIND_AFTER_S and not st.failing
    gate.set()
    assert wait_until(lambda: w.status().lag_s == 0.0 and w.pending() == 0, timeout=30)
    assert not w.status().behind
    w.close(30)


def test_a_dead_thread_is_reported():
    def die(batch: list[int]) -> None:
        raise SystemExit("gone")  # only a BaseException can end the thread

    w: BatchWriter[int] = BatchWriter(die, name="t", gather_s=0.0)
    w.start()
    w.put(1)
    assert wait_until(lambda: not w.alive, timeout=30)
    st = w.status()
    assert st.failing and "writer thread stopped" in (st.last_error or "")
    assert w.close(30) == [1]


def test_writer_problems_table():
    ok = {"alive": True, "failing": False, "behind": False, "quarantined": 0}
    assert writer_problems(ok, quarantined_before=0, where="q") == []
    cases = [
        ({**ok, "alive": False, "failing": True, "last_error": "x"}, 0, ["dead"]),
        ({**ok, "failing": True, "consecutive_failures": 2}, 0, ["failing"]),
        ({**ok, "behind": True, "lag_s": 12.0, "pending": 5}, 0, ["behind"]),
        ({**ok, "quarantined": 3}, 1, ["quarantined"]),
        ({**ok, "quarantined": 3}, 3, []),  # nothing new since the last look
        ({**ok, "failing": True, "behind": True, "quarantined": 1}, 0, ["failing", "behind", "quarantined"]),
    ]
    for writer, before, kinds in cases:
        assert [p.kind for p in writer_problems(writer, quarantined_before=before, where="q")] == kinds, writer
