"""The seam between the protocol adapters and the network: one method, as in httpx's transports.

Adapters need one thing from HTTP: POST bytes to a URL and get back a
response whose head is in and whose body can be read whole or streamed.
Typed against these protocols instead of ``UpstreamHTTP``, they can be
driven by ``MemoryTransport``, which answers in memory, so adapter and
pipeline tests script any upstream behaviour without sockets.

Why ``post(url, data, headers, *, timeout_s)`` and not httpx's
``send(request)``: the adapters already hold those four values, and a
request object would be one more allocation per call on the hot path
(docs/decisions/0003-hot-path.md); the fake builds its own record of a
request, only in tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Protocol


class UpstreamReplyStream(Protocol):
    """What a transport's response offers: the head at once, the body read whole or as it arrives.

    A transport-level answer (bytes), not the adapters' ``UpstreamReply`` /
    ``UpstreamStream`` built from it.
    """

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Lower-case names."""
        ...

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body (or its first ``limit`` bytes); the response is released after it."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; released when the iteration ends, however it ends."""
        ...

    def idle_timeout(self, seconds: float, *, total_s: float | None = None) -> None:
        """From now on fail when no data came for ``seconds`` (a stream past its first event), or
        ``total_s`` after the request was sent, however steadily data comes (an endless stream)."""
        ...

    def release(self) -> None:
        """Done: a finished response's connection may be reused, an unfinished one is closed."""
        ...

    def close(self) -> None:
        """Walk away from the response whatever its state, at once; a reader waiting for its body
        (in another task) gets AttemptError("dropped")."""
        ...


class UpstreamTransport(Protocol):
    """Sends one request upstream; every failure is an ``AttemptError`` of its kind."""

    async def post(self, url: str, data: bytes, headers: Mapping[str, str], *, timeout_s: float) -> UpstreamReplyStream:
        """Send; return once the status and headers are in.

        The head and the whole body must come within ``timeout_s`` unless the
        response is switched to an idle timeout; else an AttemptError("timeout").
        """
        ...


if TYPE_CHECKING:  # mypy proves that the real client and the fake both fit the seam
    from tiergate.adapters.memory_transport import MemoryTransport
    from tiergate.adapters.upstream_http import UpstreamHTTP

    def _fits(real: UpstreamHTTP, fake: MemoryTransport) -> tuple[UpstreamTransport, UpstreamTransport]:
        return real, fake
