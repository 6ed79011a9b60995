"""The connection every Redis part of ``RedisState`` shares.

One ``RedisConnection`` owns the clients (a bounded async pool, and a small
blocking client for ``budget_seed`` built on first use), the registry of
Lua scripts that the parts declare, the key ``prefix``, and the one place
where a failing Redis becomes ``StateUnavailable``.

No silent fallback: when Redis cannot be reached (or is read-only during
a failover) a call raises ``StateUnavailable`` (HTTP 503) and the caller
decides whether to fail open or closed. Commands are never retried by the
client: a script whose reply was lost may already have run, and running a
reservation twice would double-count it.

Money is stored as integer nano-dollars (``to_units``, ``to_usd``): see
``redis_budgets``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tiergate.core.errors import StateUnavailable

if TYPE_CHECKING:
    import redis
    import redis.asyncio

T = TypeVar("T")

NANO = 1_000_000_000  # storage units per USD


def to_units(usd: float) -> int:
    return round(usd * NANO)


def to_usd(units: int | str | None) -> float:
    return int(units or 0) / NANO


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def glob_escape(s: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", s)


def outage_errors() -> tuple[type[BaseException], ...]:
    """What a Redis that is away, slow or failing over raises; anything else is a bug and propagates."""
    from redis import exceptions as rx

    return (
        rx.ConnectionError,
        rx.TimeoutError,
        rx.ReadOnlyError,
        rx.MasterDownError,
        rx.TryAgainError,
        OSError,
        asyncio.TimeoutError,
    )


class RedisConnection:
    """Clients, scripts and error mapping for one Redis; ``open()``, use, ``close()``."""

    def __init__(self, url: str, *, prefix: str, timeout_s: float, max_connections: int) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.where = f"Redis at {safe_url(url)}"
        self._aio: redis.asyncio.Redis | None = None  # built in open()
        self._sync: redis.Redis | None = None  # for budget_seed, built on first use
        self._sources: dict[str, str] = {}  # script name -> Lua, declared by the parts
        self._scripts: dict[str, Any] = {}  # script name -> redis-py Script on the open client

    # ------------------------------------------------------------------ lifecycle
    def add_scripts(self, sources: Mapping[str, str]) -> None:
        """Declare a part's Lua scripts by name; they are registered with the client on first use."""
        for name, src in sources.items():
            if self._sources.get(name, src) != src:
                raise ValueError(f"two Redis scripts are named {name!r}")
            self._sources[name] = src

    @property
    def is_open(self) -> bool:
        return self._aio is not None

    def _client_kwargs(self, retry: object) -> dict[str, Any]:
        return {
            "decode_responses": True,
            "socket_timeout": self.timeout_s,
            "socket_connect_timeout": self.timeout_s,
            "retry": retry,
            "health_check_interval": 30,
        }

    def open(self) -> None:
        """Build the async client (no round trip: the first command connects)."""
        if self._aio is not None:
            return
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # bounded, and a burst waits for a free connection (up to 5 timeouts) instead of failing at once
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            timeout=5 * self.timeout_s,
            **self._client_kwargs(Retry(NoBackoff(), 0)),
        )
        self._aio = Redis.from_pool(pool)

    async def close(self) -> None:
        self._scripts = {}
        if self._aio is not None:
            with contextlib.suppress(Exception):
                await self._aio.aclose()
            self._aio = None
        if self._sync is not None:
            with contextlib.suppress(Exception):
                self._sync.close()
            self._sync = None

    # ------------------------------------------------------------------ calls
    def unavailable(self, what: str, exc: BaseException) -> StateUnavailable:
        return StateUnavailable(
            f"shared state unavailable: {self.where} failed during {what}: {type(exc).__name__}: {exc}"
        )

    def client(self) -> Any:
        """The async client (``redis.asyncio.Redis``); raises RuntimeError before ``RedisState.start()``.

        Typed Any: redis-py's hints know neither ``decode_responses=True`` (replies are str) nor that a
        pipeline's commands chain, so the parts would need a cast at every call.
        """
        if self._aio is None:
            raise RuntimeError("RedisState is not started; await state.start() first")
        return self._aio

    async def io(self, what: str, aw: Awaitable[T]) -> T:
        """Await one Redis call; an outage becomes ``StateUnavailable`` naming ``what`` failed."""
        try:
            return await aw
        except outage_errors() as exc:
            raise self.unavailable(what, exc) from exc

    def script(self, name: str) -> Any:
        """The named script (a redis-py ``AsyncScript``) on the open client."""
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client().register_script(self._sources[name])
        return script

    async def run(self, name: str, what: str, keys: list[str], args: list[object]) -> Any:
        """Run a declared script (one atomic step in Redis) and return its reply."""
        script = self.script(name)
        return await self.io(what, script(keys=keys, args=args))

    def run_sync(self, what: str, call: Callable[[redis.Redis], T]) -> T:
        """One blocking call on the small sync client (startup only); outages raise ``StateUnavailable``."""
        from redis import Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if self._sync is None:
            self._sync = Redis.from_url(self.url, **self._client_kwargs(Retry(NoBackoff(), 0)))
        try:
            return call(self._sync)
        except outage_errors() as exc:
            raise self.unavailable(what, exc) from exc
