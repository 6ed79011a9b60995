"""Alert delivery to webhooks, Slack and Telegram, off the request path.

``emit`` is synchronous and returns at once: it dedupes (each key is
delivered once per dispatcher, or per shared ``seen`` set: ``LedgerSeen``
keeps the keys in the ledger, so a restart or the CLI does not send an
alert the gateway already sent), writes one log line, and schedules one
background task per sink. Delivery failures are
retried with backoff and then logged; they never reach the request that
raised the alert. Secrets (the Telegram token, the Slack webhook URL,
webhook URLs and header values) are redacted from every log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, MutableSet, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from tiergate.background import stop
from tiergate.config.alerts import (
    AlertSinkConfig,
    SlackSinkConfig,
    TelegramSinkConfig,
    WebhookSinkConfig,
)
from tiergate.ledger.records import AlertSent

if TYPE_CHECKING:
    from tiergate.ledger.base import Ledger

TELEGRAM_MAX_TEXT = 4096
_ERROR_BODY_CHARS = 200


@dataclass(frozen=True, slots=True)
class Alert:
    event: str  # one of ALERT_EVENTS
    message: str
    dedupe_key: str  # e.g. "budget:global:day:2026-11-22:0.8"; delivered once per key
    severity: str = "warning"
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Request:
    url: str
    body: bytes
    headers: Mapping[str, str]
    label: str  # sink type and host: safe to log
    secrets: tuple[str, ...]  # strings to redact from anything logged


HISTORY_SIZE = 200  # alerts kept in memory for the dashboard's Alerts page, newest last


@dataclass(slots=True)
class AlertEntry:
    """An alert as the dashboard shows it: when, what, and per sink what became of its delivery.

    ``deliveries`` maps a sink's label (type and host, never a secret) to "sending", "sent" or
    "failed: why" (redacted); empty when no sink is configured (the alert was logged only).
    """

    ts: float
    event: str
    severity: str
    message: str
    deliveries: dict[str, str] = field(default_factory=dict)


KEEP_SENT_S = 40 * 86400  # longer than the longest budget window (a month): a key is never needed after
MAX_SENT_KEYS = 100_000  # held in memory; the oldest beyond it are forgotten (their windows are long gone)


class LedgerSeen(MutableSet[str]):
    """Dedupe keys of alerts already sent, kept in the ledger (``alerts_sent``) so they survive a restart.

    Read once at start; each new key is queued to the ledger's writer like any record (never a
    database round trip on the request path), so a crash forgets at most the keys of the ledger's
    loss window. The dispatcher of every gateway and of the CLI on one ledger share what was sent.
    """

    def __init__(self, ledger: Ledger, *, clock: Callable[[], float] = time.time) -> None:
        self._ledger = ledger
        self._clock = clock
        self._keys: dict[str, None] = {}  # insertion-ordered: the oldest are dropped first past MAX_SENT_KEYS

    def load(self) -> int:
        """The keys sent within KEEP_SENT_S (older ones are pruned from the ledger); returns how many."""
        now = self._clock()
        self._ledger.prune_alerts_sent(now - KEEP_SENT_S)
        for key in self._ledger.alerts_sent(now - KEEP_SENT_S):
            self._keys[key] = None
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: str) -> None:
        if key in self._keys:
            return
        self._keys[key] = None
        if len(self._keys) > MAX_SENT_KEYS:
            del self._keys[next(iter(self._keys))]
        self._ledger.record(AlertSent(key, self._clock()))

    def discard(self, key: str) -> None:
        self._keys.pop(key, None)


def emergency_alert(reason: str | None, *, source: str, now: float | None = None) -> Alert:
    """The alert for emergency mode switched by hand: the same from the admin route and the CLI.

    Every switch is an operator's act, so each one is sent (its key carries the time).
    """
    ts = time.time() if now is None else now
    on = reason is not None
    return Alert(
        event="emergency_on" if on else "emergency_off",
        message=f"tiergate emergency local-only mode {'ON: ' + reason if reason is not None else 'OFF'}",
        dedupe_key=f"emergency-manual:{'on' if on else 'off'}:{ts:.6f}",
        severity="critical" if on else "info",
        details={"source": source, "reason": reason},
    )


def _text(alert: Alert) -> str:
    return f"[tiergate {alert.severity}] {alert.message}"


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "?"


def _json(payload: object) -> bytes:
    return orjson.dumps(payload, default=str, option=orjson.OPT_NON_STR_KEYS)


def build_request(sink: WebhookSinkConfig | SlackSinkConfig | TelegramSinkConfig, alert: Alert, ts: float) -> _Request:
    """The HTTP request a sink receives for an alert (pure, so payload shapes are testable)."""
    json_headers = {"Content-Type": "application/json"}
    if isinstance(sink, WebhookSinkConfig):
        payload = {
            "event": alert.event,
            "message": alert.message,
            "severity": alert.severity,
            "ts": ts,
            "details": dict(alert.details),
        }
        return _Request(
            sink.url,
            _json(payload),
            {**json_headers, **sink.headers},
            f"webhook {_host(sink.url)}",
            (sink.url, *sink.headers.values()),
        )
    if isinstance(sink, SlackSinkConfig):
        url = sink.url.get_secret_value()
        return _Request(url, _json({"text": _text(alert)}), json_headers, f"slack {_host(url)}", (url,))
    token = sink.bot_token.get_secret_value()
    url = f"{sink.api_base}/bot{token}/sendMessage"
    text = _text(alert)
    if len(text) > TELEGRAM_MAX_TEXT:
        text = text[: TELEGRAM_MAX_TEXT - 1] + "…"
    return _Request(
        url,
        _json({"chat_id": sink.chat_id, "text": text}),
        json_headers,
        f"telegram {_host(sink.api_base)}",
        (url, token),
    )


def _redact(text: str, secrets: Sequence[str]) -> str:
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


class AlertDispatcher:
    """Dedupes alerts and delivers each to every sink in the background; see the module docstring."""

    def __init__(
        self,
        sinks: Sequence[AlertSinkConfig],
        session: aiohttp.ClientSession | None = None,
        *,
        logger: logging.Logger | None = None,
        retries: int = 2,
        timeout_s: float = 5,
        backoff_s: float = 0.5,
        seen: MutableSet[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sinks = tuple(sinks)
        self.log = logger or logging.getLogger("tiergate.guardrails.alerts")
        self.retries = max(0, retries)
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.seen: MutableSet[str] = set() if seen is None else seen
        self.clock = clock
        self.sent: list[tuple[str, str]] = []
        self.failed: list[tuple[str, str]] = []
        self.history: deque[AlertEntry] = deque(maxlen=HISTORY_SIZE)
        self._session = session
        self._owns_session = session is None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def emit(self, alert: Alert) -> bool:
        """Log and schedule delivery; False (and nothing sent) when the dedupe key was already emitted."""
        try:
            if alert.dedupe_key in self.seen:
                self.log.debug("alert %s already emitted; not sent again", alert.dedupe_key)
                return False
            self.seen.add(alert.dedupe_key)
            self.log.warning("alert %s [%s]: %s (key %s)", alert.event, alert.severity, alert.message, alert.dedupe_key)
            entry = AlertEntry(self.clock(), alert.event, alert.severity, alert.message)
            self.history.append(entry)
            self._schedule(alert, entry)
        except Exception as exc:  # an alert must never fail the request that raised it
            self.log.error("alert %s could not be scheduled: %s", alert.dedupe_key, type(exc).__name__)
        return True

    def _schedule(self, alert: Alert, entry: AlertEntry | None = None) -> None:
        if not self.sinks:
            return
        if self._closed:
            self.log.warning("alert %s not delivered: dispatcher closed", alert.dedupe_key)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.log.warning("alert %s not delivered: no running event loop", alert.dedupe_key)
            return
        ts = self.clock()
        for sink in self.sinks:
            task = loop.create_task(self._deliver(sink, alert, ts, entry), name=f"alert:{sink.type}:{alert.dedupe_key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self,
        sink: WebhookSinkConfig | SlackSinkConfig | TelegramSinkConfig,
        alert: Alert,
        ts: float,
        entry: AlertEntry | None = None,
    ) -> None:
        entry = entry or AlertEntry(ts, alert.event, alert.severity, alert.message)
        try:
            req = build_request(sink, alert, ts)
        except Exception as exc:  # e.g. details orjson cannot encode; the message says which alert
            self.failed.append((sink.type, alert.dedupe_key))
            entry.deliveries[sink.type] = f"failed: payload ({type(exc).__name__})"
            self.log.error(
                "alert %s to %s not sent: payload failed (%s)", alert.dedupe_key, sink.type, type(exc).__name__
            )
            return
        attempts = self.retries + 1
        entry.deliveries[req.label] = "sending"
        for attempt in range(1, attempts + 1):
            try:
                error, retry = await self._post(req, telegram=sink.type == "telegram")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, timed out, bad answer: all retried then logged
                error, retry = f"{type(exc).__name__}: {exc}".rstrip(": "), True
            if error is None:
                self.sent.append((sink.type, alert.dedupe_key))
                entry.deliveries[req.label] = "sent"
                return
            error = _redact(error, req.secrets)
            if not retry or attempt == attempts:
                self.failed.append((sink.type, alert.dedupe_key))
                entry.deliveries[req.label] = f"failed: {error[:_ERROR_BODY_CHARS]}"
                self.log.error(
                    "alert %s to %s failed after %d attempt(s): %s", alert.dedupe_key, req.label, attempt, error
                )
                return
            delay = self.backoff_s * 2 ** (attempt - 1)
            self.log.warning(
                "alert %s to %s failed (attempt %d/%d), retrying in %.2fs: %s",
                alert.dedupe_key,
                req.label,
                attempt,
                attempts,
                delay,
                error,
            )
            await asyncio.sleep(delay)

    async def _post(self, req: _Request, *, telegram: bool) -> tuple[str | None, bool]:
        """(None, _) on success, else (what went wrong, whether a retry may help)."""
        if self._session is None or (self._owns_session and self._session.closed):
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with self._session.post(req.url, data=req.body, headers=dict(req.headers), timeout=timeout) as resp:
            body = await resp.text(errors="replace")
            if not 200 <= resp.status < 300:
                return f"HTTP {resp.status}: {body[:_ERROR_BODY_CHARS]}", _retryable(resp.status)
            if telegram:
                try:
                    ok = orjson.loads(body).get("ok") is True
                except (orjson.JSONDecodeError, AttributeError):
                    ok = False
                if not ok:
                    return f"Telegram answered without ok: {body[:_ERROR_BODY_CHARS]}", False
            return None, False

    async def drain(self, timeout_s: float = 5) -> bool:
        """Wait for in-flight deliveries; True when none is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return True

    async def close(self) -> None:
        """Cancel what is still in flight (call drain first to let it finish) and close our own session."""
        self._closed = True
        await asyncio.gather(*(stop(task) for task in list(self._tasks)))
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
