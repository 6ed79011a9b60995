"""Who is calling: key check and identity from headers, with no database round trip.

Virtual keys live hashed in the ledger; ``KeyStore`` keeps the active hashes
in memory and reloads them only when the ledger's key version changes
(checked in the background), so ``tiergate keys revoke`` takes effect in
about a second without touching the request path.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping
from typing import Protocol

from tiergate.api.auth_throttle import FailureThrottle
from tiergate.api.inbound import key_problem
from tiergate.background import reraise_if_stopping
from tiergate.core.errors import AuthThrottled, LedgerUnavailable, Unauthorized
from tiergate.core.privacy import PRIVACY_HEADER, header_local_only
from tiergate.core.types import Identity
from tiergate.ledger.base import Ledger
from tiergate.ledger.records import KeyRecord, hash_key
from tiergate.ledger.tables import RESERVED_KEY_NAMES
from tiergate.observability.metrics import Metrics

log = logging.getLogger("tiergate.auth")

MAX_VERIFIED = 10_000

MASTER = "master"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key sent as ``Authorization: Bearer KEY`` or ``x-api-key: KEY``; 401 for one that cannot be a key.

    A header's bytes that are not UTF-8 arrive as lone surrogates and crashed the hash (a 500 and
    a traceback per request); the message names the header, never its value.
    """
    auth = headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return _checked("Authorization", token.strip())
    key = headers.get("x-api-key")
    return _checked("x-api-key", key.strip()) if key and key.strip() else None


def _checked(header: str, key: str) -> str:
    problem = key_problem(key)
    if problem is not None:
        raise Unauthorized(f"invalid API key: the key in {header} {problem}")
    return key


def identity_from_headers(key_name: str, key_agent: str | None, headers: Mapping[str, str]) -> Identity:
    """A key bound to an agent always reports as that agent; other keys may name one in a header.

    The edge (api/edge.py) has already refused X-Tiergate-* values that are not printable UTF-8 or too long.
    Without X-Tiergate-Session the session is left unnamed: the guardian names the implicit one
    (``SessionTracker.identify``), which rolls over by day.
    """
    agent = key_agent or headers.get("X-Tiergate-Agent") or None
    session = headers.get("X-Tiergate-Session") or None
    task = (headers.get("X-Tiergate-Task") or "").strip().lower() or None  # config task names are lower-case
    local_only = header_local_only(headers.get(PRIVACY_HEADER))  # unknown values: 400, never open
    return Identity(key_name, agent, session, task, local_only)  # positional: keywords would build a dict


class Peer(Protocol):
    """What identify() needs of a request: its client's address, read only when asked."""

    @property
    def remote(self) -> str | None: ...


class KeyStore:
    def __init__(
        self,
        ledger: Ledger,
        *,
        master_key: str | None,
        required: bool = True,
        max_failures_per_minute: int = 0,
        metrics: Metrics | None = None,
    ) -> None:
        self._ledger = ledger
        self._throttle = FailureThrottle(max_failures_per_minute) if max_failures_per_minute > 0 else None
        self._metrics = metrics
        self._master_hash = hash_key(master_key) if master_key else None
        self._required = required
        self._keys: dict[str, KeyRecord] = {}
        self._admins: frozenset[str] = frozenset()  # names of active admin keys
        self._version = -1
        # presented key -> (name, agent) of keys already verified: a SHA-256 per request is measurable CPU.
        # Only valid keys are kept (bounded), and the cache is dropped whenever the key set changes.
        self._verified: dict[str, tuple[str, str | None]] = {}

    @property
    def has_any_key(self) -> bool:
        return self._master_hash is not None or bool(self._keys)

    def reload_if_changed(self) -> None:
        version = self._ledger.keys_version()
        if version != self._version:
            keys = self._ledger.active_key_hashes()
            for r in keys.values():
                if r.name.strip().lower() in RESERVED_KEY_NAMES:  # made before such names were refused
                    log.warning("key %r is not accepted: its name is tiergate's own; revoke it", r.name)
            self._keys = {h: r for h, r in keys.items() if r.name.strip().lower() not in RESERVED_KEY_NAMES}
            self._admins = frozenset(r.name for r in self._keys.values() if r.admin)
            self._version = version
            self._verified = {}

    def is_admin(self, key_name: str) -> bool:
        """The master key, or an active key made with ``tiergate keys create --admin``: /admin and /ui take it.
        A revoked admin key stops being one within the reload (about a second)."""
        return key_name == MASTER or key_name in self._admins

    async def watch(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.reload_if_changed)
            except LedgerUnavailable as exc:  # the database is down: the keys known so far stay valid
                log.warning("keys not refreshed, keeping the last known ones: %s", exc.message)
            except Exception as exc:  # a failed refresh keeps the last known keys
                reraise_if_stopping(exc)
                log.warning("could not refresh keys from the ledger", exc_info=True)

    def identify(self, headers: Mapping[str, str], remote: str | None = None, *, peer: Peer | None = None) -> Identity:
        """The caller's identity; 401 for a missing or wrong key, 429 once its address failed too often.

        The address is ``remote``, or read from ``peer`` (the request) only when the key fails: asking
        the socket for it costs every request. The key is checked before the throttle, so a valid key
        is never refused for what others sent from the same address.
        """
        try:
            name, agent = self._known(headers)
        except Unauthorized as exc:
            raise self._failed(exc, peer.remote if peer is not None else remote) from None
        return identity_from_headers(name, agent, headers)

    def _known(self, headers: Mapping[str, str]) -> tuple[str, str | None]:
        key = presented_key(headers)
        if key is None:
            if not self._required:
                return "anonymous", None
            raise Unauthorized("missing API key: send 'Authorization: Bearer KEY' or 'x-api-key: KEY'")
        known = self._verified.get(key)
        if known is not None:
            return known
        h = hash_key(key)
        if self._master_hash is not None and hmac.compare_digest(h, self._master_hash):
            known = (MASTER, None)
        else:
            rec = self._keys.get(h)
            if rec is None:
                raise Unauthorized("invalid API key")
            known = (rec.name, rec.agent)
        if len(self._verified) >= MAX_VERIFIED:
            self._verified = {}
        self._verified[key] = known
        return known

    def _failed(self, exc: Unauthorized, remote: str | None) -> Unauthorized | AuthThrottled:
        wait = self._throttle.failed(remote or "-") if self._throttle is not None else None
        if self._metrics is not None:
            self._metrics.child(self._metrics.auth_failures, "refused" if wait is None else "throttled").inc()
        if wait is None:
            return exc
        return AuthThrottled(
            f"too many failed authentications from this address; retry in {wait} s (auth.max_failures_per_minute)",
            retry_after=wait,
        )
