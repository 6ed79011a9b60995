"""Dashboard sign-in: server-side sessions behind an HttpOnly, SameSite=Strict cookie, CSRF tokens, security headers.

The cookie holds only a random token; the store keeps its SHA-256, never the
token and never the key that signed in, so neither a leaked store nor a
leaked cookie reveals the master key. A session ends after IDLE_S without use
or ABSOLUTE_S after sign-in, whichever comes first, or at sign-out. Every
state-changing request must carry the session's CSRF token in
``X-CSRF-Token`` (compared in constant time) and, when the browser sends an
``Origin``, come from this same origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from tiergate.api.gateway import GATEWAY
from tiergate.core.errors import Forbidden, Unauthorized

COOKIE = "tiergate_ui"
CSRF_HEADER = "X-CSRF-Token"
IDLE_S = 30 * 60.0
ABSOLUTE_S = 12 * 3600.0
MAX_SESSIONS = 1000  # signed-in browsers held at once; the least recently used beyond it is signed out

# script-src 'self' and no 'unsafe-inline' anywhere: no inline script or style attribute runs
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" made Chromium send "Origin: null" with the sign-in form
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(slots=True)
class UiSession:
    csrf: str
    signed_in_at: float
    last_used: float
    key_name: str
    digest: str  # the store's key: the SHA-256 of the cookie's token


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UiSessions:
    """Signed-in dashboard sessions, in memory and bounded (a restart signs everyone out)."""

    def __init__(
        self,
        *,
        idle_s: float = IDLE_S,
        absolute_s: float = ABSOLUTE_S,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.idle_s, self.absolute_s, self.max_sessions, self.clock = idle_s, absolute_s, max_sessions, clock
        self._by_digest: OrderedDict[str, UiSession] = OrderedDict()

    def open(self, key_name: str) -> tuple[str, UiSession]:
        """A new session: (the cookie's token, given once, the session)."""
        token, now = secrets.token_urlsafe(32), self.clock()
        d = _digest(token)
        s = UiSession(csrf=secrets.token_urlsafe(32), signed_in_at=now, last_used=now, key_name=key_name, digest=d)
        self._by_digest[d] = s
        while len(self._by_digest) > self.max_sessions:
            self._by_digest.popitem(last=False)
        return token, s

    def find(self, token: str | None) -> UiSession | None:
        """The live session of a cookie's token, its idle clock restarted; None (and forgotten) once expired."""
        if not token or len(token) > 128:
            return None
        d = _digest(token)
        s = self._by_digest.get(d)
        if s is None:
            return None
        now = self.clock()
        if now - s.last_used > self.idle_s or now - s.signed_in_at > self.absolute_s:
            del self._by_digest[d]
            return None
        s.last_used = now
        self._by_digest.move_to_end(d)
        return s

    def alive(self, s: UiSession) -> bool:
        """Whether ``s`` is still signed in (a live stream asks each tick without counting as use)."""
        now = self.clock()
        return (
            self._by_digest.get(s.digest) is s
            and now - s.last_used <= self.idle_s
            and now - s.signed_in_at <= self.absolute_s
        )

    def close(self, token: str | None) -> None:
        if token:
            self._by_digest.pop(_digest(token), None)

    def __len__(self) -> int:
        return len(self._by_digest)


UI_SESSIONS: web.AppKey[UiSessions] = web.AppKey("ui_sessions", UiSessions)


def session_of(request: web.Request) -> UiSession | None:
    """The browser's session, while the key that opened it is still an admin's (a revoked admin key ends its
    sessions within the key reload, about a second)."""
    token = request.cookies.get(COOKIE)
    s = request.app[UI_SESSIONS].find(token)
    if s is not None and not request.app[GATEWAY].keys.is_admin(s.key_name):
        request.app[UI_SESSIONS].close(token)
        return None
    return s


def require_session(request: web.Request) -> UiSession:
    """The request's signed-in session; 401 without one (the JSON API), 403 for a refused action."""
    s = session_of(request)
    if s is None:
        raise Unauthorized("sign in to the dashboard first (POST /ui/login with the master key or an admin key)")
    if request.method not in ("GET", "HEAD"):
        check_origin(request)
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent.encode(), s.csrf.encode()):
            raise Forbidden(f"missing or wrong CSRF token: send the page's token in {CSRF_HEADER}")
    return s


def check_origin(request: web.Request) -> None:
    """A POST a browser sent from another site is refused (SameSite=Strict already keeps the cookie off it)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise Forbidden("cross-origin request refused: the dashboard accepts actions from its own pages only")


def set_cookie(resp: web.StreamResponse, request: web.Request, token: str, max_age_s: float) -> None:
    resp.set_cookie(
        COOKIE,
        token,
        path="/ui",
        max_age=int(max_age_s),
        httponly=True,
        samesite="Strict",
        secure=request.secure,  # behind TLS; a plain-HTTP 127.0.0.1 gateway would never get it back otherwise
    )


def clear_cookie(resp: web.StreamResponse) -> None:
    resp.del_cookie(COOKIE, path="/ui")


def secured(resp: web.StreamResponse, *, cache: bool = False) -> web.StreamResponse:
    """The dashboard's security headers on ``resp``; data and pages are never cached."""
    resp.headers.update(SECURITY_HEADERS)
    if not cache:
        resp.headers["Cache-Control"] = "no-store"
    return resp
