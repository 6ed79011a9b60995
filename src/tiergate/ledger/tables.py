"""Keys, flags and session kills: the same SQL on every backend, written once.

A backend supplies ``query`` (rows indexable by column name) and
``_transact`` (statements in one transaction, returning row counts, raising
``DuplicateName`` on a unique violation); everything here is built on those.
Every change to keys or control state bumps a version in ``meta`` so running
gateways poll one cheap row instead of reloading tables.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any, Protocol

from tiergate.core.errors import DuplicateName
from tiergate.core.sanitize import clean_id, clean_text, optional
from tiergate.ledger.records import KEY_PREFIX, SESSION_COLUMNS, KeyRecord, hash_key


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

    def _version(self, name: str) -> int:
        return int(self.query("SELECT value FROM meta WHERE key = ?", (name,))[0]["value"])

    # ---------------------------------------------------------------- keys
    def create_key(self, name: str, *, agent: str | None = None) -> str:
        """Issue a virtual key; only its hash is stored, the key itself is returned once."""
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        try:
            self._transact(
                [
                    (
                        "INSERT INTO keys (name, key_hash, prefix, agent, created) VALUES (?, ?, ?, ?, ?)",
                        (name, hash_key(key), key[:8], agent, time.time()),
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
        rows = self.query("SELECT name, prefix, agent, created, revoked FROM keys ORDER BY created")
        return [KeyRecord(r["name"], r["prefix"], r["agent"], r["created"], r["revoked"]) for r in rows]

    def keys_version(self) -> int:
        return self._version("keys_version")

    def active_key_hashes(self) -> dict[str, KeyRecord]:
        rows = self.query("SELECT name, key_hash, prefix, agent, created FROM keys WHERE revoked IS NULL")
        return {r["key_hash"]: KeyRecord(r["name"], r["prefix"], r["agent"], r["created"], None) for r in rows}

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
        self, reason: str, *, session: str | None = None, agent: str | None = None, over_usd: float | None = None
    ) -> list[str]:
        """Mark sessions killed (running gateways refuse them within about a second)."""
        # the ids as the writer stores them (an id from a shell may hold lone surrogates, or be too long)
        reason, session, agent = clean_text(reason), optional(clean_id, session), optional(clean_id, agent)
        where, params = ["killed_reason IS NULL"], []
        for column, op, value in (("session", "=", session), ("agent", "=", agent), ("cost_usd", ">", over_usd)):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        clause = " AND ".join(where)
        names = [r["session"] for r in self.query(f"SELECT session FROM sessions WHERE {clause}", tuple(params))]
        if session is not None and not names and not self.query("SELECT 1 FROM sessions WHERE session = ?", (session,)):
            # a session not seen yet can still be killed in advance
            now = time.time()
            self._control(
                f"INSERT INTO sessions ({', '.join(SESSION_COLUMNS)}) "
                "VALUES (?, '', NULL, ?, ?, 0, 0, 0, 0, 0, ?) ON CONFLICT (session) "
                "DO UPDATE SET killed_reason = COALESCE(sessions.killed_reason, excluded.killed_reason)",
                (session, now, now, reason),
            )
            return [session]
        if names:
            self._control(f"UPDATE sessions SET killed_reason = ? WHERE {clause}", (reason, *params))
        return names

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
            "SELECT u.sid AS session, min(u.key_name) AS key_name, min(u.agent) AS agent, count(*) AS requests, "
            "sum(u.prompt_tokens) AS prompt_tokens, sum(u.completion_tokens) AS completion_tokens, "
            "sum(u.cost_usd) AS cost_usd, min(u.ts) AS first_ts, max(u.ts + u.latency_ms / 1000.0) AS last_ts "
            "FROM (SELECT COALESCE(NULLIF(session, ''), key_name || ':' || COALESCE(agent, '-')) AS sid, "
            "key_name, agent, ts, latency_ms, prompt_tokens, completion_tokens, cost_usd FROM usage "
            "WHERE kind = 'request' AND deployment IS NOT NULL AND ts >= ?) u "
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
