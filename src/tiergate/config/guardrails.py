"""Config for the guardrails: budgets, rate and concurrency limits, the session guardian, outage modes.

Kept apart from config.py so each stays small; TiergateConfig includes them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

Scope = Literal["global", "key", "agent", "session", "task", "provider", "deployment"]
IDENTITY_SCOPES = ("global", "key", "agent", "session", "task")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(v: object) -> float:
    from tiergate.core.windows import parse_duration

    return parse_duration(v)


class BudgetConfig(_Model):
    name: str | None = None
    scope: Scope
    match: str | None = Field(None, description="glob on the scope's value (agent name, deployment, ...)")
    window: Literal["hour", "day", "week", "month"] = "day"
    limit_usd: float | None = Field(None, gt=0)
    max_calls: int | None = Field(None, gt=0)
    alert_at: list[float] = Field(default_factory=list)
    action: Literal["reject", "local-only", "downgrade"] = "reject"
    max_tier: int | None = Field(None, ge=0, le=9, description="downgrade: the highest tier still allowed")

    @field_validator("alert_at")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        for x in v:
            if not 0 < x <= 1:
                raise ValueError(f"each threshold must be a fraction in (0, 1], got {x}")
        return sorted(v)

    @model_validator(mode="after")
    def _consistent(self) -> BudgetConfig:
        if self.limit_usd is None and self.max_calls is None:
            raise ValueError("set limit_usd, max_calls or both")
        if self.scope != "global" and not self.match:
            raise ValueError(f"match: required for scope {self.scope!r} (a name or glob, e.g. 'researcher')")
        if self.action == "downgrade" and self.max_tier is None and self.scope in IDENTITY_SCOPES:
            raise ValueError("max_tier: required for action 'downgrade' on this scope (the tier to cap at)")
        return self

    @property
    def id(self) -> str:
        return self.name or f"{self.scope}:{self.match or '*'}:{self.window}"


class GuardianConfig(_Model):
    session_max_usd: float | None = Field(None, gt=0)
    session_max_age: float | None = Field(None, gt=0, description="seconds, or '8h'")
    session_idle_ttl: float = Field(86400.0, gt=0, description="seconds, or '24h'")
    context_alert_at: list[float] = Field(default_factory=lambda: [0.8, 0.95])
    context_reroute_at: float | None = Field(
        None, gt=0, le=1, description="prompt share of a window above which a larger window is chosen"
    )
    max_tracked_sessions: int = Field(
        10_000, ge=1, description="sessions held in memory; the least recently used beyond it wait in the ledger"
    )
    kill_ttl: float | None = Field(
        86400.0, gt=0, description="how long a kill holds ('24h'); null: until `tiergate sessions revive`"
    )
    session_retention: float = Field(30 * 86400.0, gt=0, description="session rows unseen this long are deleted")

    @field_validator("session_max_age", "session_idle_ttl", "kill_ttl", "session_retention", mode="before")
    @classmethod
    def _durations(cls, v: object) -> object:
        return None if v is None else _duration(v)


OutageMode = Literal["fail_closed", "fail_open"]


class OutageConfig(_Model):
    """What each concern does while Redis (state) or PostgreSQL (ledger) is unreachable.

    See tiergate.guardrails.outages.
    """

    budgets: OutageMode = Field("fail_closed", description="budget counters in the shared state")
    limits: OutageMode = Field("fail_closed", description="rate and concurrency limits in the shared state")
    ledger: OutageMode = Field("fail_open", description="the usage ledger's database (records spool to disk)")


class LimitConfig(_Model):
    """A rate and/or concurrency limit on a key or an agent, shared by every worker and replica."""

    scope: Literal["key", "agent"]
    match: str = Field(min_length=1, description="a key or agent name, a glob, or '*': each match counted separately")
    rpm: int | None = Field(None, gt=0, description="requests in any 60 s")
    tpm: int | None = Field(None, gt=0, description="prompt + completion tokens in any 60 s")
    max_concurrent: int | None = Field(None, gt=0, description="requests in flight at once")
    shared: bool = Field(False, description="every match counted together: a class of agents or keys")
    queue_timeout: float | None = Field(
        None, ge=0, le=3600, description="wait this long for a max_concurrent slot before refusing (e.g. '30s')"
    )

    @field_validator("queue_timeout", mode="before")
    @classmethod
    def _queue_duration(cls, v: object) -> object:
        return None if v is None else _duration(v)

    @model_validator(mode="after")
    def _something_limited(self) -> LimitConfig:
        if self.rpm is None and self.tpm is None and self.max_concurrent is None:
            raise ValueError("set at least one of rpm, tpm, max_concurrent")
        if self.queue_timeout is not None and self.max_concurrent is None:
            raise ValueError("queue_timeout: waits for a max_concurrent slot; set max_concurrent too")
        return self

    @property
    def id(self) -> str:
        return f"{self.scope}:{self.match}"


def _distinct_limits(limits: list[LimitConfig]) -> list[LimitConfig]:
    ids = [lim.id for lim in limits]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(
            f"two limits share scope and match {', '.join(dupes)}; put rpm, tpm and max_concurrent on one line"
        )
    return limits


LimitList = Annotated[list[LimitConfig], AfterValidator(_distinct_limits)]
