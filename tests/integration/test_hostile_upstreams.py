"""A real gateway against stand-in upstreams that misbehave (issues 13 and 14).

Each case is a stand-in fault (tiergate.standins.hostile): an endless
stream, a stream without event ends at 1 MB/s, an oversized event, a
garbage 200 to a stream request, a 2 GB reply generated as it is sent,
absurd usage figures, a client that hangs up. Asserted from outside, as
an operator would see it: the gateway's RSS (/proc/<pid>/status), its
sockets to the upstream (/proc/<pid>/fd and net/tcp), the client's answer,
the ledger row, and other clients' requests served meanwhile.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from procs import MASTER_KEY, tiered_config, wait_until

RSS_LIMIT_MB = 150  # issue 13's target through the oversized, endless and 2 GB cases
MSG = [{"role": "user", "content": "extract the date from: due 2026-12-01"}]
OPENAI_HEADERS = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
ANTHROPIC_HEADERS = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01", "Content-Type": "application/json"}


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@contextmanager
def rss_peak(pid: int) -> Iterator[list[float]]:
    """Samples the process's RSS every 20 ms while the block runs; yields [peak] (filled in as it goes)."""
    peak = [rss_mb(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            try:
                peak[0] = max(peak[0], rss_mb(pid))
            except OSError:
                return

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield peak
    finally:
        done.set()
        t.join()


def sockets_to(pid: int, port: int) -> int:
    """How many established TCP connections process ``pid`` holds to ``port`` on this host."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    n = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for row in f:
                cols = row.split()
                if int(cols[2].rsplit(":", 1)[1], 16) == port and cols[3] == "01" and cols[9] in inodes:
                    n += 1
    return n


def post(gw, path: str, body: dict[str, Any], *, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=timeout)
    try:
        headers = ANTHROPIC_HEADERS if path.startswith("/v1/messages") else OPENAI_HEADERS
        conn.request("POST", path, json.dumps(body), headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def chat(gw, model: str, *, stream: bool = False) -> tuple[int, dict[str, str], bytes]:
    return post(gw, "/v1/chat/completions", {"model": model, "messages": MSG, "stream": stream})


class OpenStream:
    """A streaming request read event by event, which can hang up like a client that goes away."""

    def __init__(self, gw, path: str, body: dict[str, Any]) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=60)
        headers = ANTHROPIC_HEADERS if path.startswith("/v1/messages") else OPENAI_HEADERS
        self.conn.request("POST", path, json.dumps({**body, "stream": True}), headers)
        self.resp = self.conn.getresponse()
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}

    def event(self) -> bytes | None:
        """The next whole event, None at the end of the body."""
        lines = []
        while True:
            line = self.resp.readline()
            if not line:
                return b"".join(lines) or None
            if line in (b"\n", b"\r\n"):
                if lines:
                    return b"".join(lines)
                continue
            lines.append(line)

    def events(self) -> list[bytes]:
        out = []
        while (ev := self.event()) is not None:
            out.append(ev)
        return out

    def hang_up(self) -> None:
        self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.resp.close()
        self.conn.close()


class Others:
    """Other clients' plain requests, one after another in a thread, while a hostile case runs."""

    def __init__(self, gw, model: str) -> None:
        self.gw, self.model = gw, model
        self.results: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            status, _, _ = chat(self.gw, self.model)
            self.results.append((status, time.perf_counter() - t0))
            self._stop.wait(0.05)

    def __enter__(self) -> Others:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def assert_served(self) -> float:
        """Every request answered 200; returns their median latency (s)."""
        assert self.results, "no other request was made meanwhile"
        assert all(status == 200 for status, _ in self.results), self.results
        return statistics.median(t for _, t in self.results)


HOSTILE_LIMITS = {"max_response_mb": 4, "max_event_kb": 256, "stream_timeout_s": 4}


@pytest.fixture
def stack(standins, gateway):
    """cheap (tier 1, the hostile one, bounded tightly), frontier (tier 3, healthy), claude (anthropic, tier 4)."""
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    frontier = standins(name="frontier", models=["gpt-4o"])
    anthro = standins("anthropic", name="anthro", models=["claude-sonnet-4-5"])
    cfg = tiered_config(None, cheap, frontier, num_retries=0)
    cfg["providers"]["cheapco"].update(HOSTILE_LIMITS)
    cfg["providers"]["anthro"] = {"api": "anthropic-messages", "base_url": f"{anthro.base_url}/v1", **HOSTILE_LIMITS}
    cfg["deployments"].append(
        {
            "name": "claude",
            "provider": "anthro",
            "model": "claude-sonnet-4-5",
            "tier": 4,
            "context_window": 200000,
            "price": {"input_per_mtok": 3, "output_per_mtok": 15},
        }
    )
    cfg["budgets"] = [{"scope": "global", "window": "day", "limit_usd": 50}]
    gw = gateway(cfg)
    chat(gw, "frontier")  # warm: the first request pays for imports
    return gw, cheap, frontier, anthro


def rows(gw, where: str) -> list[dict[str, Any]]:
    wait_until(lambda: bool(gw.ledger_rows(where)), timeout=10)
    return gw.ledger_rows(where)


# -- replies and streams that would take the gateway's memory


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
def test_a_2gb_reply_costs_at_most_the_cap_and_the_next_candidate_answers(stack, declared):
    gw, cheap, frontier, _ = stack
    cheap.faults({"mode": "huge_reply", "size": 2 << 30, "declared": declared, "rate": 8 << 20})
    with rss_peak(gw.proc.pid) as peak, Others(gw, "frontier") as others:
        status, headers, body = chat(gw, "cheap")
    assert status == 200 and headers["x-tiergate-deployment"] == "frontier"
    assert json.loads(body)["choices"][0]["message"]["content"].startswith("[frontier]")
    assert peak[0] < RSS_LIMIT_MB, peak
    others.assert_served()
    assert wait_until(lambda: cheap.control("streams")[0]["ended"] is not None, timeout=10)
    assert cheap.control("streams")[0]["bytes"] < 64 << 20  # the gateway stopped reading at its cap
    attempt = rows(gw, "kind='attempt'")[0]
    assert attempt["deployment"] == "cheap" and "max_response_mb" in attempt["error"]


def test_an_endless_stream_ends_at_stream_timeout_s_with_an_error_event_and_a_row(stack):
    gw, cheap, _, _ = stack
    cheap.faults({"mode": "endless", "delay_s": 0.001})
    with rss_peak(gw.proc.pid) as peak, Others(gw, "frontier") as others:
        t0 = time.monotonic()
        s = OpenStream(gw, "/v1/chat/completions", {"model": "cheap", "messages": MSG})
        events = s.events()
        elapsed = time.monotonic() - t0
    assert s.headers["x-tiergate-deployment"] == "cheap"
    assert 3.5 < elapsed < 30, elapsed  # stream_timeout_s is 4
    assert len(events) > 100 and b"[DONE]" not in b"".join(events)
    last = json.loads(events[-1].removeprefix(b"data: "))
    assert "4 s deadline" in last["error"]["message"]
    assert peak[0] < RSS_LIMIT_MB, peak
    others.assert_served()
    row = rows(gw, "kind='request' AND deployment='cheap'")[0]
    assert row["status"] == 502 and "deadline" in row["error"]
    assert row["completion_tokens"] >= len(events) - 1 and row["usage_estimated"] == 1 and row["cost_usd"] > 0


@pytest.mark.parametrize("mode", ["no_boundary", "huge_event"])
def test_an_event_that_never_ends_or_is_too_big_fails_over_before_the_first_event(stack, mode):
    gw, cheap, _, _ = stack
    cheap.faults({"mode": mode, "rate": 1 << 20, "size": 8 << 20})
    with rss_peak(gw.proc.pid) as peak, Others(gw, "frontier") as others:
        s = OpenStream(gw, "/v1/chat/completions", {"model": "cheap", "messages": MSG})
        events = s.events()
    assert s.headers["x-tiergate-deployment"] == "frontier"
    assert events[-1] == b"data: [DONE]\n" and not any(b"yyyy" in e or b"xxxx" in e for e in events)
    assert peak[0] < RSS_LIMIT_MB, peak
    others.assert_served()
    assert wait_until(lambda: cheap.control("streams")[0]["ended"] is not None, timeout=10)  # upstream let go
    assert "max_event_kb" in rows(gw, "kind='attempt'")[0]["error"]


@pytest.mark.parametrize("mode", ["no_boundary", "huge_event"])
def test_an_event_that_never_ends_or_is_too_big_midway_ends_the_stream_in_band(stack, mode):
    gw, cheap, _, _ = stack
    cheap.faults({"mode": mode, "after_chunks": 3, "rate": 1 << 20, "size": 8 << 20})
    s = OpenStream(gw, "/v1/chat/completions", {"model": "cheap", "messages": MSG})
    events = s.events()
    assert s.headers["x-tiergate-deployment"] == "cheap"
    assert len(events) == 4 and "max_event_kb" in json.loads(events[-1][6:])["error"]["message"]
    assert not any(b"yyyy" in e or b"xxxx" in e for e in events)
    row = rows(gw, "kind='request' AND deployment='cheap'")[0]
    assert row["status"] == 502 and "max_event_kb" in row["error"] and row["completion_tokens"] >= 3


@pytest.mark.parametrize("ctype", ["text/event-stream", "application/octet-stream"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_garbage_200_to_a_stream_request_fails_over_and_no_byte_of_it_is_relayed(stack, ctype, path):
    gw, cheap, _, _ = stack
    cheap.faults({"mode": "garbage", "content_type": ctype, "size": 4096})
    body = {"model": "cheap", "max_tokens": 100, "messages": MSG}
    s = OpenStream(gw, path, body)
    raw = b"".join(s.events())
    assert s.headers["x-tiergate-deployment"] == "frontier"
    raw.decode("utf-8")  # every byte relayed is text: nothing of the random bytes
    assert all(line.startswith((b"data: ", b"event: ")) for line in raw.split(b"\n") if line)
    assert "protocol" in rows(gw, "kind='attempt'")[0]["error"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_garbage_midway_ends_the_stream_in_band_and_no_byte_of_it_is_relayed(stack, path):
    gw, cheap, _, _ = stack
    cheap.faults({"mode": "garbage", "after_chunks": 3, "size": 4096})
    s = OpenStream(gw, path, {"model": "cheap", "max_tokens": 100, "messages": MSG})
    raw = b"".join(s.events())
    assert s.headers["x-tiergate-deployment"] == "cheap"
    raw.decode("utf-8")
    assert all(line.startswith((b"data: ", b"event: ")) for line in raw.split(b"\n") if line)
    assert b"not an SSE event" in raw  # the client's error event says why its answer ends here
    row = rows(gw, "kind='request' AND deployment='cheap'")[0]
    assert row["status"] == 502 and "not an SSE event" in row["error"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_comment_first_stream_is_answered_with_a_real_first_event(stack, path):
    gw, cheap, _, _ = stack
    cheap.faults({"mode": "comment_first", "size": 3})
    s = OpenStream(gw, path, {"model": "cheap", "max_tokens": 100, "messages": MSG})
    events = s.events()
    first = events[0]
    assert first.startswith(b"event: message_start" if path == "/v1/messages" else b"data: {")
    assert s.headers["x-tiergate-deployment"] == "cheap"


# -- usage figures that cannot be believed


ABSURD = [1e300, -100000, "abc", None, True, {"n": 1}]


def test_absurd_usage_figures_are_counted_locally_and_never_reach_a_budget(stack):
    gw, cheap, _, anthro = stack
    asked = 0
    for value in ABSURD:
        for upstream, fields, model in (
            (cheap, {"prompt_tokens": value, "completion_tokens": value}, "cheap"),
            (anthro, {"input_tokens": value, "output_tokens": value}, "claude"),
        ):
            for stream in (False, True):
                upstream.faults({"mode": "usage", "usage": fields})
                if stream:
                    s = OpenStream(gw, "/v1/chat/completions", {"model": model, "messages": MSG})
                    events = s.events()
                    assert events[-1] == b"data: [DONE]\n", (value, model, events[-2:])
                else:
                    status, _, body = chat(gw, model)
                    assert status == 200, (value, model, body)
                    assert json.loads(body)["choices"][0]["message"]["content"]
                asked += 1
    assert chat(gw, "cheap")[0] == 200  # the budget was neither blown to $1e297 nor made negative
    assert wait_until(lambda: len(gw.ledger_rows("kind='request' AND deployment<>'frontier'")) == asked + 1)
    got = gw.ledger_rows("kind='request' AND deployment<>'frontier'")
    absurd, normal = got[:-1], got[-1]
    for row in absurd:
        assert row["status"] == 200 and row["usage_estimated"] == 1, row
        assert 0 <= row["prompt_tokens"] < 1000 and 0 <= row["completion_tokens"] < 1000, row
        assert math.isfinite(row["cost_usd"]) and 0 <= row["cost_usd"] < 0.01, row
    assert normal["usage_estimated"] == 0
    status, _, report = post(gw, "/v1/chat/completions", {"model": "frontier", "messages": MSG})
    assert status == 200


# -- clients that hang up


VARIANTS = [  # (client path, model): native OpenAI, native Anthropic, and both translations
    ("/v1/chat/completions", "cheap"),
    ("/v1/messages", "claude"),
    ("/v1/messages", "cheap"),
    ("/v1/chat/completions", "claude"),
]


@pytest.mark.parametrize("n", [50, 200])
def test_a_client_that_hangs_up_is_billed_for_what_was_generated(stack, n):
    gw, cheap, _, anthro = stack
    for i, (path, model) in enumerate(VARIANTS):
        upstream = cheap if model == "cheap" else anthro
        upstream.reset()
        upstream.faults({"mode": "endless", "delay_s": 0.002})
        s = OpenStream(gw, path, {"model": model, "max_tokens": 4000, "messages": MSG})
        received = 0
        while received < n:
            ev = s.event()
            assert ev is not None
            received += b"delta" in ev
        s.hang_up()
        assert wait_until(lambda up=upstream: up.control("streams")[0]["ended"] is not None, timeout=10)
        sent = upstream.control("streams")[0]["events"]
        assert wait_until(lambda i=i: len(gw.ledger_rows("kind='request' AND status=499")) == i + 1, timeout=10)
        row = gw.ledger_rows("kind='request' AND status=499")[-1]
        words = row["completion_tokens"]
        assert row["deployment"] == model and row["usage_estimated"] == 1 and row["error"]
        # each event carries one word of 6 to 8 bytes: at least what the client got, at most what was sent
        assert math.ceil(1.5 * n) <= words <= 2 * sent + 2, (path, model, words, n, sent)
        prompt_only = row["prompt_tokens"] * (0.15 if model == "cheap" else 3) / 1e6
        assert row["cost_usd"] > prompt_only


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_the_upstream_is_closed_within_seconds_of_a_hang_up_even_while_it_is_quiet(stack, path):
    """One event every 20 s: without watching the client, the gateway learns of the hang-up 20 s later."""
    gw, cheap, _, _ = stack
    cheap.faults({"mode": "endless", "delay_s": 20})
    s = OpenStream(gw, path, {"model": "cheap", "max_tokens": 100, "messages": MSG})
    assert s.event() is not None
    port = cheap.port
    assert sockets_to(gw.proc.pid, port) == 1
    t0 = time.monotonic()
    s.hang_up()
    assert wait_until(lambda: sockets_to(gw.proc.pid, port) == 0, timeout=15, interval=0.02)
    closed_after = time.monotonic() - t0
    assert closed_after < 3, closed_after  # the target is 1 s; generous on a busy machine
    row = rows(gw, "kind='request' AND status=499")[0]
    assert row["error"] == "client closed the connection"
    assert chat(gw, "frontier")[0] == 200
