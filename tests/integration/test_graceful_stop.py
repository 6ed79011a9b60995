"""SIGTERM: stop accepting, answer what is in flight within server.drain_timeout_s, cut and record the rest.

Before the drain (tiergate.client_protocol.ConnectionGate.drain) a stream in
flight held the process for 121 s and was recorded as "client closed the
connection", and a request sent on a kept-alive connection at the moment of
the signal met a closed connection.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from http.client import HTTPConnection, HTTPResponse

from procs import MASTER_KEY, tiered_config, wait_until

STREAM = json.dumps({"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
CHAT = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hello"}]}).encode()
HEADERS = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
MARGIN = 15.0  # start-up of the cut, the ledger flush and a loaded host; the drain times are the point


def config(standin, drain_timeout_s: float) -> dict:
    cfg = tiered_config(standin, None)
    cfg["server"] = {"drain_timeout_s": drain_timeout_s}
    return cfg


class StreamReader:
    """A raw-socket streaming request whose bytes a thread keeps reading until the server closes."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        head = "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
        self.sock.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n{head}Content-Length: {len(STREAM)}\r\n\r\n".encode()
            + STREAM
        )
        self.data = b""
        self.closed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.data += chunk
        except OSError:
            pass
        self.closed.set()

    def wait_for(self, needle: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.data:
            assert time.monotonic() < deadline and not self.closed.is_set(), self.data[-300:]
            time.sleep(0.05)


def sigterm_and_wait(gw, timeout: float) -> float:
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(timeout) == 0
    return time.monotonic() - t0


def test_a_stream_longer_than_the_drain_is_cut_and_recorded_as_cut_by_shutdown(standins, gateway):
    drain = 3.0
    slow = standins(name="local", models=["llama-8b"], chunks=600, chunk_delay=0.1)  # a minute-long stream
    gw = gateway(config(slow, drain))
    client = StreamReader(gw.port)
    client.wait_for(b"data: ")
    elapsed = sigterm_and_wait(gw, drain + MARGIN + 10)
    assert drain - 0.2 <= elapsed <= drain + MARGIN, elapsed  # answered for the drain time, then cut
    assert client.closed.wait(10)
    assert b"cut by shutdown" in client.data and b"[DONE]" not in client.data  # told in-band why it ends
    rows = gw.ledger_rows()
    assert [(r["status"], r["error"][:15]) for r in rows] == [(503, "cut by shutdown")]


def test_a_stream_that_ends_within_the_drain_is_answered_whole(standins, gateway):
    drain = 30.0
    slow = standins(name="local", models=["llama-8b"], chunks=5, chunk_delay=1.0)  # about 5 s
    gw = gateway(config(slow, drain))
    client = StreamReader(gw.port)
    client.wait_for(b"data: ")
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    client.wait_for(b"[DONE]", timeout=drain)
    client.sock.close()
    assert gw.proc.wait(drain + MARGIN) == 0
    assert time.monotonic() - t0 < drain  # it ended with its last request, not with the drain time
    rows = gw.ledger_rows()
    assert [(r["status"], r["error"]) for r in rows] == [(200, None)]


def test_requests_on_kept_alive_connections_at_sigterm_are_all_answered(standins, gateway):
    gw = gateway(config(standins(name="local", models=["llama-8b"]), 25.0))
    conns = [HTTPConnection("127.0.0.1", gw.port, timeout=30) for _ in range(8)]
    for c in conns:
        c.request("POST", "/v1/chat/completions", body=CHAT, headers=HEADERS)
        r = c.getresponse()
        assert r.status == 200 and r.read()
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    for c in conns:  # on their way as the signal lands: each must be answered, not met by a closed socket
        c.request("POST", "/v1/chat/completions", body=CHAT, headers=HEADERS)
    answers = []
    for c in conns:
        r = c.getresponse()
        answers.append((r.status, r.getheader("Connection")))
        r.read()
    assert [a[0] for a in answers] == [200] * len(conns), answers
    for c in conns:
        c.close()
    assert gw.proc.wait(MARGIN) == 0
    assert time.monotonic() - t0 < MARGIN  # nothing in flight: no waiting out the 25 s drain
    assert len(gw.ledger_rows("status = 200")) == 2 * len(conns)


def test_a_request_that_arrives_during_the_drain_is_answered_with_connection_close(standins, gateway):
    """Half a head before the signal, the rest once the drain has begun (its log line): no race with the signal."""
    cfg = config(standins(name="local", models=["llama-8b"]), 25.0)
    cfg["server"]["header_timeout_s"] = 60
    gw = gateway(cfg)
    conns = [HTTPConnection("127.0.0.1", gw.port, timeout=30) for _ in range(4)]
    raw = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
        + f"Content-Length: {len(CHAT)}\r\n\r\n"
    ).encode() + CHAT
    for c in conns:
        c.request("POST", "/v1/chat/completions", body=CHAT, headers=HEADERS)
        r = c.getresponse()
        assert r.status == 200 and r.getheader("Connection") is None and r.read()  # kept alive
        c.sock.sendall(raw[:40])
    gw.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: any("tiergate stopping" in ln for ln in gw.log), timeout=30)
    for c in conns:
        c.sock.sendall(raw[40:])
    for c in conns:
        r = HTTPResponse(c.sock)  # http.client did not send this one itself
        r.begin()
        assert (r.status, r.getheader("Connection")) == (200, "close") and r.read()
        c.close()
    assert gw.proc.wait(MARGIN) == 0


def test_an_idle_gateway_exits_promptly_and_says_what_it_does(standins, gateway):
    gw = gateway(config(standins(name="local", models=["llama-8b"]), 25.0))
    idle = socket.create_connection(("127.0.0.1", gw.port), timeout=10)  # a kept-open socket that sends nothing
    elapsed = sigterm_and_wait(gw, MARGIN)
    assert elapsed < MARGIN
    assert idle.recv(1) == b""
    assert any("answering requests in flight (up to 25 s)" in ln for ln in gw.log), gw.log[-5:]


def test_the_systemd_unit_waits_longer_than_the_drain_and_allows_the_connections():
    """The shipped unit must not SIGKILL a replica mid-drain, nor cap descriptors below max_connections."""
    import re
    from pathlib import Path

    from tiergate.client_protocol import CUT_WAIT_S
    from tiergate.config.schema import ServerConfig

    unit = (Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "tiergate@.service").read_text()
    stop_s = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1))
    nofile = int(re.search(r"^LimitNOFILE=(\d+)$", unit, re.M).group(1))
    defaults = ServerConfig()
    assert stop_s >= defaults.drain_timeout_s + CUT_WAIT_S + 5  # and a few seconds to flush the ledger
    assert nofile >= 4 * defaults.max_connections  # clients, refusals, upstream sockets, the ledger
