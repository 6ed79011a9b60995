"""The ``Ledger`` interface every caller codes against, and ``open_ledger`` to pick the backend.

SQLite is the default (one file in the user's data directory); PostgreSQL
(``postgresql://``) when several replicas share one ledger. Both keep the
same contract: ``record`` only queues, one writer thread writes batches,
``close`` loses nothing, reads raise ``LedgerUnavailable`` (503) rather than
hang when the database cannot be reached, and no record can stop the writer
(a refused one is quarantined with its reason; ``health()["writer"]`` says
whether the writer is failing or behind).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tiergate.ledger.records import KeyRecord, Kills, Record, SessionRow
from tiergate.ledger.tables import Row

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class Ledger(Protocol):
    applied_migrations: list[str]  # what opening this ledger applied (``tiergate migrate`` prints it)

    def start(self) -> None: ...

    def close(self) -> None: ...

    def record(self, rec: Record) -> None: ...

    def pending(self) -> int: ...

    def health(self) -> dict[str, Any]: ...

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> Sequence[Row]: ...

    def transact(self, steps: Sequence[tuple[str, tuple[Any, ...]]]) -> list[int]: ...

    def create_key(self, name: str, *, agent: str | None = None, admin: bool = False) -> str: ...

    def revoke_key(self, name: str) -> bool: ...

    def list_keys(self) -> list[KeyRecord]: ...

    def keys_version(self) -> int: ...

    def active_key_hashes(self) -> dict[str, KeyRecord]: ...

    def control_version(self) -> int: ...

    def set_flag(self, name: str, value: str | None) -> None: ...

    def flags(self) -> dict[str, str]: ...

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
    ) -> Kills: ...

    def revive_session(
        self, session: str, *, now: float, kill_ttl_s: float | None = None, held_kill: bool = False
    ) -> bool: ...

    def session_kills(self, *, since: float) -> Sequence[Row]: ...

    def prune_sessions(self, *, before: float, killed_before: float | None) -> int: ...

    def sessions(self, *, since: float | None = None, limit: int | None = None, offset: int = 0) -> Sequence[Row]: ...

    def session(self, name: str) -> Row | None: ...

    def session_usage(self, *, live_since: float, slack_s: float) -> Sequence[Row]: ...

    def killed_sessions(self) -> dict[str, str]: ...

    def alerts_sent(self, since: float) -> set[str]: ...

    def prune_alerts_sent(self, before: float) -> int: ...

    def store_response(
        self, response_id: str, *, key_name: str, response: str, input_items: str, keep_s: float
    ) -> None: ...

    def stored_response(self, response_id: str, *, key_name: str) -> Row | None: ...

    def delete_response(self, response_id: str, *, key_name: str) -> bool: ...

    def prune_responses(self, *, before: float) -> int: ...


def open_ledger(url_or_path: str | Path | None = None, *, spool: Path | None = None, timeout_s: int = 5) -> Ledger:
    """SQLite for ``sqlite:///PATH``, a plain path or nothing (the default file); PostgreSQL for ``postgresql://``.

    ``spool`` is where the PostgreSQL ledger keeps records while the database is unreachable;
    ``timeout_s`` its connect and read deadline (config ``ledger_timeout_s``).
    """
    target = str(url_or_path) if url_or_path is not None else None
    if target is not None and target.startswith(POSTGRES_SCHEMES):
        from tiergate.config.schema import default_data_dir
        from tiergate.ledger.postgres import PostgresLedger

        return PostgresLedger(target, spool_dir=spool or default_data_dir() / "spool", connect_timeout_s=timeout_s)
    from tiergate.ledger.sqlite import SqliteLedger

    if target is None:
        from tiergate.config.schema import default_data_dir

        return SqliteLedger(default_data_dir() / "ledger.db")
    return SqliteLedger(Path(target.removeprefix("sqlite:///")).expanduser())
