"""Local stand-ins for where job results go: the Telegram Bot API, Slack (incoming webhooks and
chat.postMessage), a generic webhook receiver, a JSON input server, and a real SMTP server (aiosmtpd).

Each checks what the real service checks and answers in its shape (from the vendors' API docs):

- Telegram ``POST /bot<token>/sendMessage``: the token must be the bot's (else 401
  ``{"ok": false, "error_code": 401, "description": "Unauthorized"}``), ``chat_id`` must be given
  (400 "Bad Request: chat not found" for an unknown one), ``text`` 1..4096 characters
  (400 "Bad Request: message text is empty" / "message is too long"); success is
  ``{"ok": true, "result": {message_id, chat, date, text}}``; 429 carries ``parameters.retry_after``.
- Slack incoming webhook ``POST /services/T/B/X``: JSON with ``text`` (400 ``no_text``,
  ``invalid_payload`` for a body that is not JSON), an unknown path 404 ``no_service``; success 200 ``ok``.
- Slack ``POST /api/chat.postMessage``: ``Authorization: Bearer xoxb-…`` (HTTP 200 with
  ``{"ok": false, "error": "not_authed" | "invalid_auth"}``), ``channel`` (``channel_not_found``),
  ``text`` (``no_text``); success ``{"ok": true, "channel", "ts", "message"}``; 429 with Retry-After.
- SMTP: aiosmtpd speaks the protocol for real (EHLO, AUTH LOGIN/PLAIN, MAIL FROM, RCPT TO, DATA);
  the handler keeps each message and can refuse with 451 (try later) a number of times.

``fail(path_prefix, status, times)`` makes the next ``times`` requests under a prefix fail.
The servers run on their own event loop in a thread, so a test can drive a gateway process meanwhile.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

TELEGRAM_TOKEN = "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"  # the shape of a real bot token (the docs')
TELEGRAM_CHAT = "-1001234567890"
SLACK_HOOK = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"  # Slack's documented example
SLACK_BOT_TOKEN = "xoxb-111-222-slacksecret"
SLACK_CHANNEL = "C0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class ChatStandins:
    inputs: dict[str, Any] = field(default_factory=dict)  # path -> JSON served by GET
    seen: list[Seen] = field(default_factory=list)
    faults: list[tuple[str, int, int]] = field(default_factory=list)  # (path prefix, status, times left)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, prefix: str, status: int, times: int = 1) -> None:
        self.faults.append((prefix, status, times))

    def at(self, prefix: str, *, ok_only: bool = False) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(prefix) and (not ok_only or s.status == 200)]

    def _fault(self, path: str) -> int | None:
        for i, (prefix, status, times) in enumerate(self.faults):
            if path.startswith(prefix):
                if times <= 1:
                    del self.faults[i]
                else:
                    self.faults[i] = (prefix, status, times - 1)
                return status
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path
        if request.method == "GET" and path in self.inputs:
            return web.json_response(self.inputs[path])
        resp = self._answer(path, dict(request.headers), body)
        self.seen.append(Seen(path, dict(request.headers), body, resp.status))
        return resp

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> web.Response:
        forced = self._fault(path)
        if path.startswith("/bot"):
            return self._telegram(path, body, forced)
        if path.startswith("/services/"):
            return self._slack_hook(path, body, forced)
        if path == "/api/chat.postMessage":
            return self._slack_api(headers, body, forced)
        if forced:
            return web.json_response({"error": "forced"}, status=forced)
        return web.json_response({"received": True})

    @staticmethod
    def _parse(body: bytes) -> Any:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return None

    def _telegram(self, path: str, body: bytes, forced: int | None) -> web.Response:
        def err(code: int, description: str, **extra: Any) -> web.Response:
            return web.json_response(
                {"ok": False, "error_code": code, "description": description, **extra}, status=code
            )

        token, _, method = path[len("/bot") :].partition("/")
        if token != TELEGRAM_TOKEN:
            return err(401, "Unauthorized")
        if method != "sendMessage":
            return err(404, "Not Found")
        if forced == 429:
            return err(429, "Too Many Requests: retry after 1", parameters={"retry_after": 1})
        if forced:
            return err(forced, "Internal Server Error")
        doc = self._parse(body)
        if not isinstance(doc, dict) or "chat_id" not in doc:
            return err(400, "Bad Request: chat_id is empty")
        if str(doc["chat_id"]) != TELEGRAM_CHAT:
            return err(400, "Bad Request: chat not found")
        text = doc.get("text")
        if not isinstance(text, str) or not text.strip():
            return err(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return err(400, "Bad Request: message is too long")
        chat = {"id": int(TELEGRAM_CHAT), "type": "supergroup"}
        result = {"message_id": len(self.seen) + 1, "chat": chat, "date": int(time.time()), "text": text}
        return web.json_response({"ok": True, "result": result})

    def _slack_hook(self, path: str, body: bytes, forced: int | None) -> web.Response:
        if path != SLACK_HOOK:
            return web.Response(text="no_service", status=404)
        if forced:
            return web.Response(text="internal_error", status=forced)
        doc = self._parse(body)
        if not isinstance(doc, dict):
            return web.Response(text="invalid_payload", status=400)
        if not isinstance(doc.get("text"), str) or not doc["text"]:
            return web.Response(text="no_text", status=400)
        return web.Response(text="ok")

    def _slack_api(self, headers: dict[str, str], body: bytes, forced: int | None) -> web.Response:
        auth = headers.get("Authorization", "")
        if not auth:
            return web.json_response({"ok": False, "error": "not_authed"})
        if auth != f"Bearer {SLACK_BOT_TOKEN}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if forced == 429:
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"})
        if forced:
            return web.json_response({"ok": False, "error": "fatal_error"}, status=forced)
        if not headers.get("Content-Type", "").startswith("application/json"):
            return web.json_response({"ok": False, "error": "invalid_form_data"})
        doc = self._parse(body)
        if not isinstance(doc, dict):
            return web.json_response({"ok": False, "error": "invalid_json"})
        if doc.get("channel") != SLACK_CHANNEL:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        if not doc.get("text"):
            return web.json_response({"ok": False, "error": "no_text"})
        ts = f"{time.time():.6f}"
        msg = {"type": "message", "text": doc["text"], "ts": ts, "bot_id": "B0123"}
        return web.json_response({"ok": True, "channel": SLACK_CHANNEL, "ts": ts, "message": msg})


class Running:
    """ChatStandins served on 127.0.0.1 from a thread of its own."""

    def __init__(self, standins: ChatStandins) -> None:
        self.standins = standins
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("delivery stand-ins did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self.standins._handle)
            self._runner = web.AppRunner(app, access_log=None)  # an access log would print the token path
            await self._runner.setup()
            port = free_port()
            await web.TCPSite(self._runner, "127.0.0.1", port).start()
            self.standins.port = port

        self.loop.run_until_complete(start())
        self._ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        async def cleanup() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class MailHandler:
    """aiosmtpd handler: keeps each message; answers 451 (try again later) ``refuse`` times first."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []
        self.refuse = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse > 0:
            self.refuse -= 1
            return "451 4.3.0 Try again later"
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))  # type: ignore[arg-type]
        return "250 OK"


def start_smtp(username: str, password: str) -> tuple[Any, MailHandler, int]:
    """A real SMTP server on 127.0.0.1 that requires AUTH with these credentials (plain TCP, as in a lab)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = auth_data.login == username.encode() and auth_data.password == password.encode()
        return AuthResult(success=ok, handled=False)

    handler = MailHandler()
    port = free_port()
    warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)  # a lab server
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    return controller, handler, port
