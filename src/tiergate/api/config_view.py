"""The effective config as GET /admin/config shows it: every value that may be a credential masked.

``SecretStr`` fields (keys, tokens, the ledger URL) already dump as a mask;
plain strings can hold credentials too, so these are masked by where they
sit: header values (provider and webhook headers), passwords and query
values in URLs (a key in ``?key=``), and the path of webhook URLs (many
webhooks carry their token in the path).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tiergate.config.schema import TiergateConfig

MASK = "***"
_URL_SCHEMES = ("http://", "https://", "redis://", "rediss://", "unix://", "postgresql://", "postgres://")


def masked_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` with any password and query value masked (and its path, unless ``keep_path``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not parseable: nothing of it is shown
        return MASK
    user = parts.username or ""
    netloc = f"{user}:{MASK}@" if parts.password is not None else (f"{user}@" if user else "")
    if ":" in host:
        host = f"[{host}]"
    path = parts.path if keep_path or parts.path in ("", "/") else f"/{MASK}"
    query = urlencode([(k, MASK) for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc + host + port, path, query, ""))


def masked_config(config: TiergateConfig) -> dict[str, Any]:
    """The config as JSON, secrets masked; the ledger as log lines show it (a path, or a URL without password)."""
    out: dict[str, Any] = _masked(config.model_dump(mode="json"))
    out["ledger"] = config.ledger_display
    for sink in out.get("alerts") or []:
        if isinstance(sink, dict) and isinstance(sink.get("url"), str) and sink["url"] != "**********":
            sink["url"] = masked_url(sink["url"], keep_path=False)
    return out


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: ({h: MASK for h in v} if k == "headers" and isinstance(v, dict) else _masked(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, str) and value.startswith(_URL_SCHEMES):
        return masked_url(value)
    return value
