"""Supervise one ``tiergate.local.llamacpp_server`` child process from asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO

import aiohttp

from tiergate.background import stop
from tiergate.core.errors import EngineStartError

_SRC_ROOT = Path(__file__).resolve().parents[2]  # directory containing the ``tiergate`` package
_BACKOFF_START_S, _BACKOFF_MAX_S = 0.5, 30.0
_STABLE_AFTER_S = 30.0  # a child that ran this long resets the backoff


class LlamaCppProcess:
    """One llama.cpp server subprocess serving the OpenAI API at :attr:`base_url`.

    ``port=None`` lets the child bind port 0; the port it reports is then pinned so
    restarts under ``supervise=True`` keep the same ``base_url``.
    """

    def __init__(
        self,
        *,
        gguf: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        ctx: int = 2048,
        threads: int = 1,
        parallel: int = 2,
        alias: str | None = None,
        extra_args: list[str] | None = None,
        log_path: Path | None = None,
        supervise: bool = False,
        max_restarts: int = 5,
    ) -> None:
        self.gguf = Path(gguf)
        self.host, self.port = host, port
        self.ctx, self.threads, self.parallel, self.alias = ctx, threads, parallel, alias
        self.extra_args = list(extra_args or [])
        self.supervise, self.max_restarts = supervise, max_restarts
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="tiergate-llamacpp-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = Path(log_path)
        self.restarts = 0
        self.last_error: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._started_at = 0.0
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._start_timeout_s = 60.0
        self._loop_thread: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("LlamaCppProcess has no port yet; call start() first")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    # ------------------------------------------------------------------ lifecycle
    def _argv(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "tiergate.local.llamacpp_server",
            "--gguf",
            str(self.gguf),
            "--port",
            str(self.port or 0),
            "--host",
            self.host,
            "--ctx",
            str(self.ctx),
            "--threads",
            str(self.threads),
            "--parallel",
            str(self.parallel),
            "--exit-on-stdin-eof",
        ]
        if self.alias:
            argv += ["--alias", self.alias]
        return argv + self.extra_args

    async def start(self, timeout_s: float = 60.0) -> None:
        """Spawn the child and wait until it prints ``READY <port>`` and /health is ok."""
        if self.running:
            return
        self._stopping = False
        self._start_timeout_s = timeout_s
        await self._spawn(timeout_s)
        if self.supervise and (self._supervisor is None or self._supervisor.done()):
            self._supervisor = asyncio.create_task(self._supervise(), name=f"llamacpp-supervisor:{self.port}")

    async def _spawn(self, timeout_s: float) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SRC_ROOT), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        with await asyncio.to_thread(self._open_log) as log:  # file I/O off the event loop
            self._proc = await asyncio.create_subprocess_exec(
                *self._argv(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        proc = self._proc
        try:
            port = await asyncio.wait_for(self._read_ready(proc), timeout_s)
        except (TimeoutError, EngineStartError) as exc:
            await self._kill(proc, grace_s=1.0)
            why = "timed out" if isinstance(exc, asyncio.TimeoutError) else str(exc)
            self.last_error = f"llama.cpp server ({self.gguf.name}) failed to start: {why}"
            raise EngineStartError(
                f"{self.last_error}\n--- log tail ({self.log_path}) ---\n{self.log_tail()}"
            ) from None
        self.port = port
        self._started_at = time.monotonic()
        # Nothing more is expected on stdout, but never let a full pipe block the child.
        self._drain_task = asyncio.create_task(self._drain(proc))

    def _open_log(self) -> BinaryIO:
        """The log, opened for the child's stderr, with a line marking this spawn."""
        log = open(self.log_path, "ab")  # closed by _spawn's with-block
        try:
            log.write(f"--- {time.strftime('%H:%M:%S')} spawn: {' '.join(self._argv())}\n".encode())
            log.flush()
        except BaseException:
            log.close()
            raise
        return log

    async def _read_ready(self, proc: asyncio.subprocess.Process) -> int:
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                rc = await proc.wait()
                raise EngineStartError(f"process exited with code {rc} before READY")
            text = line.decode(errors="replace").strip()
            if text.startswith("READY "):
                port = int(text.split()[1])
                if await self._health_at(port):
                    return port
                raise EngineStartError(f"printed READY {port} but /health is not ok")

    @staticmethod
    async def _drain(proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(Exception):
            while proc.stdout and await proc.stdout.read(65536):
                pass

    async def health(self) -> bool:
        return self.port is not None and self.running and await self._health_at(self.port)

    async def _health_at(self, port: int) -> bool:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
                async with s.get(f"http://{host}:{port}/health") as r:
                    return r.status == 200 and (await r.json(content_type=None)).get("status") == "ok"
        except (TimeoutError, aiohttp.ClientError, ValueError, AttributeError):
            return False

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            proc = self._proc
            if proc is None:
                return
            rc = await proc.wait()
            if self._stopping:
                return
            if time.monotonic() - self._started_at >= _STABLE_AFTER_S:
                failures = 0
            self._log(f"child pid {proc.pid} exited with code {rc}; supervising restart")
            while not self._stopping:
                if failures >= self.max_restarts:
                    self.last_error = f"gave up after {failures} consecutive failed restarts"
                    self._log(self.last_error)
                    return
                delay = min(_BACKOFF_START_S * 2**failures, _BACKOFF_MAX_S)
                failures += 1
                await asyncio.sleep(delay)
                if self._stopping:
                    return
                try:
                    await self._spawn(self._start_timeout_s)
                except EngineStartError as exc:
                    self._log(f"restart attempt {failures} failed: {str(exc).splitlines()[0]}")
                    continue
                self.restarts += 1
                break

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the child, SIGKILL it after ``grace_s``, and stop supervising."""
        self._stopping = True
        supervisor, self._supervisor = self._supervisor, None
        await stop(supervisor)
        if self._proc is not None:
            await self._kill(self._proc, grace_s)

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process, grace_s: float) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()

    # ------------------------------------------------------------------ helpers
    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return "<no log>"

    def _log(self, msg: str) -> None:
        with contextlib.suppress(OSError), open(self.log_path, "a") as f:
            f.write(f"--- {time.strftime('%H:%M:%S')} supervisor: {msg}\n")

    # sync conveniences: run the async API on a private event-loop thread (supervision works too)
    def start_blocking(self, timeout_s: float = 60.0) -> None:
        if self._loop_thread is None:
            loop = asyncio.new_event_loop()
            self._loop_thread = (loop, threading.Thread(target=loop.run_forever, name="llamacpp-loop", daemon=True))
            self._loop_thread[1].start()
        asyncio.run_coroutine_threadsafe(self.start(timeout_s), self._loop_thread[0]).result()

    def stop_blocking(self, grace_s: float = 5.0) -> None:
        if self._loop_thread is None:
            return
        loop, thread = self._loop_thread
        self._loop_thread = None
        try:
            asyncio.run_coroutine_threadsafe(self.stop(grace_s), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()
