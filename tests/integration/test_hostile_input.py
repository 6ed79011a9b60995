"""Issue 13, the API edge: every hostile input measured on main gets a 4xx in the client's envelope, never a 5xx.

One gateway serves the module (stand-in upstream, 1 MB body limit, throttle off so the
tests stay independent); the throttle and the ledger checks that need a clean process
start their own. Framing-sensitive cases go over raw sockets.
"""

from __future__ import annotations

import gzip
import json
import select
import socket
import zlib
from pathlib import Path

import anthropic
import openai
import pytest

from procs import CHEAP_KEY, MASTER_KEY, http, start_gateway, start_standin, tiered_config, wait_until

MSG = [{"role": "user", "content": "hello"}]
LIMIT_MB = 1
OPENAI_PATHS = ("/v1/chat/completions", "/v1/embeddings")
ANTHROPIC_PATHS = ("/v1/messages", "/v1/messages/count_tokens")
BODY_PATHS = OPENAI_PATHS + ANTHROPIC_PATHS


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    up = start_standin("openai", "local", ["llama-8b", "gpt-4o-mini"])
    cfg = tiered_config(up, up)  # the tier-1 provider has an api_key (env:CHEAP_KEY) for /admin/config to mask
    cfg["server"] = {"max_body_mb": LIMIT_MB}
    cfg["auth"]["max_failures_per_minute"] = 0
    gateway = start_gateway(tmp_path_factory.mktemp("hostile"), cfg, env_extra={"CHEAP_KEY": CHEAP_KEY})
    yield gateway
    gateway.stop()
    up.stop()


def _valid_body(path: str) -> dict:
    if path == "/v1/embeddings":
        return {"model": "auto", "input": "hello"}
    if path.startswith("/v1/messages"):
        return {"model": "auto", "max_tokens": 16, "messages": MSG}
    return {"model": "auto", "messages": MSG}


def _headers(path: str, **extra: str) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    h["x-api-key" if path.startswith("/v1/messages") else "Authorization"] = (
        MASTER_KEY if path.startswith("/v1/messages") else f"Bearer {MASTER_KEY}"
    )
    return {**h, **extra}


def assert_envelope(path: str, raw: bytes) -> str:
    """The error message, after checking the body is the client's own error format."""
    got = json.loads(raw)
    if path.startswith("/v1/messages"):
        assert got["type"] == "error" and set(got["error"]) == {"type", "message"}, got
        return got["error"]["message"]
    assert set(got["error"]) == {"message", "type", "param", "code"}, got
    return got["error"]["message"]


def _nested_body(path: str, depth: int) -> bytes:
    """A valid body for ``path`` with one field nested ``depth`` levels deep in all (the body itself is level 1)."""
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    return json.dumps(_valid_body(path))[:-1].encode() + b', "extra": ' + inner.encode() + b"}"


def raw_request(port: int, data: bytes, *, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; read one response (Content-Length framed, as tiergate's errors are)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return read_response(s)


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"connection closed before a response: {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def head_bytes(path: str, headers: dict[str, str | bytes], body_len: int | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    for k, v in headers.items():
        lines.append(k.encode() + b": " + (v if isinstance(v, bytes) else v.encode()))
    if body_len is not None:
        lines.append(b"Content-Length: %d" % body_len)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def gzip_of(start: bytes, piece: bytes, times: int, end: bytes) -> bytes:
    """gzip of start + piece * times + end, without holding the uncompressed whole."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [z.compress(start)] + [z.compress(piece) for _ in range(times)] + [z.compress(end), z.flush()]
    return b"".join(out)


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


def no_tracebacks(gw) -> None:
    text = "\n".join(gw.log)
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]


# ---------------------------------------------------------------------------- nesting depth
@pytest.mark.parametrize("depth", [65, 254, 1023, 1024])
@pytest.mark.parametrize("path", BODY_PATHS)
def test_deep_json_is_400_naming_the_limit(gw, path, depth):
    status, _, raw = http("POST", gw.base_url + path, body=_nested_body(path, depth), headers=_headers(path))
    assert status == 400, raw
    msg = assert_envelope(path, raw)
    assert "server.max_json_depth" in msg and "64" in msg, msg


@pytest.mark.parametrize("path", ["/admin/emergency", "/admin/sessions/kill"])
def test_deep_json_on_the_admin_api_is_400(gw, path):
    body = b'{"on": false, "agent": "x", "deep": ' + b"[" * 300 + b"]" * 300 + b"}"
    status, _, raw = http("POST", gw.base_url + path, body=body, headers=_headers(path))
    assert status == 400 and "server.max_json_depth" in assert_envelope(path, raw), raw


def test_nesting_at_the_limit_is_served(gw):
    path = "/v1/messages/count_tokens"
    status, _, raw = http("POST", gw.base_url + path, body=_nested_body(path, 64), headers=_headers(path))
    assert status == 200 and json.loads(raw)["input_tokens"] > 0, raw


# ---------------------------------------------------------------------------- header values
ID_HEADERS = [
    "X-Tiergate-Agent",
    "X-Tiergate-Session",
    "X-Tiergate-Task",
    "X-Tiergate-Privacy",
    "X-Request-ID",
    "X-Claude-Code-Session-Id",
]
BAD_VALUES = {
    "not-utf8": b"sess-\xff\xfe-1",
    "lone-surrogate-as-utf8": b"a\xed\xa0\x80b",  # CESU-8 of U+D800: not UTF-8 either
    "tab": b"a\tb",
    "too-long": b"s" * 257,
}


@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
@pytest.mark.parametrize("header", ID_HEADERS)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_bad_header_values_are_400_naming_the_header(gw, path, header, kind):
    body = json.dumps(_valid_body(path)).encode()
    req = head_bytes(path, {**_headers(path), header: BAD_VALUES[kind]}, len(body)) + body
    status, headers, raw = raw_request(gw.port, req)
    assert status == 400, raw
    msg = assert_envelope(path, raw)
    assert f"header {header} " in msg, msg
    assert BAD_VALUES[kind].decode("latin-1") not in raw.decode("latin-1")  # the value is not echoed
    if header == "X-Request-ID":
        assert headers["x-request-id"].encode() != BAD_VALUES[kind]  # a fresh id, not the bad one


def test_forwarded_anthropic_headers_must_be_ascii(gw):
    path = "/v1/messages"
    body = json.dumps(_valid_body(path)).encode()
    req = head_bytes(path, {**_headers(path), "anthropic-beta": "tools-\u00e9".encode()}, len(body)) + body
    status, _, raw = raw_request(gw.port, req)
    assert status == 400 and "header anthropic-beta " in assert_envelope(path, raw), raw


def test_metadata_user_id_naming_a_bad_session_is_400(gw):
    path = "/v1/messages"
    body = {**_valid_body(path), "metadata": {"user_id": "user_x_session_" + "s" * 300}}
    status, _, raw = http("POST", gw.base_url + path, body=json.dumps(body).encode(), headers=_headers(path))
    assert status == 400 and "metadata.user_id" in assert_envelope(path, raw), raw


def test_a_bad_session_header_never_stops_the_ledger(standins, gateway):
    """Issue 14: a lone surrogate in X-Tiergate-Session killed the SQLite writer; later requests went unrecorded."""
    gw = gateway(tiered_config(standins(name="local", models=["llama-8b"]), None))
    body = json.dumps({"messages": MSG}).encode()
    path = "/v1/chat/completions"
    bad = head_bytes(path, {**_headers(path), "X-Tiergate-Session": b"a\xed\xa0\x80b"}, len(body)) + body
    assert raw_request(gw.port, bad)[0] == 400
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    c.chat.completions.create(model="auto", messages=MSG, extra_headers={"X-Tiergate-Session": "after"})
    assert wait_until(lambda: gw.ledger_rows("session = 'after' AND status = 200"), timeout=15)
    health = json.loads(http("GET", f"{gw.base_url}/health")[2])
    assert health["ledger"].get("ok", True), health
    no_tracebacks(gw)


# ---------------------------------------------------------------------------- keys
BAD_AUTH = {
    "bearer-key-then-ff": (b"Authorization", b"Bearer " + MASTER_KEY.encode() + b"\xff"),
    "bearer-garbage": (b"Authorization", b"Bearer \xff\xfe\xfd\xfc"),
    "bearer-tab": (b"Authorization", b"Bearer sk-\tx"),
    "bearer-huge": (b"Authorization", b"Bearer " + b"k" * 6000),
    "basic": (b"Authorization", b"Basic dXNlcjpwYXNz"),
    "x-api-key-ff": (b"x-api-key", MASTER_KEY.encode() + b"\xff"),
    "x-api-key-utf8": (b"x-api-key", "sk-ключ".encode()),
}


@pytest.mark.parametrize("kind", sorted(BAD_AUTH))
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens", "/admin/config"])
def test_undecodable_or_wrong_keys_are_401_without_a_traceback(gw, path, kind):
    name, value = BAD_AUTH[kind]
    body = json.dumps(_valid_body(path)).encode()
    method = "GET" if path.startswith("/admin") else "POST"
    req = head_bytes(path, {"Content-Type": "application/json", name.decode(): value}, len(body)) + body
    req = req.replace(b"POST ", method.encode() + b" ", 1)
    status, _, raw = raw_request(gw.port, req)
    assert status == 401, raw
    assert assert_envelope(path, raw)
    assert MASTER_KEY.encode() not in raw and b"\xff" not in raw
    no_tracebacks(gw)


# ---------------------------------------------------------------------------- encodings and sizes
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
@pytest.mark.parametrize(
    ("encoding", "data"),
    [("gzip", b"\x1f\x8b\x08\x00garbage, not a deflate stream"), ("deflate", b"\xff\xfe not deflate")],
)
def test_corrupt_compressed_bodies_are_400(gw, path, encoding, data):
    status, _, raw = http(
        "POST", gw.base_url + path, body=data, headers=_headers(path, **{"Content-Encoding": encoding})
    )
    assert status == 400 and f"body is not valid {encoding}" in assert_envelope(path, raw), raw


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/messages"])
@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "x-unknown", "gzip, br"])
def test_undecoded_encodings_are_415_naming_the_supported_ones(gw, path, encoding):
    status, _, raw = http(
        "POST", gw.base_url + path, body=b"\x00\x01\x02", headers=_headers(path, **{"Content-Encoding": encoding})
    )
    assert status == 415, raw
    msg = assert_envelope(path, raw)
    assert "gzip or deflate" in msg and "Brotli" not in msg, msg


@pytest.mark.parametrize(
    "encode", [gzip.compress, zlib.compress, lambda b: zlib.compress(b)[2:-4]], ids=["gzip", "deflate", "raw-deflate"]
)
def test_compressed_bodies_are_served(gw, encode):
    path = "/v1/chat/completions"
    body = encode(json.dumps(_valid_body(path)).encode())
    enc = "gzip" if encode is gzip.compress else "deflate"
    status, _, raw = http("POST", gw.base_url + path, body=body, headers=_headers(path, **{"Content-Encoding": enc}))
    assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"], raw


def test_a_gzip_bomb_is_413_and_costs_at_most_the_limit(gw):
    """128 MB of zeros in ~130 KB of gzip: refused once 1 MB is decompressed; the peak RSS barely moves."""
    path = "/v1/chat/completions"
    bomb = gzip_of(b'{"messages": "', b"0" * (1 << 20), 128, b'"}')
    assert len(bomb) < LIMIT_MB << 20
    before = peak_rss_kb(gw.proc.pid)
    status, _, raw = http("POST", gw.base_url + path, body=bomb, headers=_headers(path, **{"Content-Encoding": "gzip"}))
    assert status == 413, raw
    msg = assert_envelope(path, raw)
    assert "decompressed" in msg and "server.max_body_mb" in msg, msg
    grown_mb = (peak_rss_kb(gw.proc.pid) - before) / 1024
    assert grown_mb < 48, f"peak RSS grew {grown_mb:.0f} MB for a {LIMIT_MB} MB limit"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_content_length_over_the_limit_is_413_before_the_body_is_sent(gw, path):
    """Only the head is sent: the answer must come without a byte of the 100 MB body."""
    head = head_bytes(path, _headers(path), 100 << 20)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        s.sendall(head)
        status, headers, raw = read_response(s)
    assert status == 413, raw
    assert "server.max_body_mb" in assert_envelope(path, raw)
    assert headers.get("connection", "").lower() == "close"  # the rest of the body is not waited for


def test_a_chunked_body_is_read_only_up_to_the_limit(gw):
    """64 MB sent chunked against a 1 MB limit: 413 while it is still being sent, and the peak RSS barely moves."""
    path = "/v1/chat/completions"
    head = head_bytes(path, {**_headers(path), "Transfer-Encoding": "chunked"}, None)
    piece = b"x" * 65536
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    before = peak_rss_kb(gw.proc.pid)
    sent = 0
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        start = b'{"messages": "'
        s.sendall(head + b"%x\r\n" % len(start) + start + b"\r\n")
        s.setblocking(False)
        pending = memoryview(chunk)
        while sent < 64 << 20:
            readable, writable, _ = select.select([s], [s], [], 30)
            if readable:  # the answer came while the body was still being sent
                break
            assert writable, "the gateway neither read nor answered for 30 s"
            try:
                n = s.send(pending)
            except BlockingIOError:
                continue
            sent += n
            pending = pending[n:] or memoryview(chunk)
        s.setblocking(True)
        status, _, raw = read_response(s)
    assert status == 413 and "server.max_body_mb" in assert_envelope(path, raw), raw
    assert sent < 64 << 20, "the whole 64 MB went in before any answer"
    grown_mb = (peak_rss_kb(gw.proc.pid) - before) / 1024
    assert grown_mb < 48, f"peak RSS grew {grown_mb:.0f} MB for a {LIMIT_MB} MB limit"


def test_error_bodies_do_not_echo_request_bytes(gw):
    path = "/v1/chat/completions"
    secret = "sk-caller-secret-in-a-body-0123456789"
    for body, headers in [
        (b'{"messages": [' + secret.encode() + b"]}", _headers(path)),  # invalid JSON around a secret
        (secret.encode(), _headers(path, **{"Content-Encoding": "gzip"})),
        (secret.encode(), _headers(path, **{"Content-Encoding": secret})),
    ]:
        status, _, raw = http("POST", gw.base_url + path, body=body, headers=headers)
        assert 400 <= status < 500 and secret.encode() not in raw, raw


# ---------------------------------------------------------------------------- auth throttling
def test_failed_keys_are_throttled_per_address_and_a_good_key_still_works(standins, gateway):
    cfg = tiered_config(standins(name="local", models=["llama-8b"]), None)
    cfg["auth"]["max_failures_per_minute"] = 3  # one more every 20 s: the test has that long between attempts
    gw = gateway(cfg)
    bad = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="sk-wrong", max_retries=0)
    for _ in range(3):
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="auto", messages=MSG)
    with pytest.raises(openai.RateLimitError) as ei:
        bad.chat.completions.create(model="auto", messages=MSG)
    assert ei.value.body["code"] == "auth_throttled", ei.value.body
    assert "auth.max_failures_per_minute" in ei.value.body["message"]
    assert 1 <= int(ei.value.response.headers["Retry-After"]) <= 20
    # the Anthropic surface answers in its own envelope, and a missing key counts as a failure too
    status, headers, raw = http("POST", f"{gw.base_url}/v1/messages", body=b"{}", headers={})
    assert status == 429 and json.loads(raw)["error"]["type"] == "rate_limit_error" and headers["Retry-After"]
    # the valid key, from the same address, is served at once
    good = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    assert good.chat.completions.create(model="auto", messages=MSG).choices[0].message.content
    a = anthropic.Anthropic(base_url=gw.base_url, api_key=MASTER_KEY, max_retries=0)
    assert a.messages.create(model="auto", max_tokens=16, messages=MSG).content
    metrics = http("GET", f"{gw.base_url}/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})[2].decode()
    assert 'tiergate_auth_failures_total{outcome="refused"} 3.0' in metrics, metrics
    assert 'tiergate_auth_failures_total{outcome="throttled"} 2.0' in metrics, metrics


# ---------------------------------------------------------------------------- /admin/config
def test_admin_config_shows_the_effective_config_with_secrets_masked(gw):
    status, _, raw = http("GET", f"{gw.base_url}/admin/config", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert status == 200, raw
    got = json.loads(raw)
    assert MASTER_KEY.encode() not in raw and CHEAP_KEY.encode() not in raw
    assert got["config"]["auth"]["master_key"] == "**********"
    assert got["config"]["server"]["max_body_mb"] == LIMIT_MB
    assert got["config"]["providers"]["cheapco"]["api_key"] == "**********"
    assert got["tiers"] == {"0": ["local-8b"], "1": ["cheap"]} and got["aliases"] == {"local/fast": ["local-8b"]}
    # a non-master key is refused, in the same envelope
    status, _, raw = http("GET", f"{gw.base_url}/admin/config", headers={"Authorization": "Bearer sk-nope"})
    assert status == 401 and assert_envelope("/admin/config", raw)


def test_the_module_gateway_logged_no_traceback(gw):
    no_tracebacks(gw)
