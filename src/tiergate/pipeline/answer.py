"""An answered request, plain or streamed, that settles itself exactly once.

The surface renders it in its client's format and, however the exchange
ends, calls ``finish``: the ledger row is written, the budget hold settled,
the guardian told, the concurrency slot freed. ``complete`` frees the slot
early, before the client can see the answer end (SDKs send their next
request as soon as they read ``[DONE]``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tiergate.adapters.base import UpstreamReply, UpstreamStream
from tiergate.core.catalog import Deployment
from tiergate.guardrails.limits import Admission
from tiergate.router.context import CallContext, Outcome

if TYPE_CHECKING:
    from tiergate.pipeline.service import RequestPipeline


class Answer:
    __slots__ = ("_pipeline", "ctx", "outcome", "_admission", "_completed", "_finished", "cost")

    def __init__(
        self, pipeline: RequestPipeline, ctx: CallContext, outcome: Outcome, admission: Admission | None
    ) -> None:
        self._pipeline = pipeline
        self.ctx = ctx
        self.outcome = outcome
        self._admission = admission
        self._completed = admission is None
        self._finished = False
        self.cost = 0.0

    @property
    def deployment(self) -> Deployment:
        return self.outcome.deployment

    @property
    def reply(self) -> UpstreamReply:
        assert self.outcome.reply is not None, "a streamed answer has no reply"
        return self.outcome.reply

    @property
    def stream(self) -> UpstreamStream:
        assert self.outcome.stream is not None, "a plain answer has no stream"
        return self.outcome.stream

    def overhead_ms(self) -> float:
        """The gateway's own time so far: since arrival, less the time spent waiting on upstreams."""
        overhead = max(0.0, (time.perf_counter() - self.ctx.started) * 1000 - self.ctx.upstream_ms)
        self._pipeline.metrics.per_request.observe_overhead(overhead / 1000)
        return overhead

    async def complete(self) -> None:
        """The answer is whole: free the concurrency slot now (once), counting the tokens it used."""
        if self._completed:
            return
        self._completed = True
        limits = self._pipeline.limits
        assert limits is not None and self._admission is not None
        await limits.release(self._admission, self.outcome.usage)

    async def finish(self, *, status: int, ttft_ms: float | None = None, error: str | None = None) -> float:
        """Settle the request (once; later calls return the same cost)."""
        if self._finished:
            return self.cost
        self._finished = True
        try:
            self.cost = await self._pipeline.settle(
                self.ctx, self.outcome, usage=self.outcome.usage, status=status, ttft_ms=ttft_ms, error=error
            )
        finally:
            if not self._completed:
                await self.complete()
        return self.cost
