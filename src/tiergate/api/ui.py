"""The dashboard at /ui: sign-in, the pages, their packaged assets, the JSON API and its actions.

Pages are one HTML shell (src/tiergate/ui/index.html) that the page's script
(app.js) fills from the JSON endpoints under /ui/api and keeps live from
/ui/api/live; nothing is built at install and nothing is fetched from outside
(uPlot is vendored, src/tiergate/ui/vendor). Every page and API answer needs
a signed-in session (api/ui_session.py) made with the master key or an admin
key, the keys every /admin route takes; every action also needs the session's CSRF token.
The actions reuse what /admin does: the emergency switch
(``admin.switch_emergency``) and the session tracker's kill and revive.
"""

from __future__ import annotations

import asyncio
import functools
import html
import importlib.resources
import urllib.parse
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from tiergate.api import ui_data
from tiergate.api.admin import switch_emergency
from tiergate.api.common import JSON, error_response, query_count, read_body, read_json_object
from tiergate.api.edge import EdgeRoutes
from tiergate.api.gateway import GATEWAY
from tiergate.api.ui_live import LIVE_HUB, LiveHub, stream
from tiergate.api.ui_session import (
    ABSOLUTE_S,
    COOKIE,
    UI_SESSIONS,
    UiSessions,
    check_origin,
    clear_cookie,
    require_session,
    secured,
    session_of,
    set_cookie,
)
from tiergate.core.errors import BadRequest, Forbidden, NotFound, TiergateError
from tiergate.guardrails.budgets import EMERGENCY_FLAG
from tiergate.guardrails.sessions import SESSION_SORTS
from tiergate.ledger import dashboard as reads

PAGES = ("overview", "sessions", "deployments", "models", "requests", "alerts")
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain", ".svg": "image/svg+xml"}
MAX_KEY_CHARS = 512
MAX_FILTER_CHARS = 256
ASSETS: web.AppKey[dict[str, tuple[bytes, str]]] = web.AppKey("ui_assets", dict)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_assets() -> dict[str, tuple[bytes, str]]:
    """The packaged files by their URL name (``vendor/uPlot.iife.min.js``): read once when the app is built."""
    root = importlib.resources.files("tiergate.ui")
    out: dict[str, tuple[bytes, str]] = {}
    for folder, prefix in ((root, ""), (root / "vendor", "vendor/")):
        for item in folder.iterdir():
            name = item.name
            kind = next((t for ext, t in ASSET_TYPES.items() if name.endswith(ext)), None)
            if item.is_file() and (kind is not None or name.endswith(".html") or name.endswith("LICENSE")):
                out[prefix + name] = (item.read_bytes(), kind or "text/plain")
    return out


def ui_api(handler: Handler) -> Handler:
    """A /ui/api handler: signed in (and CSRF-checked for actions); errors as JSON with the security headers."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        try:
            require_session(request)
            return secured(await handler(request))
        except TiergateError as err:
            return secured(error_response(err, request_id=request["request_id"]))

    return checked


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _json(body: object) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type=JSON)


def _html(request: web.Request, name: str, *, status: int = 200, **fill: str) -> web.Response:
    text = request.app[ASSETS][name][0].decode()
    for k, v in fill.items():
        text = text.replace("{{" + k + "}}", html.escape(v))
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


# ------------------------------------------------------------------ pages and sign-in
async def page(request: web.Request) -> web.StreamResponse:
    """A page's shell, or a redirect to the sign-in page: nothing is shown before sign-in."""
    name = request.match_info.get("page", "overview")
    if name not in PAGES:
        raise NotFound(f"no dashboard page {name!r}; pages: {', '.join(PAGES)}")
    s = session_of(request)
    if s is None:
        return secured(_see_other("/ui/login"))
    return secured(_html(request, "index.html", csrf=s.csrf, page=name))


async def login_page(request: web.Request) -> web.StreamResponse:
    if session_of(request) is not None:
        return secured(_see_other("/ui"))
    return secured(_html(request, "login.html", error="", hidden="hidden"))


async def login(request: web.Request) -> web.StreamResponse:
    """POST the key (a form field ``key``, or JSON {"key": ...}): the master key or an admin key opens a session.

    A browser's form gets the sign-in page again with the reason (401 wrong key, 403 not an admin key,
    429 too many failures); a script gets the JSON error.
    """
    form = request.content_type == "application/x-www-form-urlencoded"  # the sign-in page's form; else JSON
    try:
        check_origin(request)
        key = await _posted_key(request, form=form)
        gw = request.app[GATEWAY]
        ident = gw.keys.identify({"Authorization": f"Bearer {key}"}, peer=request)  # 401; 429 when throttled
        if not gw.keys.is_admin(ident.key_name):
            raise Forbidden(
                "the dashboard needs the master key (auth.master_key) or an admin key "
                "('tiergate keys create --admin'); this key is an agent's key"
            )
    except TiergateError as err:
        if not form:
            return secured(error_response(err, request_id=request["request_id"]))
        resp = _html(request, "login.html", status=err.status, error=err.message, hidden="")
        if err.retry_after is not None:
            resp.headers["Retry-After"] = str(err.retry_after)
        return secured(resp)
    token, _ = request.app[UI_SESSIONS].open(ident.key_name)
    resp = _see_other("/ui") if form else _json({"signed_in": True})
    set_cookie(resp, request, token, ABSOLUTE_S)
    return secured(resp)


async def _posted_key(request: web.Request, *, form: bool) -> str:
    if form:
        raw = await read_body(request, 4 * MAX_KEY_CHARS)
        try:
            fields = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), max_num_fields=4)
        except ValueError:
            raise BadRequest("the sign-in form has too many fields; send only 'key'") from None
        sent: object = (fields.get("key") or [""])[0]
    else:
        _, body = await read_json_object(request)
        sent = body.get("key")
    key = sent.strip() if isinstance(sent, str) else ""
    if not key:
        raise BadRequest("give the master key in the field 'key'", param="key")
    if len(key) > MAX_KEY_CHARS:
        raise BadRequest(f"'key' is longer than {MAX_KEY_CHARS} characters", param="key")
    return key


async def logout(request: web.Request) -> web.StreamResponse:
    require_session(request)  # CSRF-checked: another site cannot sign an operator out
    request.app[UI_SESSIONS].close(request.cookies.get(COOKIE))
    resp = _json({"signed_in": False})
    clear_cookie(resp)
    return secured(resp)


async def asset(request: web.Request) -> web.StreamResponse:
    """A packaged script, stylesheet or licence (public code, no data); anything else is a 404."""
    name = request.match_info["name"]
    found = request.app[ASSETS].get(name)
    if found is None or name.endswith(".html"):
        raise NotFound(f"no dashboard asset {name!r}")
    body, kind = found
    resp = web.Response(body=body, content_type=kind, headers={"Cache-Control": "no-cache"})
    return secured(resp, cache=True)


# ------------------------------------------------------------------ JSON API (reads)
@ui_api
async def api_overview(request: web.Request) -> web.StreamResponse:
    snap = await ui_data.snapshot(request.app[GATEWAY])
    return _json(snap["overview"])


@ui_api
async def api_deployments(request: web.Request) -> web.StreamResponse:
    snap = await ui_data.snapshot(request.app[GATEWAY])
    return _json({"deployments": snap["deployments"]})


@ui_api
async def api_models(request: web.Request) -> web.StreamResponse:
    snap = await ui_data.snapshot(request.app[GATEWAY])
    return _json(snap["models"])


@ui_api
async def api_alerts(request: web.Request) -> web.StreamResponse:
    return _json(ui_data.alerts(request.app[GATEWAY]))


@ui_api
async def api_sessions(request: web.Request) -> web.StreamResponse:
    sort = request.query.get("sort", "last_seen")
    if sort not in SESSION_SORTS:
        raise BadRequest(f"'sort' must be one of {', '.join(SESSION_SORTS)}", param="sort")
    limit = max(1, query_count(request, "limit", 50, 500))
    offset = query_count(request, "offset", 0, 10**9)
    return _json(ui_data.sessions(request.app[GATEWAY], sort=sort, limit=limit, offset=offset))


def _filter(request: web.Request) -> reads.RequestFilter:
    values: dict[str, str | None] = {}
    for name in ("agent", "task", "session", "status", "deployment"):
        v = request.query.get(name, "").strip()
        if len(v) > MAX_FILTER_CHARS:
            raise BadRequest(f"'{name}' is longer than {MAX_FILTER_CHARS} characters", param=name)
        values[name] = v or None
    status = values["status"]
    if status is not None and status not in ("ok", "error") and not (status.isdigit() and len(status) == 3):
        raise BadRequest("'status' must be ok, error or a three-digit HTTP status", param="status")
    return reads.RequestFilter(**values)


@ui_api
async def api_requests(request: web.Request) -> web.StreamResponse:
    flt = _filter(request)
    limit = max(1, query_count(request, "limit", 100, reads.REQUESTS_MAX))
    before_raw = request.query.get("before")
    try:
        before = float(before_raw) if before_raw is not None else None
    except ValueError:
        raise BadRequest("'before' must be a time in epoch seconds", param="before") from None
    gw = request.app[GATEWAY]
    rows = await asyncio.to_thread(reads.recent_requests, gw.ledger, flt, limit=limit, before=before)
    return _json({"requests": rows, "limit": limit, "next_before": rows[-1]["ts"] if len(rows) == limit else None})


@ui_api
async def api_request(request: web.Request) -> web.StreamResponse:
    rid = request.match_info["request_id"]
    if len(rid) > MAX_FILTER_CHARS:
        raise BadRequest(f"a request id is at most {MAX_FILTER_CHARS} characters")
    found = await asyncio.to_thread(reads.explanation, request.app[GATEWAY].ledger, rid)
    if found is None:
        raise NotFound(f"no request {rid!r} in the ledger")
    return _json(found)


async def api_live(request: web.Request) -> web.StreamResponse:
    try:
        s = require_session(request)
    except TiergateError as err:
        return secured(error_response(err, request_id=request["request_id"]))
    sessions = request.app[UI_SESSIONS]
    keys = request.app[GATEWAY].keys  # a revoked admin key ends its pages' streams too
    return await stream(request, request.app[LIVE_HUB], lambda: sessions.alive(s) and keys.is_admin(s.key_name))


# ------------------------------------------------------------------ actions (CSRF-checked by ui_api)
@ui_api
async def api_emergency(request: web.Request) -> web.StreamResponse:
    """POST {"on": bool, "reason": str}: the same switch as POST /admin/emergency and `tiergate emergency`."""
    gw = request.app[GATEWAY]
    _, body = await read_json_object(request)
    on = body.get("on")
    if not isinstance(on, bool):
        raise BadRequest("'on' must be true or false", param="on")
    reason = str(body.get("reason") or "switched on from the dashboard")[:500] if on else None
    await switch_emergency(gw, reason, source="dashboard")
    now = await gw.state.flag(EMERGENCY_FLAG)
    return _json({"on": now is not None, "reason": now})


@ui_api
async def api_kill(request: web.Request) -> web.StreamResponse:
    """Kill one session, as POST /admin/sessions/kill {"session": ID} does; 404 for an id never seen."""
    sid = request.match_info["session"]
    kills = await request.app[GATEWAY].sessions.kill("killed from the dashboard", session=sid)
    return _json({"killed": kills.killed, "spared": kills.spared})


@ui_api
async def api_revive(request: web.Request) -> web.StreamResponse:
    """Lift one session's kill, as POST /admin/sessions/{id}/revive does."""
    sid = request.match_info["session"]
    revived = await request.app[GATEWAY].sessions.revive(sid)
    return _json({"session": sid, "revived": revived})


def add_routes(app: web.Application, routes: EdgeRoutes) -> None:
    app[UI_SESSIONS] = UiSessions()
    app[ASSETS] = load_assets()

    async def build() -> dict[str, object]:
        return await ui_data.snapshot(app[GATEWAY])

    app[LIVE_HUB] = LiveHub(build)
    routes.get("/ui", page)
    routes.get("/ui/", page)
    routes.get("/ui/login", login_page)
    routes.post("/ui/login", login)
    routes.post("/ui/logout", logout)
    routes.get("/ui/static/{name:[A-Za-z0-9_./-]+}", asset)
    routes.get("/ui/api/overview", api_overview)
    routes.get("/ui/api/deployments", api_deployments)
    routes.get("/ui/api/models", api_models)
    routes.get("/ui/api/alerts", api_alerts)
    routes.get("/ui/api/sessions", api_sessions)
    routes.get("/ui/api/requests", api_requests)
    routes.get("/ui/api/requests/{request_id:.+}", api_request)
    routes.get("/ui/api/live", api_live)
    routes.post("/ui/api/emergency", api_emergency)
    routes.post("/ui/api/sessions/{session:.+}/kill", api_kill)
    routes.post("/ui/api/sessions/{session:.+}/revive", api_revive)
    routes.get("/ui/{page:[a-z]+}", page)
