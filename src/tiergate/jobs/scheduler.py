"""The scheduler loop: about once a second, what is due, claimed, requested or left by a dead replica.

Every replica runs it; the ledger's run records decide who runs what
(``tiergate.ledger.job_runs``). Each tick reads the pause flags, asks the
pure ``due`` what each job should do now, claims due slots (one replica wins
each), and picks up manual runs and runs whose owner's lease expired. Runs
go to ``JobRunner`` as tasks; a stop cancels them, which gives their claims
back at once. Nothing here touches a request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable

from tiergate.background import reraise_if_stopping, stop
from tiergate.config.jobs import JobConfig
from tiergate.core.schedule import Schedule, due, overlap_allows
from tiergate.jobs.runner import JobRunner
from tiergate.ledger.job_runs import Claim, JobRuns, paused_jobs

log = logging.getLogger("tiergate.jobs")

PRUNE_EVERY_S = 3600.0
MAX_LATE_RECORDS = 1000  # one record per slot passed late, up to this many; a count covers the rest


def owner_id() -> str:
    """This process among the replicas: host, pid and a random part (a pid is reused after a restart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Scheduler:
    def __init__(
        self, jobs: list[JobConfig], runner: JobRunner, store: JobRuns, *, clock: Callable[[], float] = time.time
    ):
        self.jobs = {j.name: j for j in jobs}
        self.runner = runner
        self.store = store
        self.settings = runner.settings
        self.clock = clock
        self.schedules = {j.name: Schedule(j.schedule, runner.zone(j)) for j in jobs}
        self.since: dict[str, float] = {}
        self.next_at: dict[str, float] = {}
        self.tasks: dict[str, asyncio.Task[str]] = {}  # run id -> its task
        self.running: dict[str, int] = {}  # job -> runs in flight here
        self._last_prune = 0.0

    async def start(self) -> None:
        """Where each job's schedule resumes: its newest recorded slot, or now for a job that never ran."""
        newest = await asyncio.to_thread(self.store.newest_slots)
        now = self.clock()
        self.since = {name: newest.get(name, now) for name in self.jobs}

    async def run_forever(self) -> None:
        failing = False
        while True:
            try:
                if not self.since:
                    await self.start()
                await self.tick()
                if failing:
                    log.warning("job scheduler ticks again")
                failing = False
            except Exception as exc:  # the ledger down: keep the schedule, try again next tick, say so once
                reraise_if_stopping(exc)
                (log.debug if failing else log.warning)("job scheduler tick failed: %s: %s", type(exc).__name__, exc)
                failing = True
            await asyncio.sleep(self.settings.poll)

    async def tick(self) -> None:
        now = self.clock()
        paused = paused_jobs(await asyncio.to_thread(self.store.ledger.flags))
        live = [j for j in self.jobs.values() if j.enabled and j.name not in paused]
        for job in live:
            if now < self.next_at.get(job.name, 0.0):
                continue
            await self._due(job, now)
        names = [j.name for j in live]
        lease = self.settings.lease
        asked = await asyncio.to_thread(self.store.claim_requested, list(self.jobs), now=now, lease_s=lease)
        for claim in asked:  # asked for by hand: runs even while the job is paused or disabled
            self._spawn(self.jobs[claim.job], claim)
        for claim in await asyncio.to_thread(self.store.take_over, names, now=now, lease_s=lease):
            job = self.jobs[claim.job]
            if claim.attempts > job.retries + 1:
                await asyncio.to_thread(
                    self.store.finish,
                    claim,
                    "abandoned",
                    now=now,
                    session=None,
                    deployment=None,
                    cost_usd=0.0,
                    delivered="{}",
                    error=f"its gateway stopped {claim.attempts - 1} times mid-run",
                    output=None,
                )
                continue
            log.warning("job %s run %s: its owner stopped mid-run; taking it over", job.name, claim.run_id)
            self._spawn(job, claim)
        if now - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = now
            await asyncio.to_thread(self.store.prune, before=now - self.settings.history_days * 86400)

    async def _due(self, job: JobConfig, now: float) -> None:
        """Act on what is due; the job's place in its schedule moves only once the ledger has the outcome,
        so a slot whose claim failed (the ledger down) is looked at again next tick."""
        d = due(
            self.schedules[job.name],
            since=self.since[job.name],
            now=now,
            grace_s=self.settings.grace,
            missed_policy=job.missed,
        )
        if d.run is None:
            if d.missed:
                newest = d.missed[-1]
                why = f"{len(d.missed)} slot(s) passed without a run (missed: skip)"
                await asyncio.to_thread(self.store.record, job.name, newest, "missed", now=now, error=why)
                log.warning("job %s: %s", job.name, why)
                self.since[job.name] = newest
            self.next_at[job.name] = d.next_at
            return
        if d.missed and d.trigger == "schedule":
            await self._record_passed(job, d.missed, d.run, now)
        running = self.running.get(job.name, 0) > 0 or await asyncio.to_thread(self.store.running, job.name, now=now)
        if not overlap_allows(job.overlap, running=running):
            await asyncio.to_thread(
                self.store.record, job.name, d.run, "skipped", now=now, error="the previous run was still running"
            )
            log.warning("job %s: slot skipped, the previous run is still running (overlap: skip)", job.name)
        else:
            claim = await asyncio.to_thread(
                self.store.claim, job.name, d.run, d.trigger, now=now, lease_s=self.settings.lease
            )
            if claim is not None:  # None: another replica claimed this slot first
                self._spawn(job, claim)
        self.since[job.name] = d.run
        self.next_at[job.name] = d.next_at

    async def _record_passed(self, job: JobConfig, passed: tuple[float, ...], run: float, now: float) -> None:
        """Older slots that passed unrun before an on-time one, so the history has no silent gap: one record
        each within the grace period (this replica was starved or blocked and looked late), and one for the
        newest of any others (a restart just in time for a slot), with their count, as a skipped downtime has."""
        grace = self.settings.grace
        late = [t for t in passed if now - t <= grace][-MAX_LATE_RECORDS:]
        older = passed[: len(passed) - len(late)]
        when = self.schedules[job.name].local(run)
        if late:
            why = f"passed while the scheduler looked late; the run of {when} followed"
            await asyncio.to_thread(self.store.record_passed, job.name, late, now=now, error=why)
            log.warning("job %s: %d slot(s) passed unrun while the scheduler looked late", job.name, len(late))
        if older:
            why = f"{len(older)} slot(s) passed without a run; the run of {when} followed"
            await asyncio.to_thread(self.store.record, job.name, older[-1], "missed", now=now, error=why)

    def _spawn(self, job: JobConfig, claim: Claim) -> None:
        self.running[job.name] = self.running.get(job.name, 0) + 1
        task = asyncio.create_task(self.runner.run(job, claim), name=f"job:{job.name}:{claim.run_id}")
        self.tasks[claim.run_id] = task

        def done(t: asyncio.Task[str]) -> None:
            self.tasks.pop(claim.run_id, None)
            self.running[job.name] -= 1
            if not t.cancelled() and t.exception() is not None:  # e.g. the ledger down as it finished
                log.error("job %s run %s ended without its record: %r", job.name, claim.run_id, t.exception())

        task.add_done_callback(done)

    async def close(self) -> None:
        """Cancel runs in flight: each gives its claim back, so another replica (or the next start) takes it over."""
        await asyncio.gather(*(stop(t) for t in list(self.tasks.values())))
