"""Every request belongs to a session; the guardian's verdicts are applied here.

Session totals live in memory (no database round trip per request) and the
ones that changed are upserted to the ledger about once a second (``flush``). With shared state (Redis), each
settled request also adds to the session's totals there and the guardian
judges the totals of every replica together, never one replica's share. Kills made elsewhere (the CLI,
another process) arrive through the ledger's control version, polled
about once a second, so ``tiergate sessions kill`` takes effect at once
everywhere.

Memory is bounded: at most ``guardian.max_tracked_sessions`` sessions are
held, the least recently used beyond that written to the ledger and dropped
(read back from the ledger if they return); ids are cleaned and capped as
the ledger stores them (``core.sanitize.clean_id``). At start, totals are
rebuilt from the usage rows the ledger holds (``load``), not only from the
session rows flushed once a second, so a crash forgets no request the
ledger kept.

Sessions come back. A request that names no session counts in its key's and
agent's implicit session, named after the period it falls in
(``guardian.implicit_period``: the local day, cut in ``session_max_age``
slices), so it rolls over by itself. A kill holds for ``guardian.kill_ttl``
and can be lifted by hand (``revive``, here or through the ledger); a lifted
session starts afresh: its totals from zero in memory, in the ledger row and
in the shared state. Rows unseen for ``guardian.session_retention`` are
deleted (``prune``).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from tiergate.config.guardrails import GuardianConfig
from tiergate.core.errors import LedgerUnavailable, SessionKilled, StateUnavailable
from tiergate.core.sanitize import clean_id
from tiergate.core.types import Identity, Usage
from tiergate.guardrails import guardian
from tiergate.guardrails.session_rows import Kill, implicit_id, rebuild, rules_from, session_row, state_of
from tiergate.ledger.base import Ledger
from tiergate.ledger.records import Kills
from tiergate.ledger.tables import Row
from tiergate.state.base import SessionTotals, SharedState

if TYPE_CHECKING:
    from tiergate.guardrails.alerts import AlertDispatcher
    from tiergate.observability.metrics import Metrics

log = logging.getLogger("tiergate.guardrails.sessions")

# the orders a page of sessions can be read in (admin and dashboard), each largest first
SESSION_SORTS: dict[str, Callable[[guardian.SessionState], float]] = {
    "last_seen": lambda s: s.last_seen,
    "spend": lambda s: s.cost_usd,
    "age": lambda s: -s.first_seen,
    "context": lambda s: s.max_context_ratio,
}


class SessionTracker:
    def __init__(
        self,
        cfg: GuardianConfig,
        *,
        ledger: Ledger,
        alerts: AlertDispatcher | None = None,
        clock: Callable[[], float] = time.time,
        shared: SharedState | None = None,
        metrics: Metrics | None = None,
        tz: str = "UTC",
    ) -> None:
        self.rules = rules_from(cfg)
        self.retention_s = cfg.session_retention
        self.tz = tz  # the implicit sessions' days are local days
        self.max_tracked = cfg.max_tracked_sessions
        self._first_context_alert = min(self.rules.context_alert_at, default=float("inf"))
        self.shared = shared
        self.ledger = ledger
        self.alerts = alerts
        self.clock = clock
        self.metrics = metrics
        self.states: OrderedDict[str, guardian.SessionState] = OrderedDict()  # least recently used first
        self.killed: dict[str, Kill] = {}  # every kill known, whether or not its session is held in memory
        self._reset_due: dict[str, float] = {}  # lifted kills: shared totals older than this belong to a past life
        self._period: guardian.Period | None = None  # the implicit sessions' current period
        # (key, agent, task, privacy, tags) -> its identity with the session this period named
        self._implicit_ids: dict[tuple[str, str | None, str | None, bool, tuple[str, ...]], Identity] = {}
        self._dirty: dict[str, guardian.SessionState] = {}  # totals changed since the last flush()
        self._control_version = -1
        self.evicted = 0
        self._in_ledger_only = False  # some live sessions are held in the ledger only (evicted, or not loaded)

    def load(self) -> None:
        """Sessions from the ledger, so totals, ages and kills survive a restart (a crash too).

        Totals are rebuilt from the usage rows (see ``rebuild``); a session whose totals the
        usage raised is written back at the next flush. The most recently seen
        ``max_tracked_sessions`` are held; the others are read back if they return.
        """
        live = self.clock() - self.rules.session_idle_ttl_s
        rows = self.ledger.sessions(since=live, limit=self.max_tracked)
        sums = self.ledger.session_usage(live_since=live, slack_s=min(60.0, self.rules.session_idle_ttl_s / 2))
        rebuilt = sorted(rebuild(rows, sums), key=lambda sc: sc[0].last_seen)
        self._in_ledger_only = len(rows) >= self.max_tracked or len(rebuilt) > self.max_tracked
        for state, changed in rebuilt[-self.max_tracked :]:
            self.states[state.session] = state
            if changed:
                self._dirty[state.session] = state
        self._control_version = self.ledger.control_version()
        self._apply_control(self.ledger.session_kills(since=self._kills_since()))
        self._observe()

    def identify(self, ident: Identity) -> Identity:
        """The identity with its session named: one that names none counts in its implicit session."""
        if ident.session:
            return ident
        now, p = self.clock(), self._period
        if p is None or not p.start <= now < p.end:
            p = self._period = guardian.implicit_period(now, tz=self.tz, max_age_s=self.rules.session_max_age_s)
            self._implicit_ids.clear()
        who = (ident.key_name, ident.agent, ident.task, ident.local_only, ident.tags)
        named = self._implicit_ids.get(who)
        if named is None:  # named once per caller and period: every request of theirs asks again
            if len(self._implicit_ids) >= self.max_tracked:
                self._implicit_ids.clear()
            named = self._implicit_ids[who] = Identity(  # shared by their requests: identities are never mutated
                key_name=ident.key_name,
                agent=ident.agent,
                session=implicit_id(ident.key_name, ident.agent, p.label),
                task=ident.task,
                local_only=ident.local_only,
                tags=ident.tags,
                session_implicit=True,
            )
        return named

    async def admit(self, ident: Identity) -> guardian.SessionState:
        """Before routing: refuse a killed session (403 with the reason); start or refresh it."""
        if not ident.session:
            ident = self.identify(ident)
        now = self.clock()
        sid = ident.session if ident.session_implicit and ident.session else clean_id(ident.session)
        kill = self.killed.get(sid)
        if kill is not None:
            if guardian.kill_in_force(kill.at, self.rules, now):
                raise SessionKilled(f"session {sid} was stopped by the guardian: {kill.reason}")
            self._lift(sid, kill.at + (self.rules.kill_ttl_s or 0.0))  # expired: the session starts again
        state = self.states.get(sid)
        if state is not None:
            self.states.move_to_end(sid)
        elif self._in_ledger_only and self.shared is None:
            state = await self._read_back(sid, now)
        if state is not None and ident.session_implicit:
            state.implicit = True  # rebuilt from usage rows alone, it could not know
        if self._reset_due:
            await self._reset_shared(sid)
        if self._judged_globally:
            state = await self._merge_shared(sid, ident, state)
        verdict = guardian.admit(state, self.rules, now)
        if verdict.action == "kill":
            if state is not None and not state.killed_reason:
                await self._kill(state, verdict.reason)
            raise SessionKilled(f"session {sid} was stopped by the guardian: {verdict.reason}")
        if verdict.action == "restart":  # its kill expired
            log.info("%s: it starts afresh", verdict.reason)
            self._lift(sid, verdict.at)
            await self._reset_shared(sid)
        if state is None or verdict.action != "allow":
            state = guardian.SessionState(
                session=sid,
                key_name=ident.key_name,
                agent=ident.agent,
                first_seen=now,
                last_seen=now,
                implicit=ident.session_implicit,
            )
            self._track(state)
        return state

    def _lift(self, sid: str, at: float) -> None:
        """A kill ends (expired at ``at``, or revived then): the session starts afresh at its next request."""
        self.killed.pop(sid, None)
        self.states.pop(sid, None)
        self._dirty.pop(sid, None)
        if self.shared is not None:  # the totals every replica shares are reset at the next admit
            self._reset_due[sid] = max(at, self._reset_due.get(sid, at))

    async def _reset_shared(self, sid: str) -> None:
        """Drop shared totals of a life that ended before the lift (the same cut on every replica)."""
        before = self._reset_due.get(sid)
        if before is None or self.shared is None:
            return
        try:
            await self.shared.session_reset(sid, before=before)
        except StateUnavailable as exc:
            log.warning("session %s: shared totals not reset yet (again at its next request): %s", sid, exc.message)
            return
        if self._reset_due.get(sid) == before:
            del self._reset_due[sid]

    def _track(self, state: guardian.SessionState) -> None:
        """Hold a session, dropping the least recently used beyond the cap (its totals written first)."""
        self.states[state.session] = state
        self.states.move_to_end(state.session)
        while len(self.states) > self.max_tracked:
            _, old = self.states.popitem(last=False)
            if old.session in self._dirty:
                self._persist(old)
            self.evicted += 1
            self._in_ledger_only = True
            if self.metrics is not None:
                self.metrics.sessions_evicted.inc()

    async def _read_back(self, sid: str, now: float) -> guardian.SessionState | None:
        """A session dropped from memory (or never loaded) that returns: its totals from the ledger."""
        try:
            row = await asyncio.to_thread(self.ledger.session, sid)
        except LedgerUnavailable as exc:
            log.warning("session %s starts afresh: its totals cannot be read back: %s", sid, exc.message)
            return None
        if row is None or now - row["last_seen"] > self.rules.session_idle_ttl_s:
            return None
        state = self.states.get(sid) or state_of(row)  # another request may have brought it back meanwhile
        self._track(state)
        return state

    def page(self, *, limit: int, offset: int = 0, sort: str = "last_seen") -> tuple[int, list[guardian.SessionState]]:
        """(how many are held, ``limit`` of them from ``offset``), most recently seen first; or ordered by
        ``sort`` (one of ``SESSION_SORTS``): the largest spend, the oldest, the fullest context first."""
        key = SESSION_SORTS[sort]
        top = heapq.nlargest(offset + limit, self.states.values(), key=lambda s: (key(s), s.last_seen))
        return len(self.states), top[offset:]

    def _observe(self) -> None:
        if self.metrics is not None:
            self.metrics.sessions_tracked.set(len(self.states))

    @property
    def _judged_globally(self) -> bool:
        """Spend and age limits with shared state: read the session's totals of every replica first."""
        return self.shared is not None and (
            self.rules.session_max_usd is not None or self.rules.session_max_age_s is not None
        )

    async def _merge_shared(
        self, sid: str, ident: Identity, state: guardian.SessionState | None
    ) -> guardian.SessionState | None:
        assert self.shared is not None
        try:
            t = await self.shared.session_get(sid)
        except StateUnavailable as exc:
            log.warning("session %s admitted on this replica's totals only: %s", sid, exc.message)
            return state
        if t is None:
            return state
        if state is None:
            state = guardian.SessionState(
                session=sid,
                key_name=ident.key_name,
                agent=ident.agent,
                first_seen=t.first_seen,
                last_seen=self.clock(),
                implicit=ident.session_implicit,
            )
            self._track(state)
        self._merge(state, t)
        return state

    def _merge(self, state: guardian.SessionState, t: SessionTotals) -> None:
        state.first_seen = min(state.first_seen, t.first_seen)
        state.requests, state.cost_usd = max(state.requests, t.requests), max(state.cost_usd, t.cost_usd)
        state.prompt_tokens = max(state.prompt_tokens, t.prompt_tokens)
        state.completion_tokens = max(state.completion_tokens, t.completion_tokens)
        if t.killed_reason and not state.killed_reason:  # another replica's guardian killed it
            state.killed_reason = t.killed_reason
            state.killed_at = t.killed_at if t.killed_at is not None else self.clock()
            self.killed.setdefault(state.session, Kill(state.killed_reason, state.killed_at))  # so a revive lifts it

    def observe_context(self, state: guardian.SessionState, prompt_tokens: int, window: int, deployment: str) -> None:
        ratio = prompt_tokens / window if window else 0.0
        state.max_context_ratio = max(state.max_context_ratio, ratio)
        if ratio < self._first_context_alert:  # the usual case: no threshold reached
            return
        for t in guardian.context_alerts_due(state, ratio, self.rules):
            state.context_alerts_sent = (*state.context_alerts_sent, t)
            self._alert(
                "context_threshold",
                f"session {state.session}: prompt at {ratio:.0%} of {deployment}'s {window}-token window "
                f"(alert at {t:.0%})",
                f"context:{state.session}:{t}",
                session=state.session,
            )

    async def settle(self, state: guardian.SessionState, usage: Usage, cost: float) -> None:
        state.last_seen = self.clock()
        state.requests += 1
        state.prompt_tokens += usage.prompt_tokens
        state.completion_tokens += usage.completion_tokens
        state.cost_usd += cost
        if self.shared is not None:
            await self._add_shared(state, usage, cost)
        verdict = guardian.after_request(state, self.rules)
        if verdict.action == "kill":
            await self._kill(state, verdict.reason)
        else:
            self._dirty[state.session] = state  # written by flush(), once a second, not once per request

    async def _add_shared(self, state: guardian.SessionState, usage: Usage, cost: float) -> None:
        """Judge the totals of every replica; while Redis is down, this replica's own count (logged)."""
        assert self.shared is not None
        try:
            t = await self.shared.session_add(
                state.session,
                now=state.first_seen,
                cost_usd=cost,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                ttl_s=self.rules.session_idle_ttl_s,
            )
        except StateUnavailable as exc:
            log.warning("session %s judged on this replica's totals only: %s", state.session, exc.message)
            return
        self._merge(state, t)

    async def kill(
        self,
        reason: str,
        *,
        session: str | None = None,
        agent: str | None = None,
        over_usd: float | None = None,
        include_implicit: bool = False,
    ) -> Kills:
        """An operator's kill: one session by id (``SessionNotFound`` for an id neither the ledger
        nor this process knows), or in bulk, where implicit sessions are spared unless
        ``include_implicit``: a bulk kill stops runs, never a key."""
        held = self.states.get(clean_id(session)) if session is not None else None
        kills = await asyncio.to_thread(
            self.ledger.kill_sessions,
            reason,
            session=session,
            agent=agent,
            over_usd=over_usd,
            include_implicit=include_implicit,
            kill_ttl_s=self.rules.kill_ttl_s,
            known=None if held is None else session_row(held),  # seen here a moment ago: its row may not be written
        )
        now = self.clock()
        for name in kills.killed:
            self.killed[name] = Kill(reason, now)
            state = self.states.get(name)
            if state is not None:
                state.killed_reason, state.killed_at = reason, now
            self._alert("session_killed", f"session {name} killed: {reason}", f"kill:{name}:{now:.0f}", session=name)
        return kills

    async def revive(self, session: str) -> bool:
        """Lift a session's kill by hand: recorded in the ledger (other replicas follow within about a
        second), and the session starts afresh. False when it is not killed; ``SessionNotFound``
        for an id the ledger never saw."""
        sid, now = clean_id(session), self.clock()
        held = self.killed.get(sid)  # a guardian kill of a moment ago may still wait in the writer's queue
        revived = await asyncio.to_thread(
            self.ledger.revive_session,
            sid,
            now=now,
            kill_ttl_s=self.rules.kill_ttl_s,
            held_kill=held is not None and guardian.kill_in_force(held.at, self.rules, now),
        )
        if revived:
            log.warning("session %s revived by an operator: it starts afresh", sid)
            self._lift(sid, now)
            await self._reset_shared(sid)
        return revived

    async def _kill(self, state: guardian.SessionState, reason: str) -> None:
        now = self.clock()
        state.killed_reason, state.killed_at = reason, now
        self.killed.setdefault(state.session, Kill(reason, now))
        self._persist(state)
        if self.shared is not None:  # every replica refuses it from its next request, not after a ledger poll
            ttl = max(self.rules.session_idle_ttl_s, self.rules.kill_ttl_s or 0.0)
            try:
                await self.shared.session_kill(state.session, reason, ttl_s=ttl, at=now)
            except StateUnavailable as exc:
                log.warning(
                    "kill of session %s reaches other replicas through the ledger only: %s", state.session, exc.message
                )
        self._alert(
            "session_killed",
            f"session {state.session} killed: {reason}",
            f"kill:{state.session}:{now:.0f}",  # a session revived and killed again alerts again
            session=state.session,
            cost_usd=state.cost_usd,
        )

    def flush(self) -> int:
        """Queue one ledger row per session whose totals changed since the last call; returns how many.

        Called about once a second and on shutdown: a busy session costs one
        upsert a second instead of one per request (the usage rows themselves
        are recorded per request, so nothing is lost if a crash skips a flush).
        """
        dirty, self._dirty = self._dirty, {}
        for state in dirty.values():
            self._persist(state)
        self._observe()
        return len(dirty)

    def _persist(self, s: guardian.SessionState) -> None:
        self._dirty.pop(s.session, None)
        self.ledger.record(session_row(s))

    def _alert(self, event: str, message: str, key: str, **details: object) -> None:
        if self.alerts is not None:
            from tiergate.guardrails.alerts import Alert

            self.alerts.emit(Alert(event=event, message=message, dedupe_key=key, details=details))

    async def sync(self) -> bool:
        """Pick up kills and revives made by other processes; True when something changed.

        The ledger is read in a thread and applied here, on the loop that admits requests. While
        the ledger's database is unreachable the kills already known stay in force.
        """
        try:
            read = await asyncio.to_thread(self._read_control)
        except LedgerUnavailable as exc:
            log.warning("session kills not refreshed, keeping the last known ones: %s", exc.message)
            return False
        if read is None:
            return False
        self._control_version, rows = read
        self._apply_control(rows)
        return True

    def _read_control(self) -> tuple[int, Sequence[Row]] | None:
        version = self.ledger.control_version()
        if version == self._control_version:
            return None
        return version, self.ledger.session_kills(since=self._kills_since())

    def _kills_since(self) -> float:
        """Kills and revives older than ``kill_ttl`` can no longer matter."""
        return 0.0 if self.rules.kill_ttl_s is None else self.clock() - self.rules.kill_ttl_s

    def _apply_control(self, rows: Iterable[Row]) -> None:
        """Kills newer than the one known are adopted; a revive lifts the kills it postdates."""
        for r in rows:
            sid, known = r["session"], self.killed.get(r["session"])
            if r["killed_reason"] is not None:
                at = r["killed_at"] if r["killed_at"] is not None else self.clock()
                if known is None or at > known.at:
                    self.killed[sid] = Kill(r["killed_reason"], at)  # refused whether or not the session is held
                    state = self.states.get(sid)
                    if state is not None:
                        state.killed_reason, state.killed_at = r["killed_reason"], at
            elif r["revived_at"] is not None and known is not None and known.at <= r["revived_at"]:
                self._lift(sid, r["revived_at"])

    def expire_idle(self) -> list[str]:
        """Drop sessions idle past the TTL (a kill stays in force: ``killed`` keeps it) and expired kills."""
        now = self.clock()
        gone = guardian.expired(self.states.values(), self.rules, now)
        for name in gone:
            del self.states[name]
        if gone:
            self._observe()
        for name in [n for n, k in list(self.killed.items()) if not guardian.kill_in_force(k.at, self.rules, now)]:
            self.killed.pop(name, None)  # expired: its session restarts from its state or ledger row if it returns
        horizon = max(self.rules.session_idle_ttl_s, self.rules.kill_ttl_s or 0.0)  # shared totals are gone by then
        for name in [n for n, at in self._reset_due.items() if now - at > horizon]:
            del self._reset_due[name]
        return gone

    def prune(self) -> int:
        """Delete session rows unseen for ``session_retention`` (runs in a thread); a kill in force stays."""
        now = self.clock()
        killed_before = None if self.rules.kill_ttl_s is None else now - self.rules.kill_ttl_s
        return self.ledger.prune_sessions(before=now - self.retention_s, killed_before=killed_before)
