"""One writer thread per ledger: the request path only appends to a queue.

The thread takes what arrived in the next few milliseconds as one batch (one
transaction and one GIL hand-over per batch instead of per record).
``close()`` drains everything queued before it; with a time limit it hands
back what the thread could not finish, so the owner can keep it elsewhere
(the PostgreSQL ledger spools it to disk) instead of losing it.

The thread must outlive any batch: a batch whose write raises is counted,
logged (with a traceback once per run of failures, then once a minute) and
handed to ``salvage`` (the owner keeps it: queued again, spooled, or
quarantined to a file), and the thread goes on with the next. ``status()``
says whether it is failing or behind, for /health, the metrics and the
``ledger_writer_failing`` alert.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tiergate.core.sanitize import ascii_safe

log = logging.getLogger("tiergate.ledger")

T = TypeVar("T")

BEHIND_AFTER_S = 10.0  # records waiting this long without a batch written: the writer is behind
_LOG_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class WriterStatus:
    """What an operator needs to know about the writer thread (all of it safe to show in /health)."""

    alive: bool
    pending: int  # records queued, not yet taken by the thread
    lag_s: float  # how long records have waited without a batch written (0 when idle)
    failed_batches: int  # batches whose write raised since start (each kept by salvage)
    consecutive_failures: int  # failed batches since the last one written
    quarantined: int  # records kept aside because the database refused them (see the backend)
    last_error: str | None

    @property
    def failing(self) -> bool:
        return not self.alive or self.consecutive_failures > 0

    @property
    def behind(self) -> bool:
        return self.lag_s >= BEHIND_AFTER_S

    def as_dict(self) -> dict[str, object]:
        return {
            "alive": self.alive,
            "failing": self.failing,
            "behind": self.behind,
            "pending": self.pending,
            "lag_s": round(self.lag_s, 3),
            "failed_batches": self.failed_batches,
            "consecutive_failures": self.consecutive_failures,
            "quarantined": self.quarantined,
            "last_error": self.last_error,
        }


class BatchWriter(Generic[T]):
    def __init__(
        self,
        write: Callable[[list[T]], None],
        *,
        name: str,
        batch: int = 2000,
        gather_s: float = 0.02,
        idle: Callable[[], None] | None = None,
        idle_s: float = 0.5,
        salvage: Callable[[list[T], Exception], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._idle = idle
        self._idle_s = idle_s if idle is not None else None
        self._salvage = salvage
        self._name = name
        self._clock = clock
        self.batch = batch
        self.gather_s = gather_s
        self._queue: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._inflight: list[T] = []
        self.error: BaseException | None = None  # why the thread died, if it did (only a BaseException can)
        self.stuck = False  # close() gave up waiting for it
        self.failed_batches = 0
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.quarantined = 0  # counted by the owner, reported here
        self._busy_since: float | None = None  # records have been waiting since then
        self._last_logged = float("-inf")

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def put(self, item: T) -> None:
        self._queue.put(item)

    def pending(self) -> int:
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        return self.error is None and (self._thread is None or self._thread.is_alive())

    def status(self) -> WriterStatus:
        since = self._busy_since
        waiting = since is not None or self.pending() > 0
        lag = max(0.0, self._clock() - since) if waiting and since is not None else 0.0
        return WriterStatus(
            alive=self.alive,
            pending=self.pending(),
            lag_s=lag,
            failed_batches=self.failed_batches,
            consecutive_failures=self.consecutive_failures,
            quarantined=self.quarantined,
            last_error=self.last_error if self.error is None else f"writer thread stopped: {self.error!r}",
        )

    def close(self, timeout: float | None = None) -> list[T]:
        """Drain and stop; returns what was not written (the thread died, did not finish in time, or kept some)."""
        thread, self._thread = self._thread, None
        left: list[T] = []
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
            self.stuck = thread.is_alive()
            if self.stuck or self.error is not None:
                log.error(
                    "ledger writer %s; handing back its unwritten records",
                    "did not finish in time" if self.stuck else f"died ({self.error!r})",
                )
                left = list(self._inflight)
        while True:  # what the thread never took (or queued again after a failure)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return left
            if item is not None:
                left.append(item)

    def _run(self) -> None:
        stop = False
        try:
            while not stop:
                try:
                    first = self._queue.get(timeout=self._idle_s)
                except queue.Empty:  # only with a timeout, i.e. with an idle callback
                    self._run_idle()
                    continue
                if self._busy_since is None and first is not None:
                    self._busy_since = self._clock()
                batch = [] if first is None else [first]
                stop = first is None
                if not stop:
                    time.sleep(self.gather_s)
                while len(batch) < self.batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                if batch:
                    self._write_one(batch)
        except BaseException as exc:  # only a BaseException gets here: recorded for status(); close() hands back
            self.error = exc
            self._busy_since = self._busy_since or self._clock()  # from now on everything queued waits
            log.exception("ledger writer thread died")

    def _write_one(self, batch: list[T]) -> None:
        self._inflight = batch
        try:
            self._write(batch)
        except Exception as exc:  # never the end of the thread: count, log, keep the records
            self._failed(exc, len(batch))
            self._keep(batch, exc)
        else:
            self.consecutive_failures = 0
            self._busy_since = self._clock() if self.pending() else None
        self._inflight = []  # not after a BaseException: close() hands the batch back

    def _failed(self, exc: Exception, n: int) -> None:
        self.failed_batches += 1
        self.consecutive_failures += 1
        self.last_error = ascii_safe(f"{type(exc).__name__}: {exc}", 500)
        now = self._clock()
        if self.consecutive_failures == 1 or now - self._last_logged >= _LOG_EVERY_S:
            self._last_logged = now
            log.error(
                "ledger writer: a batch of %d records failed (%d in a row, %d since start); the records are kept",
                n,
                self.consecutive_failures,
                self.failed_batches,
                exc_info=self.consecutive_failures == 1,
            )

    def _keep(self, batch: list[T], exc: Exception) -> None:
        if self._salvage is None:
            for item in batch:  # queued again: written once the database takes them, or handed back by close()
                self._queue.put(item)
            return
        try:
            self._salvage(batch, exc)
        except Exception:
            log.exception("ledger writer: %d records could not be kept anywhere and are lost", len(batch))

    def _run_idle(self) -> None:
        if self._idle is None:
            return
        try:
            self._idle()
        except Exception as exc:
            self._failed(exc, 0)
