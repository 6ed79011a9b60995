"""Log lines as text (the default) or as one JSON object per line, with the request id in a request.

``observability.log_format: json`` or ``tiergate serve --log-format json``:
each line has time (UTC, ISO 8601), level, logger, message, request_id while
a request is served (core/request_scope.py), and exception with the traceback
when there is one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

from tiergate.core.request_scope import REQUEST_ID

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            line["request_id"] = rid
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str, log_format: str) -> None:
    """The root logger's one handler (stderr) in ``log_format``: text or json; replaces any earlier setup."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
