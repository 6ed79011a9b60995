"""Where alerts go (webhooks, Slack, Telegram) as config; delivery lives in tiergate.guardrails.alerts."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

ALERT_EVENTS: tuple[str, ...] = (
    "budget_threshold",
    "emergency_on",
    "emergency_off",
    "session_killed",
    "context_threshold",
    "ledger_writer_failing",
)


def _check_url(url: str, what: str) -> str:
    """http(s) with a host; the message never echoes the URL, which may embed a secret."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host")
    return url


class _Sink(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookSinkConfig(_Sink):
    """POSTs JSON ``{"event", "message", "severity", "ts", "details"}``."""

    type: Literal["webhook"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, "url")


class SlackSinkConfig(_Sink):
    """A Slack incoming webhook; its URL is itself the credential, hence SecretStr."""

    type: Literal["slack"]
    url: SecretStr

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        _check_url(v.get_secret_value(), "url")
        return v


class TelegramSinkConfig(_Sink):
    """Telegram Bot API ``sendMessage``; chat_id may be written as a number (groups are negative)."""

    type: Literal["telegram"]
    bot_token: SecretStr
    chat_id: str
    api_base: str = "https://api.telegram.org"

    @field_validator("bot_token")
    @classmethod
    def _token(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("bot_token must not be empty")
        return v

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat(cls, v: object) -> object:
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if isinstance(v, str) and not v.strip():
            raise ValueError("chat_id must not be empty")
        return v

    @field_validator("api_base")
    @classmethod
    def _base(cls, v: str) -> str:
        return _check_url(v, "api_base").rstrip("/")


AlertSinkConfig = Annotated[WebhookSinkConfig | SlackSinkConfig | TelegramSinkConfig, Field(discriminator="type")]
