"""One writer thread per ledger: the request path only appends to a queue.

The thread takes what arrived in the next few milliseconds as one batch (one
transaction and one GIL hand-over per batch instead of per record).
``close()`` drains everything queued before it; with a time limit it hands
back what the thread could not finish, so the owner can keep it elsewhere
(the PostgreSQL ledger spools it to disk) instead of losing it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("tiergate.ledger")

T = TypeVar("T")


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
    ) -> None:
        self._write = write
        self._idle = idle
        self._idle_s = idle_s if idle is not None else None
        self._name = name
        self.batch = batch
        self.gather_s = gather_s
        self._queue: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._inflight: list[T] = []
        self.error: BaseException | None = None  # why the thread died, if it did
        self.stuck = False  # close() gave up waiting for it

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

    def close(self, timeout: float | None = None) -> list[T]:
        """Drain and stop; returns what was not written when the thread died or did not finish in time."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
            self.stuck = thread.is_alive()
            if not self.stuck and self.error is None:
                return []
            log.error(
                "ledger writer %s; handing back its unwritten records",
                "did not finish in time" if thread.is_alive() else f"died ({self.error!r})",
            )
        left = list(self._inflight)
        while True:
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
                    if self._idle is not None:
                        self._idle()
                    continue
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
                    self._inflight = batch
                    self._write(batch)
                    self._inflight = []
        except BaseException as exc:  # recorded for health(); close() hands back the records
            self.error = exc
            log.exception("ledger writer thread died")
