"""One error tree; each error knows its HTTP status and is rendered at the edge.

    TiergateError
    ├── ConfigError                 bad config file or field (CLI exit 2, never HTTP)
    ├── ClientError (4xx)
    │   ├── BadRequest              400 malformed JSON, wrong types, missing fields
    │   │   ├── MalformedHTTP       400 a request line or header the HTTP parser refused
    │   │   └── TranslationError    400 a body that cannot be translated to the upstream's protocol
    │   ├── Unauthorized            401 missing or wrong key
    │   ├── Forbidden               403
    │   │   └── SessionKilled       403 the guardian stopped this session
    │   ├── NotFound                404 unknown route
    │   │   ├── ModelNotFound       404 model name names no alias, deployment or task
    │   │   └── SessionNotFound     404 a session id the ledger has never seen (kill, revive)
    │   ├── MethodNotAllowed        405 known path, other method
    │   ├── RequestTimeout          408 a body that did not arrive within server.body_timeout_s
    │   ├── PayloadTooLarge         413 body over server.max_body_mb
    │   ├── UnsupportedEncoding     415 a Content-Encoding tiergate does not decode
    │   ├── ContextTooLarge         400 no candidate's context window holds the request
    │   ├── ModelNotCapable         400 no candidate can do what the body asks (embeddings, tools, images)
    │   ├── RateLimited             429 a rate or concurrency limit (limits[]); carries Retry-After
    │   │   └── AuthThrottled       429 too many failed authentications from one client address
    │   ├── BudgetExceeded          429 a budget whose action is reject; carries Retry-After
    │   └── UpstreamRejected        4xx the upstream refused the request itself; may carry its bytes
    ├── UpstreamError (5xx)
    │   ├── AllCandidatesFailed     503 every candidate failed; lists each one's error
    │   ├── NoCandidate             503 policy left nothing to try (privacy, breakers)
    │   └── ModelNotReady           503 a managed local model cannot serve now (the executor moves on)
    ├── ServerBusy (503)            every connection of server.max_connections has a request in flight
    │   └── BodiesBusy              503 the bodies being read already fill server.max_body_in_flight_mb
    └── DependencyUnavailable (503) a store tiergate itself needs
        ├── StateUnavailable        shared state (Redis) unreachable; callers apply on_outage modes
        └── LedgerUnavailable       the ledger database unreachable; writes spool, reads fail

Internal signals, never rendered to a client:

    AttemptError        one failed attempt at one deployment (adapters -> executor), with its kind
    DuplicateName       a unique name refused by the ledger (keys create)
    LedgerWriteFailed   the ledger's database refused a whole batch, retries spent (the writer keeps it)
    EngineStartError    a local inference engine did not become ready
    JobFailed           a scheduled run could not be prepared (an input, its template) or timed out

Routing, guardrails, stores and adapters raise these; only ``api/`` turns
them into a client's error envelope (OpenAI, Anthropic, ...), in one place.
"""

from __future__ import annotations

from typing import Literal


class TiergateError(Exception):
    status = 500
    openai_type = "api_error"
    anthropic_type = "api_error"
    code: str | None = None
    retry_after: int | None = None  # seconds, sent as the Retry-After header
    should_retry: bool | None = None  # sent as x-should-retry when set: whether an SDK's retries could help

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ConfigError(TiergateError):
    """A config problem; the message names the field path and the allowed values."""


class ClientError(TiergateError):
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class BadRequest(ClientError):
    code = "invalid_request"


class Unauthorized(ClientError):
    status = 401
    openai_type = "authentication_error"
    anthropic_type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(ClientError):
    status = 403
    openai_type = "permission_error"
    anthropic_type = "permission_error"
    code = "forbidden"


class NotFound(ClientError):
    status = 404
    anthropic_type = "not_found_error"
    code = "not_found"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class MalformedHTTP(BadRequest):
    """The HTTP parser refused the request head; the message names the kind, never the bytes."""

    code = "malformed_http"


class RequestTimeout(ClientError):
    """The body stopped short of its Content-Length or final chunk for server.body_timeout_s."""

    status = 408
    code = "request_timeout"


class TranslationError(BadRequest):
    """The client's body cannot be translated (malformed for its own protocol): a 400."""


class SessionKilled(Forbidden):
    code = "session_killed"


class ModelNotFound(NotFound):
    code = "model_not_found"


class SessionNotFound(NotFound):
    """An operator named a session the ledger never saw: killing it in advance would block an id forever."""

    code = "session_not_found"


class PayloadTooLarge(ClientError):
    status = 413
    anthropic_type = "request_too_large"
    code = "request_too_large"


class UnsupportedEncoding(ClientError):
    status = 415
    code = "unsupported_content_encoding"


class ModelNotCapable(ClientError):
    """No deployment the request may use can do what its body asks (embeddings, tools, images, ...)."""

    code = "model_not_capable"


class ContextTooLarge(ClientError):
    code = "context_length_exceeded"


class RateLimited(ClientError):
    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthThrottled(RateLimited):
    """A wrong or missing key from an address that failed too often (auth.max_failures_per_minute).

    The key is checked first: a valid one is served whatever its address did before.
    """

    code = "auth_throttled"


class UpstreamError(TiergateError):
    status = 503
    openai_type = "api_error"
    anthropic_type = "overloaded_error"
    code = "upstream_unavailable"


class NoCandidate(UpstreamError):
    code = "no_candidate"


class AllCandidatesFailed(UpstreamError):
    code = "all_candidates_failed"

    def __init__(self, message: str, *, failures: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.failures = failures


class ModelNotReady(UpstreamError):
    """The local model cannot serve this request now; try the next candidate. ``reason`` says why."""

    code = "local_model_not_ready"

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"{model} {reason}")
        self.model, self.reason = model, reason


class BudgetExceeded(ClientError):
    """A reject budget has no room; ``retry_after``: seconds until it may (its window's end, or a few
    seconds when reservations in flight are what fills it). A wait longer than a minute is no job for
    an SDK's automatic retries (the anthropic SDK would sleep until midnight): ``x-should-retry: false``."""

    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    code = "budget_exceeded"
    RETRYABLE_WAIT_S = 60

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        if retry_after is not None and retry_after > self.RETRYABLE_WAIT_S:
            self.should_retry = False


class UpstreamRejected(ClientError):
    """The upstream refused the request itself (400/404/413/422); passed to the client as is.

    ``body`` holds the vendor's own bytes only when the client speaks the upstream's protocol;
    the edge then sends them unchanged, else the client's own envelope.
    """

    code = "upstream_rejected"

    def __init__(self, message: str, *, status: int, deployment: str, body: bytes | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.deployment = deployment
        self.body = body


class ServerBusy(TiergateError):
    """A connection beyond server.max_connections while none of the open ones is idle; carries Retry-After."""

    status = 503
    openai_type = "api_error"
    anthropic_type = "overloaded_error"
    code = "server_busy"
    retry_after = 1


class BodiesBusy(ServerBusy):
    """A body that would take the request bodies a worker is reading past server.max_body_in_flight_mb."""

    code = "bodies_busy"


# ---------------------------------------------------------------------------- dependencies
class DependencyUnavailable(TiergateError):
    status = 503
    openai_type = "api_error"
    anthropic_type = "overloaded_error"


class StateUnavailable(DependencyUnavailable):
    """Shared state (Redis) cannot be reached; the caller chooses fail-open or fail-closed."""

    code = "state_unavailable"


class LedgerUnavailable(DependencyUnavailable):
    """The ledger's database cannot be reached; writes are spooled, reads fail with this."""

    code = "ledger_unavailable"


# ---------------------------------------------------------------------------- internal signals
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
        return (
            self.kind == "status" and self.status is not None and (self.status in (408, 409, 429) or self.status >= 500)
        )

    @property
    def client_fault(self) -> bool:
        """The upstream rejected the request itself (400, 413, 422): no other deployment will like it more."""
        return self.kind == "status" and self.status in (400, 413, 422)

    @property
    def unsupported(self) -> bool:
        """The deployment does not do this (501, or 404: no such route or model there).

        Not worth a retry and no sign of ill health: the breaker stays as it is, so what the
        deployment does support keeps being served; the next candidate is tried.
        """
        return self.kind == "status" and self.status in (404, 501)

    def summary(self) -> str:
        return f"{self.status} {self.message}" if self.status else f"{self.kind}: {self.message}"


class DuplicateName(Exception):
    """A unique constraint refused a row (a key name that exists already)."""


class LedgerWriteFailed(Exception):
    """A batch the ledger's database would not take after its retries (locked, disk full, I/O error).

    Raised to the writer thread, which counts it, shows it in health and keeps the records (never lost).
    """


class EngineStartError(RuntimeError):
    """A local inference engine (the llama.cpp child) did not become ready; the message carries its log tail."""


class JobFailed(Exception):
    """A scheduled job's run could not be prepared or finished; the message is safe to record."""
