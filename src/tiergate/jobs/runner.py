"""One claimed run of a job, start to record: wait for a slot, do the work, deliver, write the outcome.

An agent job's prompt goes through the gateway's own pipeline (limits, the
guardian, budgets, routing, gates, the ledger) as an OpenAI chat request
from key ``jobs``, agent = the job's name and a session of the run's own
(``job:NAME:RUN``), so the guardian's limits apply per run and nothing
carries over between runs. A report job builds the digest instead. Each
attempt is bounded by the job's timeout and retried with backoff; while a
run is claimed, its lease is renewed so no other replica takes it over.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import orjson

from tiergate.api.job_chat import answer_text, job_request
from tiergate.background import reraise_if_stopping, stop
from tiergate.config.job_templates import TemplateFailed, render
from tiergate.config.jobs import JobConfig, SchedulerConfig
from tiergate.config.schema import TiergateConfig
from tiergate.core.catalog import Catalog
from tiergate.core.errors import JobFailed, TiergateError
from tiergate.core.ids import IdSource
from tiergate.core.schedule import Schedule, retry_delay
from tiergate.core.types import Identity
from tiergate.jobs.delivery import Deliverer, Result
from tiergate.jobs.digest import build_digest, render_html, render_markdown
from tiergate.jobs.inputs import gather_inputs
from tiergate.ledger.job_runs import Claim, JobRuns
from tiergate.pipeline.service import PipelineRequest, RequestPipeline

log = logging.getLogger("tiergate.jobs")

JOBS_KEY = "jobs"  # the key name job requests are recorded under (budgets and limits may name it)


@dataclass(slots=True)
class Work:
    markdown: str
    html: str
    subject: str
    deployment: str | None = None
    cost_usd: float = 0.0


class JobRunner:
    def __init__(
        self,
        config: TiergateConfig,
        *,
        pipeline: RequestPipeline,
        catalog: Catalog,
        store: JobRuns,
        deliverer: Deliverer,
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.settings: SchedulerConfig = config.scheduler
        self.pipeline = pipeline
        self.catalog = catalog
        self.store = store
        self.deliverer = deliverer
        self.session = session
        self.clock = clock
        self.ids = IdSource()
        self.slots = asyncio.Semaphore(self.settings.max_concurrent)

    def zone(self, job: JobConfig) -> str:
        return job.timezone or self.config.timezone

    async def run(self, job: JobConfig, claim: Claim) -> str:
        """Carry out a claimed run; returns its final status. A stop mid-run gives the claim up to other replicas."""
        renewer = asyncio.create_task(self._renew(claim), name=f"job-lease:{claim.run_key}")
        try:
            return await self._run(job, claim)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(self.store.release, claim))
            raise
        finally:
            await stop(renewer)

    async def _run(self, job: JobConfig, claim: Claim) -> str:
        session = f"job:{job.name}:{claim.run_id}"
        try:
            async with asyncio.timeout(self.settings.queue_timeout):
                await self.slots.acquire()
        except TimeoutError:
            error = f"queued longer than scheduler.queue_timeout ({self.settings.queue_timeout:g}s)"
            return await self._finish(job, claim, "failed", None, session, error=error, delivered={})
        try:
            log.info("job %s run %s started (%s, slot %s)", job.name, claim.run_id, claim.trigger, claim.slot)
            work, failure = await self._attempts(job, claim, session)
            return await self._finish(job, claim, "ok" if failure is None else "failed", work, session, error=failure)
        finally:
            self.slots.release()

    async def _attempts(self, job: JobConfig, claim: Claim, session: str) -> tuple[Work | None, str | None]:
        attempts = job.retries + 1
        error = ""
        for attempt in range(1, attempts + 1):
            try:
                async with asyncio.timeout(job.timeout):
                    return await self._work(job, claim, session), None
            except TimeoutError:
                error = f"timed out after {job.timeout:g}s"
            except JobFailed as exc:
                error = str(exc)
            except TiergateError as exc:
                error = f"{type(exc).__name__}: {exc.message}"
            except Exception as exc:  # a bug must fail one run, not the scheduler
                reraise_if_stopping(exc)
                log.exception("job %s run %s: unexpected error", job.name, claim.run_id)
                error = f"internal error: {type(exc).__name__}"
            if attempt < attempts:
                delay = retry_delay(job.retry_backoff, attempt)
                log.warning(
                    "job %s run %s attempt %d/%d failed, retrying in %.1fs: %s",
                    job.name,
                    claim.run_id,
                    attempt,
                    attempts,
                    delay,
                    error,
                )
                await asyncio.sleep(delay)
        return None, f"{error} (after {attempts} attempt{'s' if attempts > 1 else ''})"

    async def _work(self, job: JobConfig, claim: Claim, session: str) -> Work:
        zone = self.zone(job)
        if job.report is not None:
            digest = await asyncio.to_thread(
                build_digest,
                self.pipeline.ledger,
                self.catalog,
                list(self.config.budgets),
                period=job.report.period,
                now=self.clock(),
                tz=zone,
            )
            return Work(render_markdown(digest), render_html(digest), digest.subject)
        assert job.prompt is not None
        inputs = await gather_inputs(job.inputs, self.session)
        context = {"inputs": inputs, "job": {"name": job.name, "run_id": claim.run_id},
                   "slot": Schedule(job.schedule, zone).local(claim.slot)}  # fmt: skip
        try:
            prompt = render(job.prompt, context)
            system = render(job.system, context) if job.system else None
        except TemplateFailed as exc:
            raise JobFailed(f"template: {exc}") from None
        ident = Identity(key_name=JOBS_KEY, agent=job.agent_name, session=session, task=job.task)
        ident, features, body, protocol = job_request(
            prompt, model=job.model, system=system, max_tokens=job.max_tokens, identity=ident
        )
        req = PipelineRequest(self.ids.new(), ident, features, body, protocol, time.perf_counter())
        answer = await self.pipeline.open(req)
        status = answer.reply.status
        try:
            text = answer_text(answer.reply.body)
        except TiergateError:
            status = 502
            raise
        finally:
            cost = await answer.finish(status=status)
        escaped = html.escape(text)
        page = f'<html><body><pre style="white-space: pre-wrap">{escaped}</pre></body></html>'
        return Work(text, page, job.name, answer.deployment.name, cost)

    async def _finish(
        self,
        job: JobConfig,
        claim: Claim,
        status: str,
        work: Work | None,
        session: str,
        *,
        error: str | None,
        delivered: dict[str, str] | None = None,
    ) -> str:
        if delivered is None:
            delivered = await self._deliver(job, claim, status, work, error)
            undelivered = [f"{k} {v}" for k, v in delivered.items() if v != "ok"]
            if undelivered and status == "ok":
                status, error = "failed", "not delivered to " + "; ".join(undelivered)
        rec = await asyncio.to_thread(
            self.store.finish,
            claim,
            status,
            now=self.clock(),
            session=session if job.prompt is not None else None,
            deployment=work.deployment if work else None,
            cost_usd=work.cost_usd if work else 0.0,
            delivered=orjson.dumps(delivered).decode(),
            error=error,
            output=work.markdown if work else None,
        )
        if not rec:
            log.warning("job %s run %s: another process took the run over; its record stands", job.name, claim.run_id)
        log.log(
            logging.INFO if status == "ok" else logging.WARNING,
            "job %s run %s %s%s",
            job.name,
            claim.run_id,
            status,
            f": {error}" if error else "",
        )
        return status

    async def _deliver(
        self, job: JobConfig, claim: Claim, status: str, work: Work | None, error: str | None
    ) -> dict[str, str]:
        if not job.deliver:
            return {}
        zone = self.zone(job)
        slot_local = Schedule(job.schedule, zone).local(claim.slot)
        if work is None:
            text = f"Job {job.name} failed (run {claim.run_id}, slot {slot_local}): {error}"
            work = Work(text, f"<html><body><p>{html.escape(text)}</p></body></html>", f"{job.name} failed")
        result = Result(
            job.name,
            claim.run_id,
            claim.slot,
            slot_local,
            status,
            work.subject,
            work.markdown,
            work.html,
            work.deployment,
            work.cost_usd,
        )
        outcomes = await self.deliverer.deliver(job.deliver, result)
        return {d.sink: "ok" if d.ok else f"failed after {d.attempts} attempt(s): {d.error}" for d in outcomes}

    async def _renew(self, claim: Claim) -> None:
        every = self.settings.lease / 3
        while True:
            await asyncio.sleep(every)
            try:
                if not await asyncio.to_thread(self.store.renew, claim, now=self.clock(), lease_s=self.settings.lease):
                    log.warning("job run %s: lease lost (another process took it over)", claim.run_id)
                    return
            except Exception as exc:  # the ledger briefly down: try again; the lease has room for it
                reraise_if_stopping(exc)
                log.warning("job run %s: lease not renewed: %s", claim.run_id, type(exc).__name__)
