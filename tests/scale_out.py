"""Helpers for the scale-out tests: HAProxy from the shipped config, a replica config on shared services."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

from procs import Standin, tiered_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on: a deployment there is refused at once (its breaker opens)."""
    return free_port()


def shared_state_config(local: Standin, cloud: Standin, *, pg_url: str, redis_prefix: str) -> dict:
    cfg = tiered_config(local, cloud, breaker_failures=1)
    cfg["ledger"] = pg_url
    cfg["state"] = "redis://127.0.0.1:6379/0"
    cfg["state_prefix"] = redis_prefix
    cfg["deployments"][1]["price"] = {"input_per_mtok": 100, "output_per_mtok": 100}
    cfg["providers"]["gone"] = {"api": "openai-chat", "base_url": f"http://127.0.0.1:{closed_port()}/v1"}
    cfg["deployments"].append({"name": "dead", "provider": "gone", "model": "m", "tier": 2, "context_window": 8192})
    return cfg


class HAProxy:
    """deploy/haproxy.cfg with the test's addresses and a stats socket, run in the foreground."""

    def __init__(self, template: Path, replica_ports: list[int], workdir: Path) -> None:
        self.port = free_port()
        self.sock = workdir / "haproxy.sock"
        text = template.read_text()
        text = re.sub(r"bind 127\.0\.0\.1:\d+", f"bind 127.0.0.1:{self.port}", text)
        servers = iter(replica_ports)
        text = re.sub(
            r"(server tiergate\d+ )127\.0\.0\.1:\d+", lambda m: f"{m.group(1)}127.0.0.1:{next(servers)}", text
        )
        assert next(servers, None) is None, "the shipped config must list one server per replica"
        text = text.replace("global\n", f"global\n    stats socket {self.sock} mode 600 level admin\n", 1)
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(text)
        self.out = workdir / "haproxy.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HAProxy:
        check = subprocess.run(["haproxy", "-c", "-f", str(self.config)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        self.proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(self.config)], stdout=self.out.open("w"), stderr=subprocess.STDOUT
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.out.read_text() if self.out.exists() else ""

    def stats(self) -> list[dict[str, str]]:
        """`show stat` over the stats socket: one row per frontend, backend and server."""
        if not self.sock.exists():
            return []
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.sock))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().strip().splitlines()
        header = lines[0].lstrip("# ").split(",")
        return [dict(zip(header, ln.split(","), strict=False)) for ln in lines[1:] if ln]

    def servers(self) -> list[dict[str, str]]:
        return [r for r in self.stats() if r["svname"].startswith("tiergate")]

    def healthy(self) -> int:
        return sum(1 for r in self.servers() if r["status"] == "UP")

    def requests_by_server(self) -> dict[str, int]:
        return {r["svname"]: int(r["stot"] or 0) for r in self.servers()}
