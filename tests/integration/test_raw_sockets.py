"""Hostile clients on raw sockets: slow, silent, half-sent, malformed, too many (tiergate.client_protocol).

Deadlines are 2-3 s in these configs; each test waits up to the deadline plus
10 s for the close, and checks it came no earlier than the deadline (closing
early would be as wrong as never). Nothing here depends on a sub-second timing.
"""

from __future__ import annotations

import json
import re
import socket
import time
from http.client import HTTPResponse

import pytest

from procs import MASTER_KEY, http, tiered_config, wait_until

DEADLINE = 2.0
MARGIN = 10.0
# keep-alive far off: aiohttp's own idle timer (keep-alive + header deadline) must not be what closes a socket here
SERVER = {"header_timeout_s": DEADLINE, "body_timeout_s": DEADLINE, "keepalive_timeout_s": 60}
CHAT = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hello"}]}).encode()
SECRET = "sk-do-not-echo-4242"


def config(standin, **server) -> dict:
    cfg = tiered_config(standin, None)
    cfg["server"] = {**SERVER, **server}
    return cfg


def connect(gw) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.port), timeout=10)


def head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: tiergate", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chat_head(**extra: str) -> bytes:
    return head(
        "POST",
        "/v1/chat/completions",
        {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json", **extra},
    )


def wait_closed(sock: socket.socket, started: float, within: float) -> tuple[float, bytes]:
    """Read until the server closes: (seconds since ``started``, every byte it sent). Fails if still open."""
    data = b""
    while True:
        remaining = started + within - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"still open {within:g} s after the start; received {data[:200]!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        except TimeoutError:
            continue
        if not chunk:
            return time.monotonic() - started, data
        data += chunk


def response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    resp = HTTPResponse(sock)
    resp.begin()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def metric(gw, name: str) -> float:
    _, _, raw = http("GET", f"{gw.base_url}/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    total = 0.0
    for line in raw.decode().splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def gw(standins, gateway):
    return gateway(config(standins(name="local", models=["llama-8b"])))


def test_a_silent_socket_is_closed_by_the_header_deadline(gw):
    s, t0 = connect(gw), time.monotonic()
    elapsed, data = wait_closed(s, t0, DEADLINE + MARGIN)
    assert data == b"" and elapsed >= DEADLINE - 0.2
    assert metric(gw, 'tiergate_client_timeouts_total{phase="header"}') >= 1


def test_half_a_header_is_closed_by_the_header_deadline(gw):
    s, t0 = connect(gw), time.monotonic()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: tiergate\r\nAuthorization: Bear")
    elapsed, _ = wait_closed(s, t0, DEADLINE + MARGIN)
    assert elapsed >= DEADLINE - 0.2


def test_a_header_sent_a_line_a_second_is_closed_by_the_header_deadline(standins, gateway):
    """Slowloris: each line comes in time for any per-read timeout, the head never ends."""
    deadline = 3.0
    gw = gateway(config(standins(name="local", models=["llama-8b"]), header_timeout_s=deadline))
    s, t0 = connect(gw), time.monotonic()
    s.sendall(b"GET /health HTTP/1.1\r\n")
    s.settimeout(1.0)
    while time.monotonic() - t0 < deadline + MARGIN:
        try:
            s.sendall(b"X-Slow: 1\r\n")
            if s.recv(65536) == b"":
                break
        except TimeoutError:
            continue  # still open: one more line
        except (BrokenPipeError, ConnectionResetError):
            break
    else:
        pytest.fail("a head that never ends kept its connection open")
    elapsed = time.monotonic() - t0
    assert deadline - 0.2 <= elapsed <= deadline + MARGIN


def test_an_idle_keepalive_connection_is_closed_by_the_keepalive_deadline(standins, gateway):
    keepalive = 3.0  # and a header deadline far off: the idle time after a response is the keep-alive one
    gw = gateway(
        config(standins(name="local", models=["llama-8b"]), keepalive_timeout_s=keepalive, header_timeout_s=60)
    )
    s = connect(gw)
    s.sendall(head("GET", "/health"))
    status, headers, _ = response(s)
    assert status == 200 and headers.get("connection", "").lower() != "close"
    t0 = time.monotonic()
    elapsed, data = wait_closed(s, t0, keepalive + MARGIN)
    assert data == b"" and elapsed >= keepalive - 0.2
    assert metric(gw, 'tiergate_client_timeouts_total{phase="idle"}') >= 1


def test_a_body_shorter_than_its_content_length_gets_408_and_a_close(gw):
    s = connect(gw)
    s.sendall(chat_head(**{"Content-Length": str(len(CHAT))}) + CHAT[:10])
    t0 = time.monotonic()
    elapsed, data = wait_closed(s, t0, DEADLINE + MARGIN)
    assert elapsed >= DEADLINE - 0.2
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "request_timeout" and "server.body_timeout_s" in body["error"]["message"]
    assert CHAT[:10] not in data
    assert metric(gw, 'tiergate_client_timeouts_total{phase="body"}') >= 1


def test_a_chunked_body_never_ended_gets_408_and_a_close(gw):
    s = connect(gw)
    s.sendall(chat_head(**{"Transfer-Encoding": "chunked"}) + b"%x\r\n%s\r\n" % (20, CHAT[:20]))
    t0 = time.monotonic()
    elapsed, data = wait_closed(s, t0, DEADLINE + MARGIN)
    assert elapsed >= DEADLINE - 0.2
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]


def test_a_body_that_arrives_whole_is_served(gw):
    """The deadlines bound slow clients, not ordinary ones: two requests, one keep-alive connection."""
    s = connect(gw)
    for _ in range(2):
        s.sendall(chat_head(**{"Content-Length": str(len(CHAT))}) + CHAT)
        status, _, body = response(s)
        assert status == 200 and json.loads(body)["choices"]
    s.close()


def read_answer(sock: socket.socket, buf: bytes) -> tuple[bytes, list[tuple[str, str]], bytes, bytes]:
    """One answer off a socket by its Content-Length: (status line, headers in order with repeats, body,
    the bytes after it)."""
    sock.settimeout(30)
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, buf[:300]
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    status, *lines = head.decode("ascii").split("\r\n")
    headers = [(k.lower(), v) for k, _, v in (ln.partition(": ") for ln in lines)]
    length = int(dict(headers)["content-length"])
    while len(buf) < length:
        chunk = sock.recv(65536)
        assert chunk, buf[:300]
        buf += chunk
    return status.encode(), headers, buf[:length], buf[length:]


def test_pipelined_chat_requests_get_whole_answers_in_order(gw):
    """A routed answer is written in one piece (api/plain_reply.py): each is one status line, one
    Content-Length that is its body's, the gateway's headers, and nothing of the next answer; the last
    request asks to close and is told so, then the socket closes."""
    s = connect(gw)
    ids = ["pipe-1", "pipe-2", "pipe-3"]
    reqs = [chat_head(**{"Content-Length": str(len(CHAT)), "X-Request-ID": i}) + CHAT for i in ids[:2]]
    reqs.append(chat_head(**{"Content-Length": str(len(CHAT)), "X-Request-ID": ids[2], "Connection": "close"}) + CHAT)
    s.sendall(b"".join(reqs))
    buf = b""
    for i, rid in enumerate(ids):
        status, headers, body, buf = read_answer(s, buf)
        names = [k for k, _ in headers]
        h = dict(headers)
        assert status == b"HTTP/1.1 200 OK", status
        assert json.loads(body)["choices"], body
        assert names.count("content-length") == 1 and h["content-length"] == str(len(body))
        assert h["x-request-id"] == rid and h["content-type"].startswith("application/json")
        assert {"date", "server", "x-tiergate-deployment", "x-tiergate-tier", "x-tiergate-cost-usd"} <= set(names)
        assert h.get("connection") == ("close" if i == 2 else None), headers
    assert buf == b""
    elapsed, rest = wait_closed(s, time.monotonic(), MARGIN)
    assert rest == b""


def test_an_http_10_chat_request_is_answered_the_way_aiohttp_answers_it(gw):
    """HTTP/1.0 is not written in one piece: aiohttp's own path answers it, and closes the connection."""
    s = connect(gw)
    s.sendall(chat_head(**{"Content-Length": str(len(CHAT))}).replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1) + CHAT)
    elapsed, data = wait_closed(s, time.monotonic(), MARGIN)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ") and json.loads(body)["choices"], data[:300]


# ---------------------------------------------------------------------------- malformed HTTP
MALFORMED = {
    "request_line": b"GARBAGE\x01 /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer "
    + SECRET.encode()
    + b"\r\n\r\n",
    "header": b"GET /health HTTP/1.1\r\nHost: tiergate\r\nAuthorization: Bearer "
    + SECRET.encode()
    + b"\r\nX-Injected: a\rb\r\n\r\n",
    "header_name": b"GET /health HTTP/1.1\r\nHost: tiergate\r\nBad Header: " + SECRET.encode() + b"\r\n\r\n",
    "too_long": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nAuthorization: Bearer " + SECRET.encode() + b"\r\n\r\n",
    "framing": b"POST /v1/chat/completions HTTP/1.1\r\nHost: tiergate\r\nAuthorization: Bearer "
    + SECRET.encode()
    + b"\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_http_gets_a_json_400_that_echoes_nothing(gw, kind):
    s, t0 = connect(gw), time.monotonic()
    s.sendall(MALFORMED[kind])
    _, data = wait_closed(s, t0, MARGIN)
    assert re.match(rb"HTTP/1\.[01] 400 ", data), data[:300]  # aiohttp answers a head it cannot parse as 1.0
    head_part, body = data.split(b"\r\n\r\n", 1)
    assert b"application/json" in head_part and b"connection: close" in head_part.lower()
    err = json.loads(body)["error"]
    assert err["code"] == "malformed_http" and err["message"].startswith("malformed HTTP request: ")
    assert SECRET.encode() not in data and b"GARBAGE" not in data and b"aaaa" not in data and b"Injected" not in data


def test_malformed_http_is_counted_and_logged_once_per_address_without_a_traceback(gw):
    for _ in range(5):
        s, t0 = connect(gw), time.monotonic()
        s.sendall(MALFORMED["request_line"])
        wait_closed(s, t0, MARGIN)
    assert wait_until(lambda: metric(gw, "tiergate_malformed_requests_total") >= 5, timeout=10)
    status, _, _ = http("GET", f"{gw.base_url}/health")
    assert status == 200  # and the gateway serves on
    logged = [ln for ln in gw.log if "malformed HTTP request from" in ln]
    assert len(logged) == 1, gw.log[-20:]
    assert not [ln for ln in gw.log if "Traceback" in ln or "Error handling request" in ln], gw.log[-40:]
    assert not [ln for ln in gw.log if SECRET in ln]


# ---------------------------------------------------------------------------- server.max_connections
LIMIT = 16


def test_idle_sockets_beyond_max_connections_cannot_keep_others_out(standins, gateway):
    """Twice the limit in silent sockets: the longest-waiting ones are closed, /health and a request still work."""
    gw = gateway(config(standins(name="local", models=["llama-8b"]), max_connections=LIMIT, header_timeout_s=120))
    idle = [connect(gw) for _ in range(2 * LIMIT)]
    for _ in range(3):
        status, _, _ = http("GET", f"{gw.base_url}/health", timeout=10)
        assert status == 200
        status, _, body = http(
            "POST",
            f"{gw.base_url}/v1/chat/completions",
            body=CHAT,
            headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
            timeout=10,
        )
        assert status == 200 and json.loads(body)["choices"]
    # the first half were evicted for the second half, the oldest of those for the requests above
    assert wait_until(lambda: closed_by_server(idle) >= LIMIT, timeout=10), closed_by_server(idle)
    assert metric(gw, 'tiergate_connections_shed_total{action="evicted"}') >= LIMIT
    for s in idle:
        s.close()


def closed_by_server(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has closed (each read without waiting)."""
    import select

    closed = 0
    for s in socks:
        if not select.select([s], [], [], 0)[0]:
            continue
        try:
            closed += s.recv(1, socket.MSG_PEEK) == b""
        except ConnectionResetError:
            closed += 1
    return closed


def test_when_every_connection_is_busy_a_new_one_gets_503_with_retry_after(standins, gateway):
    slow = standins(name="local", models=["llama-8b"], chunks=600, chunk_delay=0.1)  # a minute-long stream
    gw = gateway(config(slow, max_connections=LIMIT))
    stream = json.dumps({"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    busy = []
    for _ in range(LIMIT):
        s = connect(gw)
        s.sendall(chat_head(**{"Content-Length": str(len(stream))}) + stream)
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")  # streaming: the connection has a request in flight
        busy.append(s)
    s = connect(gw)
    s.sendall(head("GET", "/health"))
    status, headers, body = response(s)
    assert status == 503 and headers["retry-after"] == "1" and headers["connection"].lower() == "close"
    assert json.loads(body)["error"]["code"] == "server_busy"
    assert metric_when_free(gw, busy) >= 1


def metric_when_free(gw, busy: list[socket.socket]) -> float:
    """Hang up the busy clients; once their streams notice, new connections are served again."""
    for s in busy:
        s.close()
    assert wait_until(lambda: http("GET", f"{gw.base_url}/health", timeout=10)[0] == 200, timeout=30)
    return metric(gw, 'tiergate_connections_shed_total{action="refused"}')


def test_a_request_that_expects_100_continue_gets_it_and_then_its_answer(gw):
    """Such a request goes through aiohttp's router (its expect handler writes the interim 100), not the
    protocol's static route lookup; the answer follows on the same connection, and so does the next one."""
    s = connect(gw)
    s.sendall(chat_head(**{"Content-Length": str(len(CHAT)), "Expect": "100-continue"}))
    s.settimeout(30)
    interim = b""
    while b"\r\n\r\n" not in interim:
        chunk = s.recv(4096)
        assert chunk, interim
        interim += chunk
    assert interim.startswith(b"HTTP/1.1 100 "), interim[:200]
    s.sendall(CHAT)
    status, _, body = response(s)
    assert status == 200 and json.loads(body)["choices"], body
    s.sendall(chat_head(**{"Content-Length": str(len(CHAT))}) + CHAT)
    status, _, body = response(s)
    assert status == 200 and json.loads(body)["choices"], body
    s.close()


def test_the_protocol_hooks_exist_in_the_installed_aiohttp():
    """client_protocol reaches into aiohttp's RequestHandler: a rename there must fail here, loudly."""
    from aiohttp.web_protocol import RequestHandler

    slots = set()
    for cls in RequestHandler.__mro__:
        slots.update(getattr(cls, "__slots__", ()))
    for name in ("_messages", "_request_factory", "_request_handler", "_current_request", "_lingering_time"):
        assert name in slots, name
    for name in ("_request_in_progress", "_task_handler", "_waiter", "_upgraded", "_paused"):
        assert name in slots, name
    from aiohttp.web_request import Request

    assert "_match_info" in Request.__slots__ or "_match_info" in _source(Request)  # set by the static lookup
    from aiohttp import web

    assert "self._message = message" in _source(web.BaseRequest) and "def _finish(" in _source(web.BaseRequest)

    assert "self._kwargs = kwargs" in _source(web.Server)  # the app's handler_args reach our handlers too
    assert re.search(r"def handle_error\(", _source(RequestHandler)) and "def finish_response(" in _source(
        RequestHandler
    )


def _source(cls) -> str:
    import inspect

    return inspect.getsource(cls)


def test_the_apps_handler_args_reach_the_connections(gw):
    """create_app turns aiohttp's decompression off (api/ decompresses, bounded): our handlers must honour it,
    or a gzip body would be inflated twice."""
    import gzip

    packed = gzip.compress(CHAT)
    s = connect(gw)
    s.sendall(chat_head(**{"Content-Length": str(len(packed)), "Content-Encoding": "gzip"}) + packed)
    status, _, body = response(s)
    assert status == 200 and json.loads(body)["choices"], body
