"""When a job runs: cron slots in a time zone, what is due now, and what downtime and overlap mean. Pure.

A slot is the instant a cron expression names, as epoch seconds; it is the
run's identity (``job@slot``), so every replica computes the same slots and
the ledger's unique key makes each run happen once. croniter walks the
expression in the job's zone. Across DST: a wall time skipped in spring runs
at the first instant after the gap (02:30 on the day 02:00 jumps to 03:00
runs at 03:00), and a wall time repeated in autumn runs once, at its first
occurrence, for expressions with a fixed hour; an expression stepping through
every hour (``*/30 * * * *``) keeps every real instant.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from croniter import croniter

MAX_MISSED_COUNTED = 10_000  # a job down for years would walk forever; past this, "at least" is enough


@dataclass(frozen=True, slots=True)
class Schedule:
    expr: str
    tz: str = "UTC"

    @property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def _fixed_hour(self) -> bool:
        return self.expr.split()[1] != "*" and not self.expr.split()[1].startswith("*/")

    def next_after(self, t: float) -> float:
        """The first slot strictly after ``t``."""
        it = croniter(self.expr, dt.datetime.fromtimestamp(t, self._zone))
        while True:
            nxt: dt.datetime = it.get_next(dt.datetime)
            if not (self._fixed_hour() and _second_occurrence(nxt)):
                return nxt.timestamp()

    def slots(self, after: float, upto: float, limit: int = MAX_MISSED_COUNTED) -> list[float]:
        """The slots in (after, upto], oldest first, at most ``limit``."""
        out: list[float] = []
        t = after
        while len(out) < limit:
            t = self.next_after(t)
            if t > upto:
                break
            out.append(t)
        return out

    def local(self, t: float) -> str:
        """A slot as the job's wall time, for messages and file names."""
        return dt.datetime.fromtimestamp(t, self._zone).isoformat(timespec="seconds")


def _second_occurrence(d: dt.datetime) -> bool:
    """True for the second pass through an autumn hour (the same wall time happened an hour earlier)."""
    first = d.replace(fold=0)
    return first.utcoffset() != d.utcoffset() and d.replace(tzinfo=None) == first.replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Due:
    """What the scheduler does now for one job."""

    run: float | None  # the slot to run now, if any
    trigger: str  # "schedule" (on time) | "catch-up" (the latest missed slot, once) | "" (nothing to run)
    missed: tuple[float, ...]  # slots passed without a run (their newest is recorded as missed when skipped)
    next_at: float  # when to look again


def due(schedule: Schedule, *, since: float, now: float, grace_s: float, missed_policy: str) -> Due:
    """The slot to run at ``now``, given that every slot up to ``since`` was handled.

    ``since`` is the newest slot the ledger has a run record for, or the time the
    scheduler started for a job that never ran (it does not run for the time before
    it existed). A slot no more than ``grace_s`` old is on time; older ones were
    missed: ``skip`` runs none of them, ``catch_up`` runs the newest once.
    """
    passed = schedule.slots(since, now)
    next_at = schedule.next_after(max(now, since))
    if not passed:
        return Due(None, "", (), next_at)
    newest = passed[-1]
    if now - newest <= grace_s:
        return Due(newest, "schedule", tuple(passed[:-1]), next_at)
    if missed_policy == "catch_up":
        return Due(newest, "catch-up", tuple(passed[:-1]), next_at)
    return Due(None, "", tuple(passed), next_at)


def overlap_allows(policy: str, *, running: bool) -> bool:
    """Whether a slot due while the job's last run is still running may start (``skip``: it may not)."""
    return not running or policy == "allow"


def retry_delay(backoff_s: float, attempt: int, cap_s: float = 3600.0) -> float:
    """The wait before attempt ``attempt + 1`` (attempt counts from 1): backoff, doubled each time, capped."""
    return min(cap_s, backoff_s * 2.0 ** (attempt - 1))


def lease_expired(lease_until: float | None, now: float) -> bool:
    """A claimed run whose owner stopped renewing: another replica may take it over."""
    return lease_until is not None and lease_until < now
