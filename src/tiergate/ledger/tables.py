"""Keys, flags, session kills, revives and pruning: the same SQL on every backend, written once.

A backend supplies ``query`` (rows indexable by column name) and
``_transact`` (statements in one transaction, returning row counts, raising
``DuplicateName`` on a unique violation); everything here is built on those.
Every change to keys or control state bumps a version in ``meta`` so running
gateways poll one cheap row instead of reloading tables.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Sequence
from typing import Any, Protocol

from tiergate.core.errors import DuplicateName, SessionNotFound
from tiergate.core.sanitize import clean_id, clean_text, optional
from tiergate.ledger.records import (
    KEY_PREFIX,
    SESSION_COLUMNS,
    UPSERT_SESSION,
    KeyRecord,
    Kills,
    SessionRow,
    hash_key,
    session_values,
)

# names tiergate itself records requests under: the master key, no key (auth.required: false), scheduled jobs
RESERVED_KEY_NAMES = frozenset({"master", "anonymous", "jobs"})


class Row(Protocol):
    """A result row read by column name: a ``dict`` from psycopg's ``dict_row``, a ``sqlite3.Row`` (not a Mapping)."""

    def __getitem__(self, column: str, /) -> Any: ...


Step = tuple[str, tuple[Any, ...]]

_BUMP_KEYS = ("UPDATE meta SET value = value + 1 WHERE key = 'keys_version'", ())
_BUMP_CONTROL = ("UPDATE meta SET value = value + 1 WHERE key = 'control_version'", ())


class LedgerTables:
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> Sequence[Row]:
        raise NotImplementedError

    def _transact(self, steps: Sequence[Step]) -> list[int]:
        raise NotImplementedError

    def transact(self, steps: Sequence[Step]) -> list[int]:
        """Statements in one transaction, their row counts; ``DuplicateName`` on a unique violation."""
        return self._transact(steps)

    def _version(self, name: str) -> int:
        return int(self.query("SELECT value FROM meta WHERE key = ?", (name,))[0]["value"])

    # ---------------------------------------------------------------- keys
    def create_key(self, name: str, *, agent: str | None = None, admin: bool = False) -> str:
        """Issue a virtual key; only its hash is stored, the key itself is returned once."""
        if name.strip().lower() in RESERVED_KEY_NAMES:
            # a virtual key named "master" was taken for the master key by /admin (its rights go by name)
            raise ValueError(f"the key name {name!r} is tiergate's own; choose another")
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        try:
            self._transact(
                [
                    (
                        "INSERT INTO keys (name, key_hash, prefix, agent, created, admin) VALUES (?, ?, ?, ?, ?, ?)",
                        (name, hash_key(key), key[:8], agent, time.time(), int(admin)),
                    ),
                    _BUMP_KEYS,
                ]
            )
        except DuplicateName:
            raise ValueError(f"a key named {name!r} already exists") from None
        return key

    def revoke_key(self, name: str) -> bool:
        revoked, _ = self._transact(
            [("UPDATE keys SET revoked = ? WHERE name = ? AND revoked IS NULL", (time.time(), name)), _BUMP_KEYS]
        )
        return revoked > 0

    def list_keys(self) -> list[KeyRecord]:
        rows = self.query("SELECT name, prefix, agent, created, revoked, admin FROM keys ORDER BY created")
        return [
            KeyRecord(r["name"], r["prefix"], r["agent"], r["created"], r["revoked"], bool(r["admin"])) for r in rows
        ]

    def keys_version(self) -> int:
        return self._version("keys_version")

    def active_key_hashes(self) -> dict[str, KeyRecord]:
        rows = self.query("SELECT name, key_hash, prefix, agent, created, admin FROM keys WHERE revoked IS NULL")
        return {
            r["key_hash"]: KeyRecord(r["name"], r["prefix"], r["agent"], r["created"], None, bool(r["admin"]))
            for r in rows
        }

    # ---------------------------------------------------------------- control (flags, session kills)
    def _control(self, sql: str, params: tuple[Any, ...]) -> int:
        return self._transact([(sql, params), _BUMP_CONTROL])[0]

    def control_version(self) -> int:
        return self._version("control_version")

    def set_flag(self, name: str, value: str | None) -> None:
        self._control(
            "INSERT INTO flags (name, value, updated) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
            "SET value = excluded.value, updated = excluded.updated",
            (name, value, time.time()),
        )

    def flags(self) -> dict[str, str]:
        return {r["name"]: r["value"] for r in self.query("SELECT name, value FROM flags WHERE value IS NOT NULL")}

    def kill_sessions(
        self,
        reason: str,
        *,
        session: str | None = None,
        agent: str | None = None,
        over_usd: float | None = None,
        include_implicit: bool = False,
        kill_ttl_s: float | None = None,
        known: SessionRow | None = None,
    ) -> Kills:
        """Mark sessions killed (running gateways refuse them within about a second).

        By id, the session must exist (``SessionNotFound`` otherwise: killing an id in advance
        blocked it forever) and is killed even if implicit; ``known`` is the caller's own row for
        it (a gateway that holds the session), written with the kill when the ledger has none yet.
        In bulk (``agent``, ``over_usd``), implicit sessions are spared unless ``include_implicit``.
        A session whose kill is still in force (``kill_ttl_s`` from its ``killed_at``; None:
        forever) keeps it.
        """
        # the ids as the writer stores them (an id from a shell may hold lone surrogates, or be too long)
        reason, session, agent = clean_text(reason), optional(clean_id, session), optional(clean_id, agent)
        now = time.time()
        if session is not None and not self.query("SELECT 1 FROM sessions WHERE session = ?", (session,)):
            if known is None or clean_id(known.session) != session:
                raise SessionNotFound(f"no session named {session!r}: 'tiergate sessions list' shows the known ones")
            self._control(
                UPSERT_SESSION, session_values(dataclasses.replace(known, killed_reason=reason, killed_at=now))
            )
            return Kills([session], [])
        where, params = self._not_killed(now, kill_ttl_s)
        for column, op, value in (("session", "=", session), ("agent", "=", agent), ("cost_usd", ">", over_usd)):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        rows = self.query(f"SELECT session, implicit FROM sessions WHERE {' AND '.join(where)}", tuple(params))
        spared = [] if session is not None or include_implicit else [r["session"] for r in rows if r["implicit"]]
        if spared:
            where.append("implicit = 0")
        names = [r["session"] for r in rows if r["session"] not in set(spared)]
        if names:
            clause = " AND ".join(where)
            self._control(
                f"UPDATE sessions SET killed_reason = ?, killed_at = ? WHERE {clause}", (reason, now, *params)
            )
        return Kills(names, spared)

    @staticmethod
    def _not_killed(now: float, kill_ttl_s: float | None) -> tuple[list[str], list[Any]]:
        """WHERE terms for sessions without a kill in force."""
        if kill_ttl_s is None:
            return ["killed_reason IS NULL"], []
        return ["(killed_reason IS NULL OR killed_at < ?)"], [now - kill_ttl_s]

    def revive_session(
        self, session: str, *, now: float, kill_ttl_s: float | None = None, held_kill: bool = False
    ) -> bool:
        """Lift a kill in force; the session starts afresh (its earlier requests stay in the usage rows).

        False when the session is not killed; ``SessionNotFound`` when the ledger never saw it.
        ``held_kill``: the caller holds a kill of it that its writer may not have written yet (a
        guardian kill a moment ago); the revive is then recorded whatever the row says, and the
        queued row, older than the revive, changes nothing when it lands. The row's totals restart
        at ``now`` and ``revived_at`` records the revive: every gateway lifts the kills older than
        it at its next poll, and a gateway's late upsert can bring back neither the old totals
        (``last_seen``) nor the kill (see ``UPSERT_SESSION``).
        """
        session = clean_id(session)
        reset = (
            "killed_reason = NULL, killed_at = NULL, revived_at = ?, first_seen = ?, last_seen = ?, requests = 0, "
            "prompt_tokens = 0, completion_tokens = 0, cost_usd = 0, max_context_ratio = 0"
        )
        if held_kill:
            self._control(
                f"INSERT INTO sessions ({', '.join(SESSION_COLUMNS)}) VALUES (?, '', NULL, ?, ?, 0, 0, 0, 0, 0, "
                f"NULL, 0, NULL, ?) ON CONFLICT (session) DO UPDATE SET {reset}",
                (session, now, now, now, now, now, now),
            )
            return True
        killed, params = (
            ("killed_reason IS NOT NULL", ())
            if kill_ttl_s is None
            else ("killed_reason IS NOT NULL AND killed_at >= ?", (now - kill_ttl_s,))
        )
        revived = self._control(
            f"UPDATE sessions SET {reset} WHERE session = ? AND {killed}", (now, now, now, session, *params)
        )
        if not revived and not self.query("SELECT 1 FROM sessions WHERE session = ?", (session,)):
            raise SessionNotFound(f"no session named {session!r}: 'tiergate sessions list' shows the known ones")
        return revived > 0

    def session_kills(self, *, since: float) -> Sequence[Row]:
        """(session, killed_reason, killed_at, revived_at) of the kills and revives made since ``since``."""
        return self.query(
            "SELECT session, killed_reason, killed_at, revived_at FROM sessions "
            "WHERE (killed_reason IS NOT NULL AND killed_at >= ?) OR revived_at >= ?",
            (since, since),
        )

    def prune_sessions(self, *, before: float, killed_before: float | None) -> int:
        """Delete sessions last seen before ``before``, except those killed since ``killed_before``
        (None: any killed one): a kill in force must outlive its row's retention."""
        keep, params = (
            ("killed_reason IS NULL", ())
            if killed_before is None
            else (
                "(killed_reason IS NULL OR killed_at < ?)",
                (killed_before,),
            )
        )
        return self._transact([(f"DELETE FROM sessions WHERE last_seen < ? AND {keep}", (before, *params))])[0]

    def sessions(self, *, since: float | None = None, limit: int | None = None, offset: int = 0) -> Sequence[Row]:
        """Sessions, most recently seen first: those seen since ``since``, ``limit`` of them from ``offset``."""
        sql, params = f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions", []
        if since is not None:
            sql += " WHERE last_seen >= ?"
            params.append(since)
        sql += " ORDER BY last_seen DESC, session"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        return self.query(sql, tuple(params))

    def session(self, name: str) -> Row | None:
        """One session's row (its totals as last flushed), or None."""
        rows = self.query(f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE session = ?", (clean_id(name),))
        return rows[0] if rows else None

    def session_usage(self, *, live_since: float, slack_s: float) -> Sequence[Row]:
        """Per session: the answered requests of its current life, summed from the usage rows.

        A session's current life starts at its row's ``first_seen`` when the row was seen after
        ``live_since`` (a row seen earlier belongs to a life that has expired), else at ``live_since``;
        ``slack_s`` covers a row stamped at arrival, just before the session was admitted. These sums
        are what the ledger holds, flushed session rows or not: what a restart rebuilds totals from.
        """
        first = self.query("SELECT min(first_seen) AS f FROM sessions WHERE last_seen >= ?", (live_since,))
        scan_from = min(live_since, (first[0]["f"] if first and first[0]["f"] is not None else live_since) - slack_s)
        return self.query(
            "SELECT u.sid AS session, min(u.key_name) AS key_name, min(u.agent) AS agent, "
            "sum(CASE WHEN u.kind = 'request' THEN 1 ELSE 0 END) AS requests, "
            "sum(u.prompt_tokens) AS prompt_tokens, sum(u.completion_tokens) AS completion_tokens, "
            "sum(u.cost_usd) AS cost_usd, min(u.ts) AS first_ts, max(u.ts + u.latency_ms / 1000.0) AS last_ts "
            "FROM (SELECT COALESCE(NULLIF(session, ''), key_name || ':' || COALESCE(agent, '-')) AS sid, "
            "key_name, agent, kind, ts, latency_ms, prompt_tokens, completion_tokens, cost_usd FROM usage "
            "WHERE kind IN ('request', 'attempt') AND deployment IS NOT NULL AND ts >= ? "
            "AND (kind = 'request' OR reason = 'gate failed')) u "  # answers that failed a gate: paid too
            "LEFT JOIN sessions s ON s.session = u.sid "
            "WHERE CASE WHEN s.session IS NOT NULL AND s.last_seen >= ? THEN u.ts >= s.first_seen - ? "
            "ELSE u.ts >= ? END "
            "GROUP BY u.sid",
            (scan_from, live_since, slack_s, live_since),
        )

    # ---------------------------------------------------------------- alerts already sent (dedupe across restarts)
    def alerts_sent(self, since: float) -> set[str]:
        """Dedupe keys of the alerts sent since ``since``."""
        return {r["dedupe_key"] for r in self.query("SELECT dedupe_key FROM alerts_sent WHERE sent >= ?", (since,))}

    def prune_alerts_sent(self, before: float) -> int:
        return self._transact([("DELETE FROM alerts_sent WHERE sent < ?", (before,))])[0]

    def killed_sessions(self) -> dict[str, str]:
        return {
            r["session"]: r["killed_reason"]
            for r in self.query("SELECT session, killed_reason FROM sessions WHERE killed_reason IS NOT NULL")
        }
