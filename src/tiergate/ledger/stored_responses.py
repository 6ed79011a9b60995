"""Stored Responses API responses: the same SQL on every backend, on ``query`` and ``_transact``.

A row holds one response object and the whole input it answered (both JSON
text, written by ``api/``; the ledger does not read them). Every read and
delete names the key: another key's response does not exist for it. An
expired row reads as absent until ``prune_responses`` removes it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from tiergate.ledger.tables import Row, Step


class StoredResponses:
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> Sequence[Row]:
        raise NotImplementedError

    def _transact(self, steps: Sequence[Step]) -> list[int]:
        raise NotImplementedError

    def store_response(
        self, response_id: str, *, key_name: str, response: str, input_items: str, keep_s: float
    ) -> None:
        now = time.time()
        self._transact(
            [
                (
                    "INSERT INTO stored_responses (id, key_name, created, expires, response, input_items)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (response_id, key_name, now, now + keep_s, response, input_items),
                )
            ]
        )

    def stored_response(self, response_id: str, *, key_name: str) -> Row | None:
        """(response, input_items) JSON text of a live response of this key, or None."""
        rows = self.query(
            "SELECT response, input_items FROM stored_responses WHERE id = ? AND key_name = ? AND expires > ?",
            (response_id, key_name, time.time()),
        )
        return rows[0] if rows else None

    def delete_response(self, response_id: str, *, key_name: str) -> bool:
        sql = "DELETE FROM stored_responses WHERE id = ? AND key_name = ? AND expires > ?"
        return self._transact([(sql, (response_id, key_name, time.time()))])[0] > 0

    def prune_responses(self, *, before: float) -> int:
        return self._transact([("DELETE FROM stored_responses WHERE expires < ?", (before,))])[0]
