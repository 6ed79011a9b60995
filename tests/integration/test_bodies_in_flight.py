"""Issue 13: request bodies read at once share one cap per worker (server.max_body_in_flight_mb).

Each body is bounded by server.max_body_mb, but eight oversized chunked
bodies sent at once each got read up to that limit before their 413: the
gateway's RSS peaked at 172 MB. Raw sockets send them here, as an attacker
would; the peak is the kernel's high-water mark of the gateway process
(VmHWM), so no sampling can miss it.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import select
import socket
from pathlib import Path

import openai
import pytest

from procs import MASTER_KEY, tiered_config

RSS_LIMIT_MB = 150  # issue 13's target
HEADERS = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
PATH = "/v1/chat/completions"
PIECE = b"x" * 65536


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def head(extra: dict[str, str]) -> bytes:
    lines = [f"POST {PATH} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in {**HEADERS, **extra}.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"connection closed before a response: {buf!r}"
        buf += chunk
    top, _, body = buf.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def send(port: int, total: int, *, chunked: bool) -> tuple[int, dict[str, str], bytes]:
    """``total`` bytes of a JSON string's inside, as fast as the gateway reads them, until it answers."""
    start = b'{"model": "auto", "messages": "'
    if chunked:
        first = head({"Transfer-Encoding": "chunked"}) + b"%x\r\n" % len(start) + start + b"\r\n"
        unit = b"%x\r\n" % len(PIECE) + PIECE + b"\r\n"
    else:
        first = head({"Content-Length": str(len(start) + total + 2)}) + start
        unit = PIECE
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(first)
        s.setblocking(False)
        sent, pending = 0, memoryview(unit)
        while sent < total:
            readable, writable, _ = select.select([s], [s], [], 60)
            if readable:  # answered while the body was still being sent
                break
            assert writable, "the gateway neither read nor answered for 60 s"
            try:
                n = s.send(pending)
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break  # it answered and closed; the answer is still in our receive buffer
            sent += n
            pending = pending[n:] or memoryview(unit)
        s.setblocking(True)
        if sent >= total:
            s.sendall(b'"}' if not chunked else b'2\r\n"}\r\n0\r\n\r\n')
        return read_response(s)


@pytest.fixture
def gw(standins, gateway):
    up = standins(name="local", models=["llama-8b"])
    g = gateway(tiered_config(up, None))  # server.max_body_mb 16 and max_body_in_flight_mb 32: the defaults
    c = openai.OpenAI(base_url=f"{g.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "warm"}])  # imports paid
    return g, c


def test_eight_oversized_chunked_bodies_at_once_stay_under_150_mb(gw):
    g, c = gw
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: send(g.port, 24 << 20, chunked=True), range(8)))
    peak = peak_rss_mb(g.proc.pid)
    statuses = sorted(status for status, _, _ in answers)
    assert set(statuses) <= {413, 503}, statuses
    assert 503 in statuses, f"eight 16 MB reads cannot fit a 32 MB cap, yet all were read: {statuses}"
    for status, headers, raw in answers:
        err = json.loads(raw)["error"]  # the OpenAI client's own envelope
        assert set(err) == {"message", "type", "param", "code"}, err
        if status == 503:
            assert "server.max_body_in_flight_mb" in err["message"] and err["code"] == "bodies_busy", err
            assert headers["retry-after"] == "1"
        else:
            assert "server.max_body_mb" in err["message"], err
    assert peak < RSS_LIMIT_MB, f"peak RSS {peak:.0f} MB"
    # nothing stays counted: a full 15 MB body, and the next small one, are read and answered
    status, _, raw = send(g.port, 15 << 20, chunked=False)
    assert status == 400 and "messages" in json.loads(raw)["error"]["message"], raw  # read whole, then judged
    assert c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}]).choices


def test_declared_bodies_past_the_cap_are_refused_before_they_are_read(gw):
    g, c = gw
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: send(g.port, 15 << 20, chunked=False), range(8)))
    statuses = sorted(status for status, _, _ in answers)
    assert set(statuses) <= {400, 503} and 400 in statuses, statuses  # 400: read whole, then judged (not JSON)
    assert peak_rss_mb(g.proc.pid) < RSS_LIMIT_MB
    assert c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}]).choices


def test_large_bodies_are_read_at_the_configured_pace_and_whole(standins, gateway):
    """Past its first MiB a body is read at server.large_body_mb_per_s for all bodies together, so a flood of
    large ones cannot take the worker from its other clients; a large body is still read to its end."""
    import time

    up = standins(name="local", models=["llama-8b"])
    cfg = tiered_config(up, None)
    cfg["server"] = {"large_body_mb_per_s": 2}
    g = gateway(cfg)
    t0 = time.monotonic()
    status, _, raw = send(g.port, 5 << 20, chunked=False)
    took = time.monotonic() - t0
    assert status == 400 and "messages" in json.loads(raw)["error"]["message"], raw  # read whole, then judged
    # 1 MiB free, 1 MiB of burst, then 3 MiB at 2 MiB/s: at least 1.5 s (on loopback unpaced: ~0.05 s)
    assert took >= 1.4, f"a 5 MiB body read in {took:.2f} s"
    t0 = time.monotonic()
    status, _, raw = send(g.port, 5 << 20, chunked=True)
    assert status == 400 and time.monotonic() - t0 >= 1.4, raw  # chunked bodies keep the same pace
    c = openai.OpenAI(base_url=f"{g.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    assert c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}]).choices
