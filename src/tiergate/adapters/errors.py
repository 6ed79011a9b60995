"""What one failed attempt at one deployment was, and whether another try makes sense."""

from __future__ import annotations

from typing import Literal

AttemptKind = Literal["refused", "connect", "timeout", "status", "dropped", "protocol"]


class AttemptError(Exception):
    """One failed attempt; ``retryable`` says whether the same deployment may be tried again."""

    def __init__(
        self,
        kind: AttemptKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.body = body

    @property
    def retryable(self) -> bool:
        if self.kind in ("timeout", "dropped", "connect"):
            return True
        return self.kind == "status" and self.status is not None and (self.status in (408, 409, 429) or self.status >= 500)

    @property
    def client_fault(self) -> bool:
        """The upstream rejected the request itself (400, 404, 413, 422): no other deployment will like it more."""
        return self.kind == "status" and self.status in (400, 404, 413, 422)

    def summary(self) -> str:
        return f"{self.status} {self.message}" if self.status else f"{self.kind}: {self.message}"
