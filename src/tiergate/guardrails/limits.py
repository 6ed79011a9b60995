"""Rate and concurrency limits on the request path: admit before routing, release however it ends.

``tiergate.core.limits`` decides which counters a request is counted in; the
shared state counts them atomically (one Redis script across replicas), so
N replicas enforce a limit once, never N times. Concurrency slots are
leases: this replica renews the leases of its requests in flight every
``RENEW_EVERY_S``; a replica that dies stops renewing and its slots come
back within ``LEASE_TTL_S``.

When the shared state is unreachable nothing is counted per process
instead: ``on_outage.limits`` decides. ``fail_closed`` refuses with 503
naming the outage; ``fail_open`` admits unchecked, warns once per outage
and counts ``tiergate_limits_unchecked_total``.

Built only when ``limits`` is configured: without limits the request path
does not touch this module at all.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tiergate.background import reraise_if_stopping
from tiergate.config.guardrails import LimitConfig
from tiergate.core.errors import RateLimited, StateUnavailable
from tiergate.core.limits import (
    LEASE_TTL_S,
    RENEW_EVERY_S,
    LimitCounter,
    counters_for,
    end_tokens,
    refusal_message,
    retry_after_s,
)
from tiergate.core.types import Identity, Usage
from tiergate.state.base import SharedState

if TYPE_CHECKING:
    from tiergate.guardrails.outages import Outages
    from tiergate.observability.metrics import Metrics

log = logging.getLogger("tiergate.guardrails.limits")

QUEUE_POLL_FIRST_S = 0.02  # a queued request looks again soon, then backs off
QUEUE_POLL_MAX_S = 0.25


@dataclass(slots=True)
class Admission:
    """What an admitted request holds: its counters, its lease id and the tokens counted so far."""

    counters: tuple[LimitCounter, ...]
    lease: str
    tokens: int


class LimitGuard:
    def __init__(
        self,
        limits: Sequence[LimitConfig],
        *,
        state: SharedState,
        mode: str = "fail_closed",
        metrics: Metrics | None = None,
        outages: Outages | None = None,
        clock: Callable[[], float] = time.time,
        lease_ttl_s: float = LEASE_TTL_S,
        renew_every_s: float = RENEW_EVERY_S,
    ) -> None:
        self.limits = list(limits)
        self.state = state
        self.mode = mode
        self.metrics = metrics
        self.outages = outages
        self.clock = clock
        self.lease_ttl_s = lease_ttl_s
        self.renew_every_s = renew_every_s
        self._node = secrets.token_hex(6)  # lease ids: unique across replicas without coordination
        self._seq = 0
        self._held: dict[str, tuple[LimitCounter, ...]] = {}  # lease -> its max_concurrent counters, in flight
        self._unchecked_since: float | None = None  # fail_open: set while admitting unchecked (warn once)
        self._release_failing = False
        self.queued = 0  # requests waiting for a max_concurrent slot (queue_timeout), on this process

    @property
    def in_flight(self) -> int:
        return len(self._held)

    # ------------------------------------------------------------------ request path
    async def admit(self, ident: Identity, prompt_tokens: int) -> Admission | None:
        """Count the request in every limit it is under; raises RateLimited (429) or, fail_closed during an
        outage, StateUnavailable (503). None when no limit applies or it was admitted unchecked."""
        counters = counters_for(self.limits, ident)
        if not counters:
            return None
        self._seq += 1
        lease = f"{self._node}:{self._seq}"
        try:
            refused = await self.state.limit_admit(
                counters, now=self.clock(), tokens=prompt_tokens, lease=lease, lease_ttl_s=self.lease_ttl_s
            )
        except StateUnavailable as exc:
            self._outage(exc)  # raises unless fail_open
            return None
        if self._unchecked_since is not None:
            log.warning(
                "rate and concurrency limits are checked again after %.1fs unchecked",
                self.clock() - self._unchecked_since,
            )
            self._unchecked_since = None
        if refused is not None and counters[refused[0]].limit.queue_timeout:
            try:
                refused = await self._queue(counters, prompt_tokens, lease, refused)
            except StateUnavailable as exc:
                self._outage(exc)  # raises unless fail_open
                return None
        if refused is not None:
            i, wait_s = refused
            c = counters[i]
            if self.metrics is not None:
                self.metrics.child(self.metrics.rate_limited, c.limit.scope, c.kind).inc()
            raise RateLimited(refusal_message(c, tokens=prompt_tokens), retry_after=retry_after_s(c, wait_s))
        held = tuple(c for c in counters if c.kind == "max_concurrent")
        if held:
            self._held[lease] = held
        return Admission(counters, lease, prompt_tokens)

    async def _queue(
        self, counters: tuple[LimitCounter, ...], tokens: int, lease: str, refused: tuple[int, float]
    ) -> tuple[int, float] | None:
        """A request over a ``max_concurrent`` line with ``queue_timeout`` waits for a slot (polling the shared
        count, so a slot freed on any replica counts) until admitted, refused by another line, or out of time."""
        self.queued += 1  # the queue-depth metric; only queued requests pay for it
        try:
            return await self._wait_for_slot(counters, tokens, lease, refused)
        finally:
            self.queued -= 1

    async def _wait_for_slot(
        self, counters: tuple[LimitCounter, ...], tokens: int, lease: str, refused: tuple[int, float]
    ) -> tuple[int, float] | None:
        queue_timeout = counters[refused[0]].limit.queue_timeout
        assert queue_timeout is not None
        deadline = time.monotonic() + queue_timeout
        pause = QUEUE_POLL_FIRST_S
        while counters[refused[0]].kind == "max_concurrent" and counters[refused[0]].limit.queue_timeout:
            left = deadline - time.monotonic()
            if left <= 0:
                return refused
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, QUEUE_POLL_MAX_S)
            again = await self.state.limit_admit(
                counters, now=self.clock(), tokens=tokens, lease=lease, lease_ttl_s=self.lease_ttl_s
            )
            if again is None:
                return None
            refused = again
        return refused

    def _outage(self, exc: StateUnavailable) -> None:
        if self.mode == "fail_open":
            if self._unchecked_since is None:
                self._unchecked_since = self.clock()
                log.warning(
                    "admitting requests without checking rate and concurrency limits (on_outage.limits: fail_open): %s",
                    exc.message,
                )
            if self.metrics is not None:
                self.metrics.limits_unchecked.inc()
            if self.outages is not None:
                self.outages.decided("limits", "unchecked")
            return
        if self.outages is not None:
            self.outages.decided("limits", "refused")
        raise StateUnavailable(
            f"rate and concurrency limits cannot be checked (on_outage.limits: fail_closed): {exc.message}"
        ) from None

    async def release(self, adm: Admission, usage: Usage | None) -> None:
        """The request ended (answered, failed or the client left): free its slots, count its late tokens.

        The lease leaves the renewal set before anything awaits, so even if the call below never
        completes (cancelled, Redis down) the slot comes back when the lease expires.
        """
        self._held.pop(adm.lease, None)
        tokens = end_tokens(adm.tokens, usage)
        if tokens <= 0 and not any(c.kind == "max_concurrent" for c in adm.counters):
            return
        try:
            await self.state.limit_release(adm.counters, now=self.clock(), tokens=tokens, lease=adm.lease)
        except StateUnavailable as exc:
            if not self._release_failing:
                log.warning(
                    "cannot release limit counters (slots come back when their lease expires, "
                    "late tokens are not counted): %s",
                    exc.message,
                )
            self._release_failing = True
            return
        self._release_failing = False

    # ------------------------------------------------------------------ leases
    async def renew(self) -> None:
        """Push back the expiry of every lease this replica's requests hold."""
        held = [(c, lease) for lease, cs in self._held.items() for c in cs]
        if held:
            await self.state.limit_renew(held, expires_at=self.clock() + self.lease_ttl_s)

    async def renew_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.renew_every_s)
            try:
                await self.renew()
            except StateUnavailable as exc:
                reraise_if_stopping(exc)
                if not failing:
                    log.warning(
                        "cannot renew concurrency leases; they expire in %gs unless renewed: %s",
                        self.lease_ttl_s,
                        exc.message,
                    )
                failing = True
                continue
            except Exception as exc:  # keep renewing; a lost renewal only frees a slot early
                reraise_if_stopping(exc)
                log.warning("renewing concurrency leases failed", exc_info=True)
                continue
            failing = False
