"""Sessions as the ledger holds them and as the guardian judges them: pure conversions both ways.

Kept apart from ``sessions`` (the tracker, which does the I/O) so each stays small and these
stay table-testable: a row into a ``SessionState``, a state into the ``SessionRow`` the writer
upserts, and the rebuild of totals at start from rows and usage sums.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from tiergate.config.guardrails import GuardianConfig
from tiergate.core.sanitize import clean_id
from tiergate.guardrails import guardian
from tiergate.ledger.records import SessionRow
from tiergate.ledger.tables import Row


class Kill(NamedTuple):
    """A kill in memory: why, and when (it holds for ``guardian.kill_ttl`` from then)."""

    reason: str
    at: float


def rules_from(cfg: GuardianConfig) -> guardian.GuardianRules:
    return guardian.GuardianRules(
        session_max_usd=cfg.session_max_usd,
        session_max_age_s=cfg.session_max_age,
        session_idle_ttl_s=cfg.session_idle_ttl,
        context_alert_at=tuple(cfg.context_alert_at),
        kill_ttl_s=cfg.kill_ttl,
    )


def implicit_id(key_name: str, agent: str | None, label: str) -> str:
    """An implicit session's id: ``key:agent:period`` (``-`` for no agent), as the ledger stores it."""
    return clean_id(f"{clean_id(key_name)}:{clean_id(agent or '-')}:{label}")


def state_of(row: Row) -> guardian.SessionState:
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
        implicit=bool(row["implicit"]),
        killed_at=row["killed_at"],
    )


def rebuild(rows: Iterable[Row], sums: Iterable[Row]) -> list[tuple[guardian.SessionState, bool]]:
    """Sessions from their flushed rows and the usage the ledger holds: (state, changed by the usage).

    Pure. A session row lags its usage rows by up to a flush (about a second) and by the
    requests a crash kept it from flushing; the usage sums (``Ledger.session_usage``) are
    what the ledger holds, so each total is the larger of the two. A session with usage and
    no row (it crashed before its first flush) starts at its first request.
    """
    states = {r["session"]: state_of(r) for r in rows}
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


def session_row(s: guardian.SessionState) -> SessionRow:
    """The row the writer upserts for a session's state."""
    return SessionRow(
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
        s.implicit,
        s.killed_at,
    )
