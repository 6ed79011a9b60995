"""Run records of scheduled jobs in the ledger (``job_runs``), and the claims that make each run happen once.

Every replica sharing one ledger computes the same slots; the first to
INSERT ``job@slot`` owns the run (the others get a unique violation), holds a
lease it renews while running, and writes the outcome with ``finish``. A
replica that dies leaves its lease to expire; ``take_over`` hands the run to
a live one. Manual runs (CLI, admin API) are queued as ``requested`` rows
and claimed the same way, so each runs once whichever gateway sees it
first. Synchronous, one short transaction per call: callers use a thread.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tiergate.core.errors import DuplicateName
from tiergate.core.sanitize import clean_text
from tiergate.ledger.base import Ledger
from tiergate.ledger.tables import Row

RUNNING = "running"
REQUESTED = "requested"
FINAL = ("ok", "failed", "missed", "skipped", "abandoned")
MAX_OUTPUT_CHARS = 64_000
MAX_ERROR_CHARS = 2_000
COLUMNS = (
    "run_id, job, slot, trigger, status, owner, lease_until, attempts, requested, started, ended, session, "
    "deployment, cost_usd, delivered, error, output"
)


@dataclass(frozen=True, slots=True)
class Claim:
    run_key: str
    run_id: str
    job: str
    slot: float
    trigger: str
    attempts: int


def new_run_id() -> str:
    return secrets.token_hex(8)


class JobRuns:
    def __init__(self, ledger: Ledger, owner: str) -> None:
        self.ledger = ledger
        self.owner = owner  # this process: "host:pid:random", written on the rows it runs

    def claim(self, job: str, slot: float, trigger: str, *, now: float, lease_s: float) -> Claim | None:
        """This process runs ``job`` at ``slot``, or None when another already claimed it."""
        key, run_id = f"{job}@{slot:.3f}", new_run_id()
        try:
            self.ledger.transact(
                [
                    (
                        "INSERT INTO job_runs (run_key, run_id, job, slot, trigger, status, owner, lease_until, "
                        "attempts, requested, started) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                        (key, run_id, job, slot, trigger, RUNNING, self.owner, now + lease_s, now, now),
                    )
                ]
            )
        except DuplicateName:
            return None
        return Claim(key, run_id, job, slot, trigger, 1)

    def record(self, job: str, slot: float, status: str, *, now: float, error: str) -> bool:
        """A slot that did not run (missed, skipped for overlap); False when a record for it exists."""
        try:
            self.ledger.transact(
                [
                    (
                        "INSERT INTO job_runs (run_key, run_id, job, slot, trigger, status, requested, ended, error) "
                        "VALUES (?, ?, ?, ?, 'schedule', ?, ?, ?, ?)",
                        (f"{job}@{slot:.3f}", new_run_id(), job, slot, status, now, now, clean_text(error)),
                    )
                ]
            )
        except DuplicateName:
            return False
        return True

    def record_passed(self, job: str, slots: Sequence[float], *, now: float, error: str) -> None:
        """Slots that passed unrun while a newer one was due (the scheduler looked late): one missed
        record each, in one transaction; a slot another replica ran or recorded keeps its record."""
        why = clean_text(error)
        sql = (
            "INSERT INTO job_runs (run_key, run_id, job, slot, trigger, status, requested, ended, error) "
            "VALUES (?, ?, ?, ?, 'schedule', 'missed', ?, ?, ?) ON CONFLICT (run_key) DO NOTHING"
        )
        self.ledger.transact([(sql, (f"{job}@{t:.3f}", new_run_id(), job, t, now, now, why)) for t in slots])

    def request(self, job: str, *, now: float) -> str:
        """Queue a manual run (CLI, admin API); the first gateway to poll claims it. Returns its run id."""
        run_id = new_run_id()
        self.ledger.transact(
            [
                (
                    "INSERT INTO job_runs (run_key, run_id, job, slot, trigger, status, requested) "
                    "VALUES (?, ?, ?, ?, 'manual', ?, ?)",
                    (f"{job}@manual:{run_id}", run_id, job, now, REQUESTED, now),
                )
            ]
        )
        return run_id

    def claim_requested(self, jobs: Sequence[str], *, now: float, lease_s: float) -> list[Claim]:
        """Manual runs waiting for a gateway, for jobs this one knows; each is claimed by one process only."""
        if not jobs:
            return []
        marks = ", ".join("?" for _ in jobs)
        rows = self.ledger.query(
            f"SELECT run_key, run_id, job, slot, trigger, attempts FROM job_runs "
            f"WHERE status = ? AND job IN ({marks}) ORDER BY requested",
            (REQUESTED, *jobs),
        )
        return self._take(rows, "status = ?", (REQUESTED,), now=now, lease_s=lease_s)

    def take_over(self, jobs: Sequence[str], *, now: float, lease_s: float) -> list[Claim]:
        """Runs whose owner stopped renewing the lease (it died): this process takes them over."""
        if not jobs:
            return []
        marks = ", ".join("?" for _ in jobs)
        rows = self.ledger.query(
            f"SELECT run_key, run_id, job, slot, trigger, attempts FROM job_runs "
            f"WHERE status = ? AND lease_until < ? AND job IN ({marks})",
            (RUNNING, now, *jobs),
        )
        return self._take(rows, "status = ? AND lease_until < ?", (RUNNING, now), now=now, lease_s=lease_s)

    def _take(
        self, rows: Sequence[Row], where: str, params: tuple[Any, ...], *, now: float, lease_s: float
    ) -> list[Claim]:
        out = []
        for r in rows:
            (n,) = self.ledger.transact(
                [
                    (
                        "UPDATE job_runs SET status = ?, owner = ?, lease_until = ?, attempts = attempts + 1, "
                        f"started = ? WHERE run_key = ? AND {where}",
                        (RUNNING, self.owner, now + lease_s, now, r["run_key"], *params),
                    )
                ]
            )
            if n == 1:
                out.append(Claim(r["run_key"], r["run_id"], r["job"], r["slot"], r["trigger"], r["attempts"] + 1))
        return out

    def renew(self, claim: Claim, *, now: float, lease_s: float) -> bool:
        """Extend the lease; False when the run is no longer ours (it expired and was taken over)."""
        (n,) = self.ledger.transact(
            [
                (
                    "UPDATE job_runs SET lease_until = ? WHERE run_key = ? AND owner = ? AND status = ?",
                    (now + lease_s, claim.run_key, self.owner, RUNNING),
                )
            ]
        )
        return n == 1

    def release(self, claim: Claim) -> bool:
        """Give the run up at once (a graceful stop): its lease ends now, so a live replica takes it over."""
        (n,) = self.ledger.transact(
            [
                (
                    "UPDATE job_runs SET lease_until = 0 WHERE run_key = ? AND owner = ? AND status = ?",
                    (claim.run_key, self.owner, RUNNING),
                )
            ]
        )
        return n == 1

    def finish(
        self,
        claim: Claim,
        status: str,
        *,
        now: float,
        session: str | None,
        deployment: str | None,
        cost_usd: float,
        delivered: str,
        error: str | None,
        output: str | None,
    ) -> bool:
        """The outcome; False when another process owns the run by now (its record wins)."""
        assert status in FINAL, status
        (n,) = self.ledger.transact(
            [
                (
                    "UPDATE job_runs SET status = ?, ended = ?, lease_until = NULL, session = ?, deployment = ?, "
                    "cost_usd = ?, delivered = ?, error = ?, output = ? WHERE run_key = ? AND owner = ? AND status = ?",
                    (
                        status,
                        now,
                        session,
                        deployment,
                        cost_usd,
                        delivered,
                        None if error is None else clean_text(error, MAX_ERROR_CHARS),
                        None if output is None else output[:MAX_OUTPUT_CHARS],
                        claim.run_key,
                        self.owner,
                        RUNNING,
                    ),
                )
            ]
        )
        return n == 1

    def newest_slots(self) -> dict[str, float]:
        """Per job, the newest scheduled slot with a record (run, missed or skipped): where its schedule resumes."""
        rows = self.ledger.query(
            "SELECT job, MAX(slot) AS slot FROM job_runs WHERE trigger IN ('schedule', 'catch-up') GROUP BY job"
        )
        return {r["job"]: float(r["slot"]) for r in rows}

    def running(self, job: str, *, now: float) -> bool:
        """Whether a run of ``job`` holds a live lease anywhere."""
        rows = self.ledger.query(
            "SELECT 1 AS x FROM job_runs WHERE job = ? AND status = ? AND lease_until >= ? LIMIT 1",
            (job, RUNNING, now),
        )
        return bool(rows)

    def history(self, job: str | None = None, *, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first."""
        where, params = ("WHERE job = ?", (job,)) if job else ("", ())
        rows = self.ledger.query(
            f"SELECT {COLUMNS} FROM job_runs {where} ORDER BY requested DESC, slot DESC LIMIT ?", (*params, limit)
        )
        return [{c.strip(): r[c.strip()] for c in COLUMNS.split(",")} for r in rows]

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self.ledger.query(f"SELECT {COLUMNS} FROM job_runs WHERE run_id = ?", (run_id,))
        return {c.strip(): rows[0][c.strip()] for c in COLUMNS.split(",")} if rows else None

    def prune(self, *, before: float) -> int:
        (n,) = self.ledger.transact(
            [("DELETE FROM job_runs WHERE status <> ? AND status <> ? AND requested < ?", (RUNNING, REQUESTED, before))]
        )
        return n


PAUSE_FLAG = "job-paused:"


def paused_jobs(flags: dict[str, str]) -> set[str]:
    """Jobs paused by ``tiergate jobs pause`` or the admin API (a flag each in the ledger)."""
    return {k[len(PAUSE_FLAG) :] for k, v in flags.items() if k.startswith(PAUSE_FLAG) and v}


def job_overview(jobs: Sequence[Any], runs: JobRuns, *, default_tz: str, now: float) -> list[dict[str, Any]]:
    """Each configured job with its next slot, whether it is paused and its newest run (CLI and admin API)."""
    from tiergate.core.schedule import Schedule

    paused = paused_jobs(runs.ledger.flags())
    out = []
    for j in jobs:
        zone = j.timezone or default_tz
        sched = Schedule(j.schedule, zone)
        last = runs.history(j.name, limit=1)
        next_at = sched.next_after(now)
        out.append(
            {
                "name": j.name,
                "kind": j.kind,
                "schedule": j.schedule,
                "timezone": zone,
                "enabled": j.enabled,
                "paused": j.name in paused,
                "next_run": next_at,
                "next_run_local": sched.local(next_at),
                "deliver": list(j.deliver),
                "last_run": last[0] if last else None,
            }
        )
    return out
