"""Config of the quality gates (``gates:``), and its conversion to the policy core.gates applies.

Patterns are compiled here, at load, so a bad one is a config error naming
its path; at request time nothing is parsed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tiergate.core.gates import GateName, GatePolicy, GateRule, GateRulePatch, StreamMode


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _compiled(patterns: list[str] | None) -> list[str] | None:
    for i, p in enumerate(patterns or ()):
        try:
            regex.compile(p)
        except regex.error as exc:
            raise ValueError(f"[{i}] {p!r} is not a regular expression: {exc}") from None
    return patterns


class GateRuleConfig(_Model):
    """One level's gate settings; what it leaves out comes from the level below (gates: itself)."""

    enabled: bool | None = Field(None, description="gate these requests (or this deployment's answers) at all")
    checks: list[GateName] | None = Field(None, description="the gates to apply; default all")
    refusal_patterns: list[str] | None = Field(None, description="regexes an answer's opening must not match")
    min_chars: int | None = Field(None, ge=0, description="the least visible text an answer may have")
    regex: list[str] | None = Field(None, description="regexes the answer's text must match")
    stream: StreamMode | None = Field(
        None, description="auto: hold JSON and tool answers, prefix others; hold | prefix | off"
    )
    prefix_chars: int | None = Field(None, ge=1, le=100_000, description="prefix mode: characters held, then relayed")

    _patterns = field_validator("refusal_patterns", "regex")(_compiled)

    def patch(self) -> GateRulePatch:
        return GateRulePatch(
            enabled=self.enabled,
            checks=None if self.checks is None else frozenset(self.checks),
            refusal_patterns=_patterns(self.refusal_patterns),
            min_chars=self.min_chars,
            must_match=_patterns(self.regex),
            stream=self.stream,
            prefix_chars=self.prefix_chars,
        )


def _patterns(patterns: list[str] | None) -> tuple[regex.Pattern[str], ...] | None:
    return None if patterns is None else tuple(regex.compile(p) for p in patterns)


class ShadowConfig(_Model):
    """A sample of the answers served locally, also asked of a reference tier and compared (never delaying
    or changing the client's answer); agreement rates in ``tiergate report``. With ``lower``, a sample of
    the answers served above that deployment's tier is also asked of it: tiergate recommend's evidence
    for starting a task lower."""

    reference: str | None = Field(
        None, min_length=1, description="the deployment or alias that answers local answers' requests for comparison"
    )
    lower: str | None = Field(
        None, min_length=1, description="the deployment or alias asked the requests that tiers above it served"
    )
    sample: float = Field(0.1, ge=0, le=1, description="the share of eligible answers compared")
    budget_usd_per_day: float = Field(1.0, gt=0, allow_inf_nan=False, description="what comparisons may spend a day")
    tasks: list[str] = Field(default_factory=list, description="the tasks compared; empty: every task")
    compare: Literal["auto", "exact", "json"] = Field(
        "auto", description="auto: JSON-equal when JSON was asked for, else the same text (case and spaces aside)"
    )

    @field_validator("tasks")
    @classmethod
    def _lower_tasks(cls, v: list[str]) -> list[str]:
        return [t.lower() for t in v]

    @model_validator(mode="after")
    def _asks_someone(self) -> ShadowConfig:
        if self.reference is None and self.lower is None:
            raise ValueError("gates.shadow needs reference, lower or both: the deployment or alias to ask")
        return self


class GatesConfig(GateRuleConfig):
    apply_to: Literal["routed", "all", "none"] = Field(
        "routed", description="routed: requests for auto and task/<type> (and any with a rule below)"
    )
    max_escalations: int = Field(2, ge=0, le=9, description="answers that may fail a gate before one is served")
    escalate_to: Literal["next_tier", "next_candidate"] = "next_tier"
    starved_retry_factor: float = Field(
        2.0,
        ge=1,
        le=16,
        allow_inf_nan=False,
        description="a reasoning model's starved answer is retried once with this times its max_tokens (1: never)",
    )
    tasks: dict[str, GateRuleConfig] = Field(default_factory=dict, description="per task (X-Tiergate-Task)")
    aliases: dict[str, GateRuleConfig] = Field(default_factory=dict, description="per alias or model name asked for")
    deployments: dict[str, GateRuleConfig] = Field(default_factory=dict, description="per deployment that answers")
    shadow: ShadowConfig | None = Field(None, description="shadow comparisons of local answers (docs/gates.md)")

    @field_validator("tasks")
    @classmethod
    def _lower(cls, v: dict[str, GateRuleConfig]) -> dict[str, GateRuleConfig]:
        return {k.lower(): r for k, r in v.items()}  # task names ignore case, as in tasks:

    def policy(self) -> GatePolicy:
        def patches(rules: Mapping[str, GateRuleConfig]) -> dict[str, GateRulePatch]:
            return {name: r.patch() for name, r in rules.items()}

        return GatePolicy(
            apply_to=self.apply_to,
            max_escalations=self.max_escalations,
            escalate_to=self.escalate_to,
            starved_retry_factor=self.starved_retry_factor,
            default=self.patch().over(GateRule()),
            tasks=patches(self.tasks),
            models=patches(self.aliases),
            deployments=patches(self.deployments),
        )
