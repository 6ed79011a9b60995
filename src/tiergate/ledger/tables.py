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

    def sessions(self) -> Sequence[Row]:
        return self.query(f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions ORDER BY last_seen DESC")

    def killed_sessions(self) -> dict[str, str]:
        return {
            r["session"]: r["killed_reason"]
            for r in self.query("SELECT session, killed_reason FROM sessions WHERE killed_reason IS NOT NULL")
        }
