"""Every request belongs to a session; the guardian's verdicts are applied here.

Session totals live in memory (no database round trip per request) and the
ones that changed are upserted to the ledger about once a second (``flush``). With shared state (Redis), each
settled request also adds to the session's totals there and the guardian
judges the totals of every replica together, never one replica's share. Kills made elsewhere (the CLI,
another process) arrive through the ledger's control version, polled
about once a second, so ``tiergate sessions kill`` takes effect at once
everywhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tiergate.config.guardrails import GuardianConfig
from tiergate.core.errors import LedgerUnavailable, SessionKilled, StateUnavailable
from tiergate.core.types import Identity, Usage
from tiergate.guardrails import guardian
from tiergate.ledger.base import Ledger
from tiergate.ledger.records import SessionRow
from tiergate.state.base import SessionTotals, SharedState

if TYPE_CHECKING:
    from tiergate.guardrails.alerts import AlertDispatcher

log = logging.getLogger("tiergate.guardrails.sessions")


def rules_from(cfg: GuardianConfig) -> guardian.GuardianRules:
    return guardian.GuardianRules(
        session_max_usd=cfg.session_max_usd,
        session_max_age_s=cfg.session_max_age,
        session_idle_ttl_s=cfg.session_idle_ttl,
        context_alert_at=tuple(cfg.context_alert_at),
    )


class SessionTracker:
    def __init__(
        self,
        cfg: GuardianConfig,
        *,
        ledger: Ledger,
        alerts: AlertDispatcher | None = None,
        clock: Callable[[], float] = time.time,
        shared: SharedState | None = None,
    ) -> None:
        self.rules = rules_from(cfg)
        self._first_context_alert = min(self.rules.context_alert_at, default=float("inf"))
        self.shared = shared
        self.ledger = ledger
        self.alerts = alerts
        self.clock = clock
        self.states: dict[str, guardian.SessionState] = {}
        self._dirty: dict[str, guardian.SessionState] = {}  # totals changed since the last flush()
        self._control_version = -1

    def load(self) -> None:
        """Sessions from the ledger, so totals, ages and kills survive a restart."""
        for r in self.ledger.sessions():
            self.states[r["session"]] = guardian.SessionState(
                session=r["session"],
                key_name=r["key_name"],
                agent=r["agent"],
                first_seen=r["first_seen"],
                last_seen=r["last_seen"],
                requests=r["requests"],
                prompt_tokens=r["prompt_tokens"],
                completion_tokens=r["completion_tokens"],
                cost_usd=r["cost_usd"],
                max_context_ratio=r["max_context_ratio"],
                killed_reason=r["killed_reason"],
            )
        self._control_version = self.ledger.control_version()

    async def admit(self, ident: Identity) -> guardian.SessionState:
        """Before routing: refuse a killed session (403 with the reason); start or refresh it."""
        now = self.clock()
        sid = ident.session or f"{ident.key_name}:{ident.agent or '-'}"
        state = self.states.get(sid)
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
            self.states[sid] = state
        return state

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
            self.states[sid] = state
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
            state = self.states.get(name)
            if state is not None and not state.killed_reason:
                state.killed_reason = reason
            self._alert("session_killed", f"session {name} killed: {reason}", f"kill:{name}", session=name)
        return names

    async def _kill(self, state: guardian.SessionState, reason: str) -> None:
        state.killed_reason = reason
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
            state = self.states.get(name)
            if state is None:
                now = self.clock()
                self.states[name] = guardian.SessionState(
                    session=name, key_name="", agent=None, first_seen=now, last_seen=now, killed_reason=reason
                )
            elif not state.killed_reason:
                state.killed_reason = reason
        return True

    def expire_idle(self) -> list[str]:
        gone = guardian.expired(self.states.values(), self.rules, self.clock())
        for name in gone:
            if not self.states[name].killed_reason:
                del self.states[name]
        return gone
