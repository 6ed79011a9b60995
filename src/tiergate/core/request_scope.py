"""The id of the request being served, for whatever runs on its behalf (log lines, upstream headers).

A ``ContextVar``: set by the edge when a request arrives (api/edge.py), read by
the JSON log formatter (observability/logs.py) and by the upstream client, which
sends it as X-Request-ID (adapters/upstream_http.py). Tasks started during a
request inherit it; other threads (the ledger writer) do not.
"""

from __future__ import annotations

from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("tiergate_request_id", default=None)
