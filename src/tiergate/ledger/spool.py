"""Records the database could not take, kept on disk until it can (JSON lines, fsync'd).

Each ledger appends to a file of its own, which it holds under an exclusive
``flock`` while it lives; files appear under their final name only once
locked (created as ``.tmp-*`` and renamed), so a replica replaying the
directory never takes a file another live process is still writing. Replay
goes file by file, oldest first, and deletes a file only after every record
in it is in the database; a replay that stops half way is simply repeated
later (records carry ids, so a second write is a no-op).

A record JSON cannot hold as it is (lone surrogates, integers past 64 bits)
is spooled cleaned (``records.to_line``); one that cannot be encoded at all,
and a line that cannot be read back, go to the quarantine file with the
reason instead of failing the whole batch or being dropped unseen.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from tiergate.ledger.quarantine import QuarantineFile
from tiergate.ledger.records import Pending, from_line, to_line

log = logging.getLogger("tiergate.ledger.spool")

SUFFIX = ".jsonl"


class Spool:
    def __init__(self, directory: Path, *, quarantine: QuarantineFile | None = None) -> None:
        self.directory = directory
        self.quarantine = quarantine or QuarantineFile(directory.with_name(directory.name + ".quarantine.jsonl"))
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._active = 0  # records in the file this ledger holds open
        self._sealed = 0  # records in files nobody holds, as far as this ledger knows

    @property
    def pending(self) -> int:
        """Records on disk waiting for the database (this ledger's, plus leftovers it has seen)."""
        return self._active + self._sealed

    def append(self, batch: Sequence[Pending]) -> None:
        """Durably keep a batch: written and fsync'd before this returns."""
        if not batch:
            return
        lines = []
        for p in batch:
            try:
                lines.append(to_line(p))
            except (TypeError, ValueError) as exc:  # not even its cleaned form encodes: kept aside, not lost
                self.quarantine.keep([p], exc)
        if not lines:
            return
        data = b"".join(lines)
        with self._lock:
            f = self._file or self._open()
            try:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                self._seal()  # a torn line stays last in its file; the next batch starts a new one
                raise
            self._active += len(lines)

    def scan(self) -> int:
        """Count the records in files nobody holds (left by a stopped process); cheap enough for start-up."""
        found = 0
        for path in self._files():
            with _locked(path) as f:
                if f is not None:
                    found += sum(1 for line in f if line.strip())
        self._sealed = found
        return found

    def replay(self, write: Callable[[list[Pending]], None], *, chunk: int = 2000) -> int:
        """Hand every spooled record to ``write`` in order, oldest file first; delete each file once written.

        ``write`` raising stops the replay (the file stays for the next try). Returns records replayed.
        """
        with self._lock:  # later appends go to a fresh file, after the ones replayed here
            self._seal()
        done = 0
        for path in self._files():
            with _locked(path) as f:
                if f is None:
                    continue  # a live process's own file
                records = []
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        records.append(from_line(line))
                    except (ValueError, KeyError, TypeError) as exc:
                        log.error("%s:%d: unreadable spool line quarantined (a write torn by a crash?)", path, n)
                        self.quarantine.keep_line(line, f"unreadable spool line: {exc!r}", source=f"{path.name}:{n}")
                for i in range(0, len(records), chunk):
                    write(records[i : i + chunk])
                path.unlink()
                done += len(records)
                with self._lock:
                    self._sealed = max(0, self._sealed - len(records))
                log.warning("replayed %d ledger records from %s", len(records), path.name)
        with self._lock:
            self._sealed = 0  # every file nobody holds is replayed now (others' live files are not counted)
        return done

    def close(self) -> None:
        with self._lock:
            self._seal()

    # ------------------------------------------------------------------ plumbing
    def _files(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def _open(self) -> BinaryIO:
        """A new file, locked before it becomes visible under its final name."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        tmp = self.directory / f".tmp-{name}"
        f = open(tmp, "ab")  # held open (and locked) until sealed
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        tmp.rename(self.directory / name)
        _fsync_dir(self.directory)
        self._file = f
        return f

    def _seal(self) -> None:
        if self._file is not None:
            self._file.close()  # releases the lock: the file is now anyone's to replay
            self._file = None
            self._sealed += self._active
            self._active = 0


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[BinaryIO | None]:
    """The file opened and locked, or None when another process holds it (or it is gone)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        yield None
        return
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        if not path.exists():  # replayed and deleted by someone else between open and lock
            yield None
            return
        yield f


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
