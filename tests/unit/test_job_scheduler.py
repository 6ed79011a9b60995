"""The scheduler loop over a real SQLite ledger with a fake clock: downtime, overlap, pause, manual runs,
two schedulers sharing one ledger (replicas) and leases left by a dead one. The runner is a recorder."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from tiergate.config.jobs import JobConfig, SchedulerConfig
from tiergate.core.errors import LedgerUnavailable
from tiergate.jobs.scheduler import Scheduler
from tiergate.ledger.job_runs import PAUSE_FLAG, Claim, JobRuns
from tiergate.ledger.sqlite import SqliteLedger

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a whole hour


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeRunner:
    """Records what it was asked to run; a run finishes ok at once unless ``hold`` keeps it running."""

    store: JobRuns
    clock: Clock
    hold: bool = False
    settings: SchedulerConfig = field(default_factory=lambda: SchedulerConfig(grace=300, lease=60))
    ran: list[Claim] = field(default_factory=list)

    def zone(self, job: JobConfig) -> str:
        return "UTC"

    async def run(self, job: JobConfig, claim: Claim) -> str:
        self.ran.append(claim)
        if self.hold:
            await asyncio.Event().wait()
        kw = dict(session=None, deployment="d", cost_usd=0.0, delivered="{}", error=None, output="x")
        await asyncio.to_thread(self.store.finish, claim, "ok", now=self.clock(), **kw)
        return "ok"


def job(**kw) -> JobConfig:
    kw.setdefault("name", "hourly")
    kw.setdefault("schedule", "0 * * * *")
    kw.setdefault("prompt", "p")
    return JobConfig(**kw)


@pytest.fixture
def ledger(tmp_path):
    led = SqliteLedger(tmp_path / "ledger.db")
    led.start()
    yield led
    led.close()


def scheduler(ledger, clock: Clock, jobs: list[JobConfig], owner: str = "a", hold: bool = False):
    store = JobRuns(ledger, owner)
    runner = FakeRunner(store, clock, hold=hold)
    return Scheduler(jobs, runner, store, clock=clock), runner  # type: ignore[arg-type]


async def settle(s: Scheduler) -> None:
    for _ in range(50):
        if not s.tasks:
            return
        await asyncio.sleep(0.01)


def rows(ledger) -> list[tuple[str, float, str, str]]:
    out = ledger.query("SELECT job, slot, trigger, status FROM job_runs ORDER BY slot, requested")
    return [(r["job"], r["slot"] - T0, r["trigger"], r["status"]) for r in out]


def test_on_time_slots_run_once_each(ledger):
    async def main() -> None:
        clock = Clock(T0 + 10)
        s, runner = scheduler(ledger, clock, [job()])
        await s.start()
        for t in (T0 + 10, T0 + 3600, T0 + 3601, T0 + 7200 + 5):  # a second tick in the same slot runs nothing
            clock.now = t
            await s.tick()
            await settle(s)
        assert [c.slot - T0 for c in runner.ran] == [3600, 7200]

    asyncio.run(main())
    assert rows(ledger) == [("hourly", 3600, "schedule", "ok"), ("hourly", 7200, "schedule", "ok")]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # down from 01:10 to 04:30 (slots 02:00, 03:00, 04:00 passed, the newest 30 min ago > grace 5 min)
        ("skip", [("hourly", 3600, "schedule", "ok"), ("hourly", 4 * 3600, "schedule", "missed")]),
        ("catch_up", [("hourly", 3600, "schedule", "ok"), ("hourly", 4 * 3600, "catch-up", "ok")]),
    ],
)
def test_after_downtime_the_missed_policy_applies_once(ledger, policy, expected):
    async def main() -> None:
        clock = Clock(T0 + 3600)
        s, _ = scheduler(ledger, clock, [job(missed=policy)])
        s.since = {"hourly": T0}
        await s.tick()
        await settle(s)
        # the gateway stops; a new one starts later and resumes from the ledger
        clock.now = T0 + 4 * 3600 + 1800
        s2, runner2 = scheduler(ledger, clock, [job(missed=policy)], owner="b")
        await s2.start()
        await s2.tick()
        await settle(s2)
        await s2.tick()  # nothing more: the missed slots were handled once
        await settle(s2)
        assert len(runner2.ran) == (1 if policy == "catch_up" else 0)

    asyncio.run(main())
    assert rows(ledger) == expected


@pytest.mark.parametrize(
    ("started", "now", "other_ran", "expected"),
    [
        # a replica starved from 08:00 to 08:09:05 (grace 5 min): each slot of the last 5 min is recorded
        # missed, the newest of the four older ones carries their count, the newest of all runs
        (
            0,
            9 * 60 + 5,
            (),
            [(240, "schedule", "missed", "4 slot(s) passed")]
            + [(m * 60, "schedule", "missed", "looked late") for m in range(5, 9)]
            + [(540, "schedule", "ok", None)],
        ),
        # another replica ran two of the late slots: their records stay as they are
        (
            6 * 60 - 30,
            8 * 60 + 1,
            (360, 420),
            [(360, "schedule", "ok", None), (420, "schedule", "ok", None), (480, "schedule", "ok", None)],
        ),
    ],
)
def test_slots_passed_while_the_scheduler_looked_late_each_get_a_record(ledger, started, now, other_ran, expected):
    every_minute = job(name="pulse", schedule="* * * * *", overlap="allow")

    async def main() -> None:
        clock = Clock(T0 + started)
        other, _ = scheduler(ledger, clock, [every_minute], owner="b")
        for t in other_ran:
            clock.now = T0 + t + 1
            other.since = {"pulse": T0 + t - 60}
            await other.tick()
            await settle(other)
        clock.now = T0 + now
        s, runner = scheduler(ledger, clock, [every_minute])
        s.since = {"pulse": T0 + started}
        await s.tick()
        await settle(s)
        await s.tick()  # nothing more
        await settle(s)
        assert [c.slot - T0 for c in runner.ran] == [expected[-1][0]]

    asyncio.run(main())
    got = ledger.query("SELECT slot, trigger, status, error FROM job_runs ORDER BY slot")
    assert len(got) == len(expected)
    for row, (slot, trigger, status, error) in zip(got, expected, strict=True):
        assert (row["slot"] - T0, row["trigger"], row["status"]) == (slot, trigger, status)
        assert (row["error"] is None) if error is None else (error in row["error"]), row["error"]


def test_two_replicas_on_one_ledger_run_a_slot_once_and_a_manual_run_once(ledger):
    async def main() -> None:
        clock = Clock(T0 + 3600 + 1)
        jobs = [job(overlap="allow")]  # only the claim keeps the second replica out
        a, ran_a = scheduler(ledger, clock, jobs, owner="a")
        b, ran_b = scheduler(ledger, clock, jobs, owner="b")
        a.since, b.since = {"hourly": T0}, {"hourly": T0}  # each replica its own view
        await asyncio.gather(a.tick(), b.tick())
        JobRuns(ledger, "cli").request("hourly", now=clock.now)
        await asyncio.gather(a.tick(), b.tick())
        await asyncio.gather(settle(a), settle(b))
        assert len(ran_a.ran) + len(ran_b.ran) == 2

    asyncio.run(main())
    assert sorted(r[2:] for r in rows(ledger)) == [("manual", "ok"), ("schedule", "ok")]


def test_a_dead_owners_run_is_taken_over_after_its_lease_then_abandoned_after_too_many(ledger):
    async def main() -> None:
        clock = Clock(T0 + 3600 + 1)
        dead = JobRuns(ledger, "dead")
        claim = dead.claim("hourly", T0 + 3600, "schedule", now=clock.now, lease_s=60)
        assert claim is not None
        s, runner = scheduler(ledger, clock, [job(retries=1)], owner="live")
        s.since = {"hourly": T0 + 3600}
        await s.tick()
        assert runner.ran == []  # the lease is live: not taken
        clock.now += 61
        await s.tick()
        await settle(s)
        assert [c.attempts for c in runner.ran] == [2]
        # a run whose owners died as often as it may be tried is abandoned, not run a third time
        c2 = dead.claim("hourly", T0 + 7200, "schedule", now=clock.now, lease_s=1)
        assert c2 is not None
        ledger.transact([("UPDATE job_runs SET attempts = 2 WHERE run_key = ?", (c2.run_key,))])
        clock.now += 2
        s.since = {"hourly": T0 + 7200}
        await s.tick()
        await settle(s)
        assert len(runner.ran) == 1

    asyncio.run(main())
    assert [r[3] for r in rows(ledger)] == ["ok", "abandoned"]


def test_overlap_skip_records_the_slot_and_allow_runs_it(ledger):
    async def main(policy: str) -> int:
        clock = Clock(T0 + 3600 + 1)
        s, runner = scheduler(ledger, clock, [job(name=policy, overlap=policy)], hold=True)
        s.since = {policy: T0}
        await s.tick()
        clock.now = T0 + 7200 + 1
        await s.tick()
        n = len(runner.ran)
        await s.close()
        return n

    assert asyncio.run(main("skip")) == 1
    assert asyncio.run(main("allow")) == 2
    assert ("skip", 7200, "schedule", "skipped") in rows(ledger)


def test_a_paused_job_is_not_scheduled_until_resumed_but_runs_when_asked(ledger):
    async def main() -> None:
        clock = Clock(T0 + 3600 + 1)
        ledger.set_flag(PAUSE_FLAG + "hourly", "1")
        s, runner = scheduler(ledger, clock, [job(overlap="allow")], hold=True)
        s.since = {"hourly": T0}
        await s.tick()
        assert runner.ran == []
        JobRuns(ledger, "cli").request("hourly", now=clock.now)  # by hand: runs even while paused
        await s.tick()
        assert [c.trigger for c in runner.ran] == ["manual"]
        ledger.set_flag(PAUSE_FLAG + "hourly", None)
        await s.tick()
        assert [c.trigger for c in runner.ran] == ["manual", "schedule"]

    asyncio.run(main())


class FlakyRuns(JobRuns):
    """The ledger unreachable for the first ``down`` claims."""

    down = 1

    def claim(self, *a, **kw):
        if self.down > 0:
            self.down -= 1
            raise LedgerUnavailable("ledger unavailable: PostgreSQL at postgresql://x: connection refused")
        return super().claim(*a, **kw)


def test_a_slot_whose_claim_failed_because_the_ledger_was_down_is_claimed_at_the_next_tick(ledger):
    async def main() -> None:
        clock = Clock(T0 + 3600 + 1)
        store = FlakyRuns(ledger, "a")
        runner = FakeRunner(store, clock)
        s = Scheduler([job()], runner, store, clock=clock)  # type: ignore[arg-type]
        s.since = {"hourly": T0}
        with pytest.raises(LedgerUnavailable):
            await s.tick()
        clock.now += 1
        await s.tick()
        await settle(s)
        assert [c.slot - T0 for c in runner.ran] == [3600]

    asyncio.run(main())
    assert rows(ledger) == [("hourly", 3600, "schedule", "ok")]
