"""Delivering a job's result to its sinks: webhook, Slack (webhook or chat.postMessage), Telegram, e-mail, file.

Each sink gets the result in its own shape (``build_request`` is pure, so
the payloads are table-tested): Markdown text for chat sinks, Telegram's
4096-character messages split in order, e-mail as text/plain with an HTML
alternative, one file per run. A failed delivery is retried with backoff
(Retry-After honoured); what is logged or recorded never holds a secret
(tokens, webhook URLs, header values, the SMTP password are redacted).
"""

from __future__ import annotations

import asyncio
import logging
import os
import smtplib
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from pydantic import SecretStr

from tiergate.adapters.base import parse_retry_after
from tiergate.config.alerts import AlertSinkConfig, SlackSinkConfig, TelegramSinkConfig, WebhookSinkConfig
from tiergate.config.jobs import ALERT_SINK_TYPES, EmailSink, FileSink, SinkConfig, SlackSink, TelegramSink, WebhookSink
from tiergate.core.schedule import retry_delay

log = logging.getLogger("tiergate.jobs.delivery")

TELEGRAM_MAX_TEXT = 4096
SLACK_MAX_TEXT = 39_000  # Slack truncates a message's text past 40,000 characters
MAX_RETRY_AFTER_S = 120.0
_ERROR_BODY_CHARS = 300
_MAX_REPLY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Result:
    """What a job run delivers: Markdown for chat sinks and files, HTML for e-mail."""

    job: str
    run_id: str
    slot: float
    slot_local: str
    status: str  # "ok" or "failed"
    subject: str
    markdown: str
    html: str
    deployment: str | None = None
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class HttpCall:
    url: str
    body: bytes
    headers: dict[str, str]
    answer: str  # "status" (2xx is success), "slack-api" or "telegram" (a JSON body with ok: true)


@dataclass(slots=True)
class Delivery:
    sink: str
    ok: bool
    attempts: int
    error: str | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)


def resolve_sinks(sinks: dict[str, SinkConfig], alerts: Sequence[AlertSinkConfig]) -> dict[str, SinkConfig]:
    """Named sinks, plus each alert sink whose type is unique among the alert sinks, under its type name."""
    out: dict[str, SinkConfig] = {}
    for t in ALERT_SINK_TYPES:
        of_type = [a for a in alerts if a.type == t]
        if len(of_type) == 1:
            out[t] = _from_alert_sink(of_type[0])
    out.update(sinks)
    return out


def _from_alert_sink(a: AlertSinkConfig) -> SinkConfig:
    if isinstance(a, WebhookSinkConfig):
        return WebhookSink(
            type="webhook", url=SecretStr(a.url), headers={k: SecretStr(v) for k, v in a.headers.items()}
        )
    if isinstance(a, SlackSinkConfig):
        return SlackSink(type="slack", url=a.url)
    assert isinstance(a, TelegramSinkConfig)
    return TelegramSink(type="telegram", bot_token=a.bot_token, chat_id=a.chat_id, api_base=a.api_base)


def secrets_of(sink: SinkConfig) -> tuple[str, ...]:
    """Every string of this sink that must never reach a log line or a run record."""
    out: list[str] = []
    if isinstance(sink, WebhookSink):
        out += [sink.url.get_secret_value(), *(v.get_secret_value() for v in sink.headers.values())]
        out.append(urlsplit(sink.url.get_secret_value()).path)
    elif isinstance(sink, SlackSink):
        if sink.url is not None:
            out += [sink.url.get_secret_value(), urlsplit(sink.url.get_secret_value()).path]
        if sink.bot_token is not None:
            out.append(sink.bot_token.get_secret_value())
    elif isinstance(sink, TelegramSink):
        out.append(sink.bot_token.get_secret_value())
    elif isinstance(sink, EmailSink) and sink.password is not None:
        out.append(sink.password.get_secret_value())
    return tuple(s for s in out if s and s != "/")


def redact(text: str, secrets: Sequence[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def chunks(text: str, size: int) -> list[str]:
    """``text`` in pieces of at most ``size`` characters, cut at a line end where one is near."""
    out: list[str] = []
    while len(text) > size:
        cut = text.rfind("\n", size // 2, size)
        cut = size if cut <= 0 else cut + 1
        out.append(text[:cut])
        text = text[cut:]
    if text or not out:
        out.append(text)
    return out


def build_requests(sink: SinkConfig, result: Result) -> list[HttpCall]:
    """The HTTP calls an HTTP sink receives for a result, in order (pure)."""
    js = {"Content-Type": "application/json"}
    if isinstance(sink, WebhookSink):
        payload = {
            "job": result.job,
            "run_id": result.run_id,
            "slot": result.slot,
            "slot_local": result.slot_local,
            "status": result.status,
            "subject": result.subject,
            "text": result.markdown,
            "format": "markdown",
            "deployment": result.deployment,
            "cost_usd": result.cost_usd,
        }
        headers = {**js, **{k: v.get_secret_value() for k, v in sink.headers.items()}}
        return [HttpCall(sink.url.get_secret_value(), orjson.dumps(payload), headers, "status")]
    if isinstance(sink, SlackSink):
        text = _cut(f"*{result.subject}*\n{result.markdown}", SLACK_MAX_TEXT)
        if sink.url is not None:
            return [HttpCall(sink.url.get_secret_value(), orjson.dumps({"text": text}), js, "status")]
        assert sink.bot_token is not None and sink.channel is not None
        headers = {"Content-Type": "application/json; charset=utf-8", "Authorization": "Bearer " + _token(sink)}
        body = orjson.dumps({"channel": sink.channel, "text": text})
        return [HttpCall(f"{sink.api_base.rstrip('/')}/chat.postMessage", body, headers, "slack-api")]
    if isinstance(sink, TelegramSink):
        url = f"{sink.api_base}/bot{sink.bot_token.get_secret_value()}/sendMessage"
        parts = chunks(f"{result.subject}\n\n{result.markdown}", TELEGRAM_MAX_TEXT)
        return [HttpCall(url, orjson.dumps({"chat_id": sink.chat_id, "text": p}), js, "telegram") for p in parts]
    raise TypeError(f"{sink.type} is not an HTTP sink")


def _token(sink: SlackSink) -> str:
    assert sink.bot_token is not None
    return sink.bot_token.get_secret_value()


def _cut(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 30] + "\n… (cut: message too long)"


def email_message(sink: EmailSink, result: Result) -> EmailMessage:
    """The e-mail: Markdown as text/plain and the HTML alternative (pure)."""
    msg = EmailMessage()
    subject = f"{sink.subject_prefix} {result.subject}".strip()
    msg["Subject"] = subject.replace("\r", " ").replace("\n", " ")
    msg["From"] = sink.sender
    msg["To"] = ", ".join(sink.to)
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sink.sender.rpartition("@")[2] or None)
    msg.set_content(result.markdown)
    msg.add_alternative(result.html, subtype="html")
    return msg


def file_name(result: Result) -> str:
    import datetime as dt

    stamp = dt.datetime.fromtimestamp(result.slot, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{result.job}-{stamp}-{result.run_id}.md"


class Deliverer:
    """Delivers one result to several sinks at once, each with its own retries."""

    def __init__(
        self,
        sinks: dict[str, SinkConfig],
        session: aiohttp.ClientSession,
        *,
        retries: int,
        timeout_s: float,
        backoff_s: float,
    ) -> None:
        self.sinks = sinks
        self.session = session
        self.retries = retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s

    async def deliver(self, names: Sequence[str], result: Result) -> list[Delivery]:
        return list(await asyncio.gather(*(self._one(n, result) for n in names)))

    async def _one(self, name: str, result: Result) -> Delivery:
        sink = self.sinks[name]
        secrets = secrets_of(sink)
        attempts = self.retries + 1
        error = "not attempted"
        for attempt in range(1, attempts + 1):
            try:
                error_or_none, retry, wait = await self._send(sink, result)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, timed out, TLS, OS errors: all worth another try
                error_or_none, retry, wait = f"{type(exc).__name__}: {exc}".rstrip(": "), True, None
            if error_or_none is None:
                log.info("job %s run %s delivered to %s", result.job, result.run_id, name)
                return Delivery(name, True, attempt)
            error = redact(error_or_none, secrets)
            if not retry or attempt == attempts:
                break
            delay = max(retry_delay(self.backoff_s, attempt), min(wait or 0.0, MAX_RETRY_AFTER_S))
            log.warning(
                "job %s run %s: delivery to %s failed (attempt %d/%d), retrying in %.1fs: %s",
                result.job,
                result.run_id,
                name,
                attempt,
                attempts,
                delay,
                error,
            )
            await asyncio.sleep(delay)
        log.error("job %s run %s: delivery to %s failed after %d attempt(s): %s", result.job, result.run_id, name,
                  attempt, error)  # fmt: skip
        return Delivery(name, False, attempt, error)

    async def _send(self, sink: SinkConfig, result: Result) -> tuple[str | None, bool, float | None]:
        """(None, _, _) when delivered, else (what went wrong, whether to retry, Retry-After seconds)."""
        if isinstance(sink, EmailSink):
            return await asyncio.to_thread(send_email, sink, result, self.timeout_s)
        if isinstance(sink, FileSink):
            await asyncio.to_thread(write_file, sink.path, result)
            return None, False, None
        for call in build_requests(sink, result):
            error, retry, wait = await self._post(call)
            if error is not None:
                return error, retry, wait
        return None, False, None

    async def _post(self, call: HttpCall) -> tuple[str | None, bool, float | None]:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with self.session.post(call.url, data=call.body, headers=call.headers, timeout=timeout) as resp:
            raw = await resp.content.read(_MAX_REPLY_BYTES)
            text = " ".join(raw.decode("utf-8", "replace").split())  # one line: an HTML error page is many
            wait = parse_retry_after({k.lower(): v for k, v in resp.headers.items()})
            body: Any = None
            if call.answer != "status":
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    body = None
            if call.answer == "telegram" and isinstance(body, dict):
                params = body.get("parameters")
                if isinstance(params, dict) and isinstance(params.get("retry_after"), int | float):
                    wait = float(params["retry_after"])
            retryable = resp.status >= 500 or resp.status in (408, 429)
            if not 200 <= resp.status < 300:
                return f"HTTP {resp.status}: {text[:_ERROR_BODY_CHARS]}", retryable, wait
            if call.answer != "status" and not (isinstance(body, dict) and body.get("ok") is True):
                return f"answered without ok: {text[:_ERROR_BODY_CHARS]}", False, wait
            return None, False, None


def send_email(sink: EmailSink, result: Result, timeout_s: float) -> tuple[str | None, bool, float | None]:
    """One SMTP session (blocking; run in a thread). A 4xx reply is retried, a 5xx is not."""
    msg = email_message(sink, result)
    context = ssl.create_default_context()
    try:
        smtp: smtplib.SMTP = (
            smtplib.SMTP_SSL(sink.host, sink.port, timeout=timeout_s, context=context)
            if sink.tls == "ssl"
            else smtplib.SMTP(sink.host, sink.port, timeout=timeout_s)
        )
        with smtp:
            if sink.tls == "starttls":
                smtp.starttls(context=context)
            if sink.username:
                smtp.login(sink.username, sink.password.get_secret_value() if sink.password else "")
            refused = smtp.send_message(msg)
    except smtplib.SMTPRecipientsRefused as exc:
        return f"every recipient refused: {', '.join(exc.recipients)}", False, None
    except smtplib.SMTPResponseException as exc:
        reply = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"SMTP {exc.smtp_code}: {reply[:_ERROR_BODY_CHARS]}", 400 <= exc.smtp_code < 500, None
    if refused:
        return f"refused recipients: {', '.join(refused)}", False, None
    return None, False, None


def write_file(directory: Path, result: Result) -> Path:
    """The result as one Markdown file in ``directory``, written whole or not at all."""
    directory = directory.expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / file_name(result)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".md")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"# {result.subject}\n\n{result.markdown}\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
