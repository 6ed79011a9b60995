"""The ledger writer watched: a writer that fails, falls behind or quarantines records is seen and alerted.

The writer thread never dies of a bad record (tiergate.ledger.writer), but
a database that refuses every batch, a disk that stalls it or records it
had to keep aside must not go unnoticed: about once a second the gateway
reads ``Ledger.health()["writer"]`` into the Prometheus metrics and raises
a ``ledger_writer_failing`` alert, at most once an hour per problem (the
dedupe key carries the hour; kept in the ledger, so a restart does not
repeat it). ``writer_problems`` is the pure decision, table-tested.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tiergate.guardrails.alerts import Alert, AlertDispatcher
from tiergate.ledger.base import Ledger
from tiergate.observability.metrics import Metrics

EVENT = "ledger_writer_failing"


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # dead | failing | behind | quarantined
    message: str
    severity: str


def writer_problems(writer: Mapping[str, Any], *, quarantined_before: int, where: str) -> list[Problem]:
    """What is wrong with the writer now (empty when nothing is); ``where`` names the quarantine."""
    out = []
    if not writer.get("alive", True):
        out.append(
            Problem("dead", f"ledger writer stopped ({writer.get('last_error')}); usage is not recorded", "critical")
        )
    elif writer.get("failing"):
        out.append(
            Problem(
                "failing",
                f"ledger writer failing: {writer.get('consecutive_failures')} batch(es) in a row not written "
                f"({writer.get('last_error')}); records are kept and retried",
                "critical",
            )
        )
    if writer.get("behind"):
        out.append(
            Problem(
                "behind",
                f"ledger writer behind: {writer.get('pending')} records waiting, none written for "
                f"{float(writer.get('lag_s') or 0):.0f}s",
                "warning",
            )
        )
    quarantined = int(writer.get("quarantined") or 0)
    if quarantined > quarantined_before:
        out.append(
            Problem(
                "quarantined",
                f"{quarantined - quarantined_before} ledger record(s) refused by the database and kept in {where} "
                f"({quarantined} since start)",
                "warning",
            )
        )
    return out


class LedgerWatch:
    def __init__(
        self,
        ledger: Ledger,
        *,
        metrics: Metrics | None = None,
        alerts: AlertDispatcher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self.alerts = alerts
        self.clock = clock
        self._failed_batches = 0
        self._quarantined = 0

    def check(self) -> list[Problem]:
        """Read the writer's state into the metrics; alert what is wrong. Returns the problems seen."""
        health = self.ledger.health()
        writer = health.get("writer")
        if not isinstance(writer, Mapping):
            return []
        failed, quarantined = int(writer.get("failed_batches") or 0), int(writer.get("quarantined") or 0)
        q = health.get("quarantine") or {}
        where = f"the ledger's quarantine table (or {q.get('file')})" if q.get("file") else "the quarantine table"
        problems = writer_problems(writer, quarantined_before=self._quarantined, where=where)
        if self.metrics is not None:
            bad = any(p.kind in ("dead", "failing", "behind") for p in problems)
            self.metrics.ledger_writer_ok.set(0 if bad else 1)
            self.metrics.ledger_writer_lag.set(float(writer.get("lag_s") or 0.0))
            if failed > self._failed_batches:
                self.metrics.ledger_write_failures.inc(failed - self._failed_batches)
            if quarantined > self._quarantined:
                self.metrics.ledger_quarantined.inc(quarantined - self._quarantined)
        self._failed_batches, self._quarantined = max(self._failed_batches, failed), max(self._quarantined, quarantined)
        if self.alerts is not None and problems:
            hour = time.strftime("%Y-%m-%dT%H", time.gmtime(self.clock()))
            for p in problems:
                self.alerts.emit(
                    Alert(
                        event=EVENT,
                        message=p.message,
                        dedupe_key=f"ledger-writer:{p.kind}:{hour}",
                        severity=p.severity,
                        details={"problem": p.kind, "backend": health.get("backend")},
                    )
                )
        return problems
