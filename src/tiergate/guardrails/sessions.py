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
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from tiergate.config.guardrails import GuardianConfig
from tiergate.core.errors import LedgerUnavailable, SessionKilled, StateUnavailable
from tiergate.core.sanitize import clean_id
from tiergate.core.types import Identity, Usage
from tiergate.guardrails import guardian
from tiergate.ledger.base import Ledger
from tiergate.ledger.records import SessionRow
from tiergate.ledger.tables import Row
from tiergate.state.base import SessionTotals, SharedState

if TYPE_CHECKING:
    from tiergate.guardrails.alerts import AlertDispatcher
    from tiergate.observability.metrics import Metrics

log = logging.getLogger("tiergate.guardrails.sessions")


def rules_from(cfg: GuardianConfig) -> guardian.GuardianRules:
    return guardian.GuardianRules(
        session_max_usd=cfg.session_max_usd,
        session_max_age_s=cfg.session_max_age,
        session_idle_ttl_s=cfg.session_idle_ttl,
        context_alert_at=tuple(cfg.context_alert_at),
    )


def session_id(ident: Identity) -> str:
    """The session a request counts in, as the ledger stores it (usage.session, or key:agent without one)."""
    if ident.session:
        return clean_id(ident.session)
    return f"{clean_id(ident.key_name)}:{clean_id(ident.agent or '-')}"


def _state(row: Row) -> guardian.SessionState:
    return guardian.SessionState(
        session=row["session"],
        key_name=row["key_name"],
        agent=row["agent"],
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        requests=row["requests"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cost_usd=row["cost_usd"],
        max_context_ratio=row["max_context_ratio"],
        killed_reason=row["killed_reason"],
    )


def rebuild(rows: Iterable[Row], sums: Iterable[Row]) -> list[tuple[guardian.SessionState, bool]]:
    """Sessions from their flushed rows and the usage the ledger holds: (state, changed by the usage).

    Pure. A session row lags its usage rows by up to a flush (about a second) and by the
    requests a crash kept it from flushing; the usage sums (``Ledger.session_usage``) are
    what the ledger holds, so each total is the larger of the two. A session with usage and
    no row (it crashed before its first flush) starts at its first request.
    """
    states = {r["session"]: _state(r) for r in rows}
    changed: set[str] = set()
    for u in sums:
        sid, s = u["session"], states.get(u["session"])
        if s is None:
            s = states[sid] = guardian.SessionState(
                session=sid, key_name=u["key_name"], agent=u["agent"], first_seen=u["first_ts"], last_seen=u["last_ts"]
            )
        before = (s.requests, s.prompt_tokens, s.completion_tokens, s.cost_usd)
        s.requests = max(s.requests, int(u["requests"]))
        s.prompt_tokens = max(s.prompt_tokens, int(u["prompt_tokens"]))
        s.completion_tokens = max(s.completion_tokens, int(u["completion_tokens"]))
        s.cost_usd = max(s.cost_usd, float(u["cost_usd"]))
        s.last_seen = max(s.last_seen, float(u["last_ts"]))
        if (s.requests, s.prompt_tokens, s.completion_tokens, s.cost_usd) != before:
            changed.add(sid)
    return [(s, s.session in changed) for s in states.values()]


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
    ) -> None:
        self.rules = rules_from(cfg)
        self.max_tracked = cfg.max_tracked_sessions
        self._first_context_alert = min(self.rules.context_alert_at, default=float("inf"))
        self.shared = shared
        self.ledger = ledger
        self.alerts = alerts
        self.clock = clock
        self.metrics = metrics
        self.states: OrderedDict[str, guardian.SessionState] = OrderedDict()  # least recently used first
        self.killed: dict[str, str] = {}  # every kill known, whether or not its session is held in memory
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
        self.killed = self.ledger.killed_sessions()
        self._control_version = self.ledger.control_version()
        self._observe()

    async def admit(self, ident: Identity) -> guardian.SessionState:
        """Before routing: refuse a killed session (403 with the reason); start or refresh it."""
        now = self.clock()
        sid = session_id(ident)
        killed = self.killed.get(sid)
        if killed is not None:
            raise SessionKilled(f"session {sid} was stopped by the guardian: {killed}")
        state = self.states.get(sid)
        if state is not None:
            self.states.move_to_end(sid)
        elif self._in_ledger_only and self.shared is None:
            state = await self._read_back(sid, now)
        if self._judged_globally:
            state = await self._merge_shared(sid, ident, state)
        verdict = guardian.admit(state, self.rules, now)
        if verdict.action == "kill":
            if state is not None and not state.killed_reason:
                await self._kill(state, verdict.reason)
            raise SessionKilled(f"session {sid} was stopped by the guardian: {verdict.reason}")
        if state is None or verdict.action == "expire":
            state = guardian.SessionState(
                session=sid, key_name=ident.key_name, agent=ident.agent, first_seen=now, last_seen=now
            )
            self._track(state)
        return state

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
        state = self.states.get(sid) or _state(row)  # another request may have brought it back meanwhile
        self._track(state)
        return state

    def page(self, *, limit: int, offset: int = 0) -> tuple[int, list[guardian.SessionState]]:
        """(how many are held, ``limit`` of them from ``offset``), most recently seen first."""
        top = heapq.nlargest(offset + limit, self.states.values(), key=lambda s: s.last_seen)
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
                session=sid, key_name=ident.key_name, agent=ident.agent, first_seen=t.first_seen, last_seen=self.clock()
            )
            self._track(state)
        self._merge(state, t)
        return state

    @staticmethod
    def _merge(state: guardian.SessionState, t: SessionTotals) -> None:
        state.first_seen = min(state.first_seen, t.first_seen)
        state.requests, state.cost_usd = max(state.requests, t.requests), max(state.cost_usd, t.cost_usd)
        state.prompt_tokens = max(state.prompt_tokens, t.prompt_tokens)
        state.completion_tokens = max(state.completion_tokens, t.completion_tokens)
        if t.killed_reason and not state.killed_reason:
            state.killed_reason = t.killed_reason

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

    def kill(
        self, reason: str, *, session: str | None = None, agent: str | None = None, over_usd: float | None = None
    ) -> list[str]:
        names = self.ledger.kill_sessions(reason, session=session, agent=agent, over_usd=over_usd)
        for name in names:
            self.killed.setdefault(name, reason)
            state = self.states.get(name)
            if state is not None and not state.killed_reason:
                state.killed_reason = reason
            self._alert("session_killed", f"session {name} killed: {reason}", f"kill:{name}", session=name)
        return names

    async def _kill(self, state: guardian.SessionState, reason: str) -> None:
        state.killed_reason = reason
        self.killed.setdefault(state.session, reason)
        self._persist(state)
        if self.shared is not None:  # every replica refuses it from its next request, not after a ledger poll
            try:
                await self.shared.session_kill(state.session, reason, ttl_s=self.rules.session_idle_ttl_s)
            except StateUnavailable as exc:
                log.warning(
                    "kill of session %s reaches other replicas through the ledger only: %s", state.session, exc.message
                )
        self._alert(
            "session_killed",
            f"session {state.session} killed: {reason}",
            f"kill:{state.session}",
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
        self.ledger.record(
            SessionRow(
                s.session,
                s.key_name,
                s.agent,
                s.first_seen,
                s.last_seen,
                s.requests,
                s.prompt_tokens,
                s.completion_tokens,
                s.cost_usd,
                s.max_context_ratio,
                s.killed_reason,
            )
        )

    def _alert(self, event: str, message: str, key: str, **details: object) -> None:
        if self.alerts is not None:
            from tiergate.guardrails.alerts import Alert

            self.alerts.emit(Alert(event=event, message=message, dedupe_key=key, details=details))

    def sync_control(self) -> bool:
        """Pick up kills made by other processes; True when something changed (runs in a thread).

        While the ledger's database is unreachable the kills already known stay in force.
        """
        try:
            version = self.ledger.control_version()
            if version == self._control_version:
                return False
            killed = self.ledger.killed_sessions()
        except LedgerUnavailable as exc:
            log.warning("session kills not refreshed, keeping the last known ones: %s", exc.message)
            return False
        self._control_version = version
        for name, reason in killed.items():
            self.killed.setdefault(name, reason)  # refused by admit() whether or not the session is held
            state = self.states.get(name)
            if state is not None and not state.killed_reason:
                state.killed_reason = reason
        return True

    def expire_idle(self) -> list[str]:
        """Drop sessions idle past the TTL (a kill stays in force: ``killed`` keeps it)."""
        gone = guardian.expired(self.states.values(), self.rules, self.clock())
        for name in gone:
            del self.states[name]
        if gone:
            self._observe()
        return gone
