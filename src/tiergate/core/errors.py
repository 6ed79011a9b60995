"""One error tree; each error knows its HTTP status and is rendered at the edge.

    TiergateError
    ├── ConfigError                 bad config file or field (CLI exit 2, never HTTP)
    ├── ClientError (4xx)
    │   ├── BadRequest              400 malformed JSON, wrong types, missing fields
    │   ├── Unauthorized            401 missing or wrong key
    │   ├── Forbidden               403
    │   ├── NotFound                404 unknown route
    │   ├── ModelNotFound           404 model name names no alias, deployment or task
    │   ├── PayloadTooLarge         413 body over server.max_body_mb
    │   ├── ContextTooLarge         400 no candidate's context window holds the request
    │   └── RateLimited             429 a rate or concurrency limit (limits[]); carries Retry-After
    └── UpstreamError (5xx)
        ├── AllCandidatesFailed     503 every candidate failed; lists each one's error
        └── NoCandidate             503 policy left nothing to try (privacy, breakers)

Routing and adapters raise these; only ``api/`` turns them into OpenAI or
Anthropic error envelopes.
"""

from __future__ import annotations


class TiergateError(Exception):
    status = 500
    openai_type = "api_error"
    anthropic_type = "api_error"
    code: str | None = None
    retry_after: int | None = None  # seconds, sent as the Retry-After header

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


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(ClientError):
    status = 413
    anthropic_type = "request_too_large"
    code = "request_too_large"


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
