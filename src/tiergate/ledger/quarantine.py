"""The last place a record can go: a file of JSON lines beside the ledger, one record and its reason a line.

Records the database refuses go to the ledger's ``quarantine`` table; this
file takes what cannot reach the table either (a batch the writer could not
write at all, a record the spool cannot encode, an unreadable spool line),
so that nothing is dropped without a trace. Every line is ASCII (see
``records.quarantine_row``) and fsync'd; an operator reads it with any
JSON tool, and it is never replayed automatically.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from tiergate.core.sanitize import ascii_safe
from tiergate.ledger.records import QUARANTINE_COLUMNS, Pending, quarantine_row

log = logging.getLogger("tiergate.ledger.quarantine")


class QuarantineFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.count = 0  # lines written by this process

    def keep(self, records: Iterable[Pending], reason: BaseException | str) -> int:
        """Append each record with the reason; returns how many were written."""
        return self._append([dict(zip(QUARANTINE_COLUMNS, quarantine_row(p, reason), strict=True)) for p in records])

    def keep_line(self, line: bytes, reason: str, *, source: str) -> int:
        """A raw line that could not be read back (a torn or corrupt spool line), kept as it was."""
        text = ascii_safe(line.decode("utf-8", "backslashreplace").rstrip("\n"), 65536)
        return self._append([{"reason": ascii_safe(reason), "source": source, "line": text}])

    def _append(self, rows: list[dict[str, object]]) -> int:
        if not rows:
            return 0
        data = "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows).encode("ascii")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self.count += len(rows)
        log.error("%d ledger record(s) quarantined to %s", len(rows), self.path)
        return len(rows)
