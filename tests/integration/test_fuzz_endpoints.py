"""A property over the whole HTTP surface: whatever a client sends, the answer is < 500 in its own envelope.

One real gateway process (stand-in upstreams for both protocols) takes a few
hundred hypothesis-made requests: random JSON bodies (nested past any limit,
wrong types, huge numbers, unicode, NaN-like strings, raw bytes, empty), shapes
close to valid bodies with random fields, random header bytes (ids, keys,
encodings), random methods and paths, the admin API included. Afterwards the
gateway must still serve the official SDKs and record them in the ledger, and
must not have logged a traceback.
"""

from __future__ import annotations

import gzip
import http.client
import json
import zlib
from urllib.parse import unquote

import anthropic
import openai
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from procs import CHEAP_KEY, MASTER_KEY, start_gateway, start_standin, tiered_config, wait_until

MSG = [{"role": "user", "content": "hello"}]
BEARER = {"Authorization": f"Bearer {MASTER_KEY}".encode()}
JSON_TYPE = {"Content-Type": b"application/json"}

BODY_ROUTES = [
    "/v1/chat/completions",
    "/chat/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
]
ADMIN_POST = ["/admin/emergency", "/admin/sessions/kill", "/ui/login", "/ui/api/emergency"]
GET_ROUTES = [
    "/health",
    "/metrics",
    "/v1/models",
    "/admin/config",
    "/admin/sessions",
    "/admin/models",
    "/admin/emergency",
    "/ui",
    "/ui/login",
    "/ui/api/overview",
    "/ui/api/requests",
    "/ui/api/sessions",
    "/ui/static/app.js",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    chat = start_standin("openai", "local", ["llama-8b", "gpt-4o-mini"])
    messages = start_standin("anthropic", "anthro", ["claude-sonnet-4-5"])
    cfg = tiered_config(chat, chat)
    cfg["providers"]["anthro"] = {
        "api": "anthropic-messages",
        "base_url": messages.base_url,
        "api_key": "env:CHEAP_KEY",
    }
    cfg["deployments"].append(
        {"name": "sonnet", "provider": "anthro", "model": "claude-sonnet-4-5", "tier": 3, "context_window": 200000}
    )
    cfg["aliases"]["claude/any"] = ["sonnet"]
    cfg["server"] = {"max_body_mb": 2}
    gateway = start_gateway(tmp_path_factory.mktemp("fuzz"), cfg, env_extra={"CHEAP_KEY": CHEAP_KEY})
    yield gateway
    gateway.stop()
    chat.stop()
    messages.stop()


# ---------------------------------------------------------------------------- what a client may send
ODD_STRINGS = st.sampled_from(
    [
        "NaN",
        "-Infinity",
        "1e999",
        "-0",
        "null",
        "true",
        "",
        " ",
        "\u0000",
        "\ufeff",
        "\u202e",
        "𝕏" * 40,
        "%s%n",
        "'; --",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | ODD_STRINGS
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
MODELS = (
    st.sampled_from(["auto", "local-8b", "cheap", "sonnet", "claude/any", "local/fast", "task/coding", "gpt-9"]) | JSON
)
CONTENT = (
    st.text(max_size=60)
    | JSON
    | st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image", "tool_use", "tool_result", "x"])},
            optional={"text": JSON, "source": JSON, "input": JSON},
        ),
        max_size=3,
    )
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "developer"]) | JSON},
    optional={"content": CONTENT, "tool_calls": JSON, "name": JSON, "tool_call_id": JSON},
)
NEAR_VALID = st.fixed_dictionaries(
    {},
    optional={
        "model": MODELS,
        "messages": st.lists(MESSAGE, max_size=3) | JSON,
        "max_tokens": st.integers(min_value=-5, max_value=10**30) | JSON,
        "max_completion_tokens": st.integers(min_value=-5, max_value=10**12) | JSON,
        "stream": st.booleans() | JSON,
        "stream_options": JSON,
        "tools": JSON,
        "tool_choice": JSON,
        "system": JSON,
        "metadata": st.fixed_dictionaries({"user_id": st.text(max_size=80) | JSON}) | JSON,
        "input": st.text(max_size=40) | st.lists(st.text(max_size=10), max_size=3) | JSON,
        "temperature": JSON,
        "n": JSON,
        "on": JSON,
        "reason": JSON,
        "session": JSON,
        "agent": JSON,
        "over_usd": JSON,
    },
)


def _deep(depth: int, opener: str) -> bytes:
    close = "]" if opener == "[" else "}"
    inner = (opener + ('"k":' if opener == "{" else "")) * depth
    return (
        b'{"messages": [{"role": "user", "content": "x"}], "deep": ' + inner.encode() + (close * depth).encode() + b"}"
    )


BODIES = st.one_of(
    NEAR_VALID.map(lambda b: json.dumps(b).encode()),
    JSON.map(lambda b: json.dumps(b).encode()),
    st.tuples(st.integers(1, 1100), st.sampled_from("[{")).map(lambda t: _deep(*t)),
    st.binary(max_size=200),
    st.just(b""),
    st.sampled_from([b"NaN", b"[1, 2", b'{"a": NaN}', b'{"a": 1e999999}', b'{"\\ud800": 1}', b"\xef\xbb\xbf{}"]),
)

HEADER_BYTES = st.binary(max_size=300).map(lambda b: bytes(c for c in b if c in (9,) or c >= 32 and c != 127))
ID_HEADER = st.sampled_from(
    [
        "X-Tiergate-Agent",
        "X-Tiergate-Session",
        "X-Tiergate-Task",
        "X-Tiergate-Privacy",
        "X-Tiergate-Whatever",
        "X-Request-ID",
        "X-Claude-Code-Session-Id",
        "anthropic-version",
        "anthropic-beta",
    ]
)
AUTH = st.one_of(
    st.just({"Authorization": f"Bearer {MASTER_KEY}".encode()}),
    st.just({"x-api-key": MASTER_KEY.encode()}),
    st.just({}),
    HEADER_BYTES.map(lambda b: {"Authorization": b"Bearer " + b}),
    HEADER_BYTES.map(lambda b: {"Authorization": b}),
    HEADER_BYTES.map(lambda b: {"x-api-key": MASTER_KEY.encode() + b}),
)
ENCODING = st.sampled_from([None, None, None, "gzip", "deflate", "gzip-lie", "br", "zstd", "identity", "x-odd"])
PATH_SUFFIX = (
    st.text(alphabet="abcxyz019/._-~", max_size=12)
    | st.binary(min_size=1, max_size=6).map(lambda b: "".join(f"%{c:02X}" for c in b))
    | st.sampled_from(["%0A", "%0D%0A", "%00", "%FF%FE", "%2F..%2F..", "/../../etc/passwd", "%20", "%E2%80%AE", "//"])
)
VALID = {
    "/v1/chat/completions": {"model": "auto", "messages": MSG},
    "/chat/completions": {"model": "auto", "messages": MSG, "stream": True},
    "/v1/embeddings": {"model": "auto", "input": "hello"},
    "/v1/messages": {"model": "auto", "max_tokens": 16, "messages": MSG},
    "/v1/messages/count_tokens": {"model": "auto", "messages": MSG},
    "/admin/emergency": {"on": False},
    "/admin/sessions/kill": {"agent": "nobody-fuzzed"},
}
FIELDS = st.sampled_from(
    ["model", "messages", "max_tokens", "stream", "tools", "tool_choice", "system", "metadata", "input", "on", "agent"]
)


@st.composite
def mutated(draw, path: str) -> bytes:
    """A valid body for ``path`` with up to three fields replaced by anything, or dropped."""
    body = dict(VALID[path])
    for field in draw(st.lists(FIELDS, max_size=3, unique=True)):
        if draw(st.booleans()) and field in body:
            del body[field]
        else:
            body[field] = draw(NEAR_VALID.map(lambda b, f=field: b.get(f)) | JSON)
    return json.dumps(body).encode()


@st.composite
def requests(draw):
    kind = draw(st.sampled_from(["body", "body", "body", "admin-post", "get", "random"]))
    if kind == "body":
        method, path = "POST", draw(st.sampled_from(BODY_ROUTES))
    elif kind == "admin-post":
        method, path = "POST", draw(st.sampled_from(ADMIN_POST))
    elif kind == "get":
        method, path = "GET", draw(st.sampled_from(GET_ROUTES))
    else:
        method = draw(st.sampled_from(METHODS))
        path = draw(st.sampled_from(BODY_ROUTES + ADMIN_POST + GET_ROUTES + ["/", "/v1", "/admin"])) + draw(PATH_SUFFIX)
    if draw(st.booleans()):
        path += "?" + draw(st.sampled_from(["beta=true", "a=%ff", "x=" + "y" * 50, "&&=", ""]))
    if path in VALID and draw(st.booleans()):
        body = draw(mutated(path))
    else:
        body = draw(BODIES) if method not in ("GET", "HEAD") or draw(st.booleans()) else b""
    headers: dict[str, bytes] = {"Content-Type": draw(st.sampled_from([b"application/json", b"text/plain", b"\xff"]))}
    headers.update(draw(AUTH))
    for name in draw(st.lists(ID_HEADER, max_size=3, unique=True)):
        headers[name] = draw(HEADER_BYTES | st.sampled_from([b"local-only", b"coding", b"s-1", b"2023-06-01"]))
    encoding = draw(ENCODING)
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    if encoding is not None:
        headers["Content-Encoding"] = b"gzip" if encoding == "gzip-lie" else encoding.encode()
    return method, path, headers, body


def _expected_envelope(path: str) -> str:
    return "anthropic" if unquote(path.split("?", 1)[0]).startswith("/v1/messages") else "openai"


def _check_envelope(path: str, status: int, raw: bytes) -> None:
    got = json.loads(raw)
    if _expected_envelope(path) == "anthropic":
        assert got.get("type") == "error" and set(got["error"]) == {"type", "message"}, got
    else:
        assert set(got["error"]) == {"message", "type", "param", "code"}, got
    message = got["error"]["message"]
    assert isinstance(message, str) and message and "Traceback" not in message
    assert MASTER_KEY not in message  # a key sent with odd bytes around it is never echoed


def _code(raw: bytes) -> str:
    try:
        err = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        return "-"
    return str(err.get("code") or err.get("type")) if isinstance(err, dict) else "-"


class Client:
    """One keep-alive connection, reopened whenever the gateway closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def send(self, method: str, path: str, headers: dict[str, bytes], body: bytes) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.putrequest(method, path, skip_accept_encoding=True)
                for k, v in headers.items():
                    self.conn.putheader(k, v)
                self.conn.putheader("Content-Length", str(len(body)))
                self.conn.endheaders(body)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.conn.close()
                return resp.status, data
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                self.conn.close()  # a keep-alive connection the gateway closed meanwhile: once more, fresh
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def client(gw):
    c = Client(gw.port)
    yield c
    c.conn.close()


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(req=requests())
@example(req=("POST", "/v1/chat/completions", {**BEARER, **JSON_TYPE}, _deep(300, "[")))  # the measured 500s
@example(req=("POST", "/v1/messages", {"x-api-key": MASTER_KEY.encode(), **JSON_TYPE}, _deep(1023, "{")))
@example(req=("POST", "/v1/messages/count_tokens", {**BEARER, **JSON_TYPE}, _deep(600, "[")))
@example(req=("POST", "/v1/chat/completions", {"Authorization": f"Bearer {MASTER_KEY}\xff".encode("latin-1")}, b"{}"))
@example(req=("POST", "/v1/messages", {**BEARER, "X-Tiergate-Session": b"a\xed\xa0\x80b"}, b"{}"))
@example(req=("POST", "/v1/chat/completions", {**BEARER, "Content-Encoding": b"br"}, b"\x0b\x02\x80{}\x03"))
@example(req=("POST", "/v1/chat/completions", {**BEARER, "Content-Encoding": b"gzip"}, b"{}"))
@example(req=("GET", "/health%0A", {}, b""))  # matched no route: aiohttp's plain-text 404
@example(req=("GET", "/admin/config", BEARER, b""))  # answered 500 on main
@example(req=("POST", "/ui/login", {}, b"key=nope"))  # no form type: JSON, the error envelope
@example(req=("POST", "/ui/login", {"Content-Type": b"application/x-www-form-urlencoded"}, b"key=nope"))  # the page
def test_no_request_gets_a_5xx_or_a_foreign_envelope(gw, client, req):
    method, path, headers, body = req
    status, raw = client.send(method, path, headers, body)
    event(f"{status} {_code(raw)}")  # pytest --hypothesis-show-statistics: what the run reached
    assert status < 500, (status, raw[:500], req)
    if status >= 400 and method != "HEAD":
        if path.startswith("/ui/login") and raw.startswith(b"<!doctype html>"):
            # a browser's sign-in form gets the sign-in page again, saying why (the browser's own format)
            assert MASTER_KEY.encode() not in raw and b"Traceback" not in raw
            return
        _check_envelope(path, status, raw)


def test_afterwards_the_gateway_still_serves_and_records(gw):
    """Runs after the property (same module, same process): normal clients still work and the ledger still records."""
    # the fuzz may have switched emergency local-only mode on or killed sessions: a fresh session, local is served
    session = {"X-Tiergate-Session": "after-the-fuzz"}
    o = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0, default_headers=session)
    assert o.chat.completions.create(model="auto", messages=MSG).choices[0].message.content
    a = anthropic.Anthropic(base_url=gw.base_url, api_key=MASTER_KEY, max_retries=0, default_headers=session)
    assert a.messages.create(model="auto", max_tokens=16, messages=MSG).content
    assert wait_until(lambda: len(gw.ledger_rows("session = 'after-the-fuzz' AND status = 200")) == 2, timeout=15)
    report = json.loads(gw.cli("report", "--json").stdout)
    assert report["requests"] >= 2, report
    health = json.loads(http_get(gw, "/health"))
    assert health["ledger"].get("ok", True), health
    text = "\n".join(gw.log)
    assert "Traceback" not in text and " ERROR " not in text, text[-4000:]


def http_get(gw, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        conn.request("GET", path)
        return conn.getresponse().read()
    finally:
        conn.close()
