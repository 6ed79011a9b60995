"""Shared fixtures: stand-in clouds, a gateway factory, the real llama.cpp engine."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pg import pg_schema, pg_url  # noqa: F401 - fixtures: a PostgreSQL schema of the test's own
from procs import CHEAP_KEY, Gateway, Standin, start_gateway, start_standin


@pytest.fixture
def standins():
    started: list[Standin] = []

    def make(protocol: str = "openai", name: str = "cloud", models: list[str] | None = None, **kw) -> Standin:
        s = start_standin(protocol, name, models or ["m"], **kw)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def gateway(tmp_path):
    started: list[Gateway] = []

    def make(config: dict, **kw) -> Gateway:
        kw.setdefault("env_extra", {"CHEAP_KEY": CHEAP_KEY})
        gw = start_gateway(tmp_path, config, **kw)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        if gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait()


@pytest.fixture
def redis_prefix():
    """A key prefix of its own on the real Redis (127.0.0.1:6379), deleted afterwards; fails under CI=true if down."""
    import uuid

    from procs import require

    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
    except Exception as exc:  # any failure means no usable Redis
        require(False, f"Redis on 127.0.0.1:6379 is needed: {exc}")
    prefix = f"tiergate-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()
