"""Alert delivery against local stand-ins for a generic webhook, Slack and the Telegram Bot API."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from tiergate.guardrails.alerts import (
    Alert,
    AlertDispatcher,
    AlertSinkConfig,
    SlackSinkConfig,
    TelegramSinkConfig,
    WebhookSinkConfig,
)

TOKEN = "123456:AAF-super-secret-token"
SLACK_PATH = "/services/T000/B000/slacksecretpath"
SINKS = TypeAdapter(list[AlertSinkConfig])


@dataclass
class Recorder:
    """One local HTTP server; answers with ``statuses`` in turn (then 200) after an optional delay."""

    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    telegram_ok: bool = True
    received: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append({"path": request.path, "headers": dict(request.headers), "json": body})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status = self.statuses.pop(0) if self.statuses else 200
        if request.path.startswith("/bot"):
            if status != 200:
                return web.json_response({"ok": False, "error_code": status, "description": "nope"}, status=status)
            result = {"message_id": len(self.received), "chat": {"id": body.get("chat_id")}, "text": body.get("text")}
            return web.json_response({"ok": self.telegram_ok, "result": result})
        if request.path.startswith("/services/"):
            return web.Response(text="ok" if status == 200 else "server_error", status=status)
        return web.json_response({"received": True}, status=status)

    def paths(self) -> list[str]:
        return [r["path"] for r in self.received]


async def serving(rec: Recorder, test: Callable[[], Awaitable[None]]) -> None:
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None)  # the server's own access log would print the token path
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.base_url = f"http://127.0.0.1:{port}"
    try:
        await test()
    finally:
        await runner.cleanup()


def all_sinks(base: str) -> list[Any]:
    return SINKS.validate_python(
        [
            {"type": "webhook", "url": f"{base}/hook", "headers": {"X-Auth": "hook-header-secret"}},
            {"type": "slack", "url": f"{base}{SLACK_PATH}"},
            {"type": "telegram", "bot_token": TOKEN, "chat_id": "12345", "api_base": base},
        ]
    )


def alert(key: str = "budget:global:day:2026-11-22:0.8", **kw: Any) -> Alert:
    kw.setdefault("event", "budget_threshold")
    kw.setdefault("message", "budget global reached 80% of $50")
    return Alert(dedupe_key=key, **kw)


def run(rec: Recorder, body: Callable[[Recorder], Awaitable[None]]) -> None:
    asyncio.run(serving(rec, lambda: body(rec)))


def test_payload_shapes_for_each_sink():
    rec = Recorder()

    async def body(rec: Recorder) -> None:
        d = AlertDispatcher(all_sinks(rec.base_url), clock=lambda: 1_795_000_000.5)
        assert d.emit(alert(severity="critical", details={"budget": "global", "threshold": 0.8, "spent": 40.0}))
        assert await d.drain() is True
        await d.close()
        by_path = {r["path"]: r for r in rec.received}
        assert set(by_path) == {"/hook", SLACK_PATH, f"/bot{TOKEN}/sendMessage"}
        hook = by_path["/hook"]
        assert hook["json"] == {
            "event": "budget_threshold",
            "message": "budget global reached 80% of $50",
            "severity": "critical",
            "ts": 1_795_000_000.5,
            "details": {"budget": "global", "threshold": 0.8, "spent": 40.0},
        }
        assert hook["headers"]["X-Auth"] == "hook-header-secret"
        assert hook["headers"]["Content-Type"] == "application/json"
        assert by_path[SLACK_PATH]["json"] == {"text": "[tiergate critical] budget global reached 80% of $50"}
        assert by_path[f"/bot{TOKEN}/sendMessage"]["json"] == {
            "chat_id": "12345",
            "text": "[tiergate critical] budget global reached 80% of $50",
        }
        key = "budget:global:day:2026-11-22:0.8"
        assert sorted(d.sent) == [("slack", key), ("telegram", key), ("webhook", key)]
        assert d.failed == []

    run(rec, body)


def test_exactly_once_per_dedupe_key(caplog):
    caplog.set_level(logging.DEBUG, logger="tiergate.guardrails.alerts")
    rec = Recorder()

    async def body(rec: Recorder) -> None:
        d = AlertDispatcher(all_sinks(rec.base_url)[:1])
        assert d.emit(alert("k1")) is True
        assert d.emit(alert("k1", message="same key, other words")) is False
        assert d.emit(alert("k2")) is True
        await d.drain()
        assert d.emit(alert("k1")) is False  # also after delivery
        await d.drain()
        await d.close()
        assert len(rec.received) == 2
        assert sorted(d.sent) == [("webhook", "k1"), ("webhook", "k2")]

    run(rec, body)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("budget_threshold" in r.getMessage() for r in warnings)


def test_shared_seen_set_dedupes_across_dispatchers():
    rec = Recorder()

    async def body(rec: Recorder) -> None:
        seen: set[str] = {"restored-from-disk"}
        a = AlertDispatcher(all_sinks(rec.base_url)[:1], seen=seen)
        b = AlertDispatcher(all_sinks(rec.base_url)[:1], seen=seen)
        assert a.emit(alert("restored-from-disk")) is False
        assert a.emit(alert("x")) is True
        assert b.emit(alert("x")) is False
        await a.drain()
        await b.drain()
        await a.close()
        await b.close()
        assert seen == {"restored-from-disk", "x"} and len(rec.received) == 1

    run(rec, body)


def test_retry_after_500_then_success(caplog):
    caplog.set_level(logging.DEBUG, logger="tiergate.guardrails.alerts")
    rec = Recorder(statuses=[500, 503])

    async def body(rec: Recorder) -> None:
        d = AlertDispatcher(all_sinks(rec.base_url)[2:], retries=2, backoff_s=0.01)
        d.emit(alert("k"))
        await d.drain()
        await d.close()
        assert len(rec.received) == 3 and d.sent == [("telegram", "k")] and d.failed == []

    run(rec, body)
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2 and "HTTP 500" in retries[0] and "attempt 1/3" in retries[0]
    assert "telegram 127.0.0.1" in retries[0]


def test_gives_up_after_retries_and_does_not_retry_client_errors(caplog):
    caplog.set_level(logging.DEBUG, logger="tiergate.guardrails.alerts")
    rec = Recorder(statuses=[500, 500, 500, 500, 401])

    async def body(rec: Recorder) -> None:
        d = AlertDispatcher(all_sinks(rec.base_url)[2:], retries=2, backoff_s=0.01)
        d.emit(alert("gives-up"))
        await d.drain()
        assert len(rec.received) == 3 and d.failed == [("telegram", "gives-up")]
        rec.statuses[:] = [401]
        d.emit(alert("unauthorized"))
        await d.drain()
        await d.close()
        assert len(rec.received) == 4 and d.sent == []
        assert d.failed == [("telegram", "gives-up"), ("telegram", "unauthorized")]

    run(rec, body)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("gives-up" in e and "after 3 attempt(s)" in e for e in errors)
    assert any("unauthorized" in e and "after 1 attempt(s)" in e and "HTTP 401" in e for e in errors)


def test_telegram_200_without_ok_is_a_failure():
    rec = Recorder(telegram_ok=False)

    async def body(rec: Recorder) -> None:
        d = AlertDispatcher(all_sinks(rec.base_url)[2:], retries=3, backoff_s=0.01)
        d.emit(alert("k"))
        await d.drain()
        await d.close()
        assert len(rec.received) == 1 and d.sent == [] and d.failed == [("telegram", "k")]

    run(rec, body)


def test_no_secret_in_logs_or_reprs(caplog):
    caplog.set_level(logging.DEBUG)
    rec = Recorder(statuses=[500] * 9)

    async def body(rec: Recorder) -> None:
        sinks = all_sinks(rec.base_url)
        # a dead Telegram endpoint too: the connection error text must not carry the token either
        dead = TelegramSinkConfig(type="telegram", bot_token=TOKEN, chat_id="1", api_base="http://127.0.0.1:9")
        d = AlertDispatcher([*sinks, dead], retries=2, backoff_s=0.01, timeout_s=2)
        d.emit(alert("k", details={"note": "details are not secrets"}))
        await d.drain()
        await d.close()
        assert d.sent == [] and len(d.failed) == 4
        for cfg in [*sinks, dead]:
            assert TOKEN not in repr(cfg) and TOKEN not in str(cfg)
            assert SLACK_PATH not in repr(cfg)

    run(rec, body)
    text = caplog.text
    assert "after 3 attempt(s)" in text and "telegram 127.0.0.1:9" in text
    for secret in (TOKEN, SLACK_PATH, "slacksecretpath", "hook-header-secret", "/hook"):
        assert secret not in text


def test_emit_returns_at_once_and_slow_sinks_time_out(caplog):
    caplog.set_level(logging.DEBUG, logger="tiergate.guardrails.alerts")
    rec = Recorder(delay_s=0.6)

    async def body(rec: Recorder) -> None:
        d = AlertDispatcher(all_sinks(rec.base_url), retries=1, backoff_s=0.01, timeout_s=0.2)
        t = time.perf_counter()
        assert d.emit(alert("slow"))
        assert time.perf_counter() - t < 0.05
        assert await d.drain(timeout_s=0.05) is False  # still in flight
        assert await d.drain(timeout_s=5) is True
        await d.close()
        assert d.sent == [] and len(d.failed) == 3 and len(rec.received) == 6

    run(rec, body)
    assert "TimeoutError" in caplog.text


def test_close_cancels_in_flight_and_leaves_an_injected_session_open():
    rec = Recorder(delay_s=1.0)

    async def body(rec: Recorder) -> None:
        async with aiohttp.ClientSession() as session:
            d = AlertDispatcher(all_sinks(rec.base_url)[:1], session)
            d.emit(alert("k"))
            await asyncio.sleep(0.1)
            t = time.perf_counter()
            await d.close()
            assert time.perf_counter() - t < 0.5
            assert not session.closed and d.sent == []
            assert d.emit(alert("after-close")) is True  # logged, not delivered, never raises
            assert await d.drain(0.1) is True

    run(rec, body)


def test_emit_without_a_running_loop_or_sinks_only_logs(caplog):
    caplog.set_level(logging.DEBUG, logger="tiergate.guardrails.alerts")
    d = AlertDispatcher(all_sinks("http://127.0.0.1:9"))
    assert d.emit(alert("no-loop")) is True
    assert "no running event loop" in caplog.text
    quiet = AlertDispatcher([])
    assert quiet.emit(alert("nowhere")) is True and quiet.emit(alert("nowhere")) is False


@pytest.mark.parametrize(
    "raw,problem",
    [
        ({"type": "pager", "url": "http://x"}, "does not match any of the expected tags"),
        ({"type": "webhook", "url": "http://x", "method": "PUT"}, "Extra inputs are not permitted"),
        ({"type": "webhook", "url": "ftp://x/hook"}, "http:// or https:// URL"),
        ({"type": "slack", "url": "hooks.slack.com/services/T/B/sekrit"}, "http:// or https:// URL"),
        ({"type": "telegram", "bot_token": "", "chat_id": "1"}, "bot_token must not be empty"),
        ({"type": "telegram", "bot_token": "t", "chat_id": ""}, "chat_id must not be empty"),
        ({"type": "telegram", "chat_id": "1"}, "Field required"),
    ],
)
def test_sink_config_errors(raw, problem):
    with pytest.raises(ValidationError) as info:
        SINKS.validate_python([raw])
    messages = " | ".join(e["msg"] for e in info.value.errors())
    assert problem in messages and "sekrit" not in messages


def test_sink_config_shapes():
    webhook, slack, telegram, group = SINKS.validate_python(
        [
            {"type": "webhook", "url": "http://127.0.0.1:9000/hook"},
            {"type": "slack", "url": "https://hooks.slack.com/services/T/B/X"},
            {"type": "telegram", "bot_token": "t", "chat_id": "12345"},
            {"type": "telegram", "bot_token": "t", "chat_id": -1001234, "api_base": "https://tg.example/"},
        ]
    )
    assert isinstance(webhook, WebhookSinkConfig) and webhook.headers == {}
    assert isinstance(slack, SlackSinkConfig) and slack.url.get_secret_value().endswith("/X")
    assert isinstance(telegram, TelegramSinkConfig) and telegram.api_base == "https://api.telegram.org"
    assert group.chat_id == "-1001234" and group.api_base == "https://tg.example"
    with pytest.raises(ValidationError):
        webhook.url = "http://elsewhere"  # frozen
