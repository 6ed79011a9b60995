"""A PostgreSQL schema of its own for each test on the shared server (127.0.0.1:5432, database ``test``).

Tests run in parallel against one server, so each gets a fresh schema and a
URL whose ``search_path`` points at it; the schema is dropped afterwards.
Unreachable PostgreSQL skips locally and fails under CI=true (``require``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from procs import require

HOST, PORT, DATABASE = "127.0.0.1", 5432, "test"
USERS = ("postgres", "root")  # trust auth; whichever role exists


def _connect_admin():  # type: ignore[no-untyped-def]
    import psycopg

    errors = []
    for user in USERS:
        try:
            return user, psycopg.connect(
                f"postgresql://{user}@{HOST}:{PORT}/{DATABASE}", autocommit=True, connect_timeout=5
            )
        except psycopg.OperationalError as exc:
            errors.append(f"{user}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}")
    require(False, f"PostgreSQL on {HOST}:{PORT}/{DATABASE} is needed ({'; '.join(errors)})")
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class PgSchema:
    name: str
    user: str

    def url(self, *, port: int = PORT, password: str | None = None) -> str:
        """A URL for this schema, optionally through another port (a CuttableProxy) or with a password."""
        auth = f"{self.user}:{password}" if password else self.user
        return f"postgresql://{auth}@{HOST}:{port}/{DATABASE}?options=-csearch_path%3D{self.name}"

    def rows(self, sql: str, params: tuple = ()) -> list[dict]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.url(), autocommit=True, row_factory=dict_row, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()


@pytest.fixture
def pg_schema():
    """A fresh, empty schema; dropped with everything in it after the test."""
    user, conn = _connect_admin()
    schema = PgSchema(f"t_{uuid.uuid4().hex[:12]}", user)
    with conn:
        conn.execute(f"CREATE SCHEMA {schema.name}")
        try:
            yield schema
        finally:
            conn.execute("SET lock_timeout = '20s'")
            conn.execute(f"DROP SCHEMA {schema.name} CASCADE")


@pytest.fixture
def pg_url(pg_schema: PgSchema) -> str:
    """postgresql://USER@127.0.0.1:5432/test?options=-csearch_path%3D<a schema of this test's own>"""
    return pg_schema.url()
