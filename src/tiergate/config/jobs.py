"""Scheduled agent jobs, scheduled reports and where their output goes, as config (docs/jobs.md).

``jobs:`` lists what runs on a schedule (a prompt routed like any request, or
the daily digest), ``sinks:`` names the places results go beyond the alert
sinks (webhook, Slack by webhook or chat.postMessage, Telegram, e-mail over
SMTP, a file), and ``scheduler:`` holds the knobs every job shares. A job's
``deliver:`` names a sink, or the type of the one alert sink of that type.
Scheduling itself lives in ``tiergate.jobs``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from tiergate.config.alerts import AlertSinkConfig, _check_url
from tiergate.core.windows import parse_duration

JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ALERT_SINK_TYPES = ("webhook", "slack", "telegram")
MISSED_POLICIES = ("skip", "catch_up")
OVERLAP_POLICIES = ("skip", "allow")
REPORT_PERIODS = ("yesterday", "today")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _seconds(v: object) -> float:
    return parse_duration(v)


Duration = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class WebhookSink(_Model):
    """POSTs JSON ``{"job", "run_id", "slot", "status", "text", "format", "deployment", "cost_usd"}``."""

    type: Literal["webhook"]
    url: SecretStr  # a webhook URL often carries its credential in the path
    headers: dict[str, SecretStr] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        _check_url(v.get_secret_value(), "url")
        return v


class SlackSink(_Model):
    """An incoming webhook (``url``) or the Web API's chat.postMessage (``bot_token`` and ``channel``)."""

    type: Literal["slack"]
    url: SecretStr | None = None
    bot_token: SecretStr | None = None
    channel: str | None = None
    api_base: str = "https://slack.com/api"

    @model_validator(mode="after")
    def _one_way(self) -> SlackSink:
        if (self.url is None) == (self.bot_token is None):
            raise ValueError("give url (an incoming webhook) or bot_token and channel (chat.postMessage), not both")
        if self.bot_token is not None and not (self.channel or "").strip():
            raise ValueError("channel: required with bot_token (a channel id such as C0123456789)")
        if self.url is not None:
            _check_url(self.url.get_secret_value(), "url")
        _check_url(self.api_base, "api_base")
        return self


class TelegramSink(_Model):
    type: Literal["telegram"]
    bot_token: SecretStr
    chat_id: str
    api_base: str = "https://api.telegram.org"

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat(cls, v: object) -> object:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("api_base")
    @classmethod
    def _base(cls, v: str) -> str:
        return _check_url(v, "api_base").rstrip("/")


class EmailSink(_Model):
    """SMTP: Markdown as text/plain with an HTML alternative. ``tls``: starttls (587), ssl (465) or none."""

    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(587, ge=1, le=65535)
    sender: str = Field(min_length=3, alias="from")
    to: list[str] = Field(min_length=1)
    username: str | None = None
    password: SecretStr | None = None
    tls: Literal["starttls", "ssl", "none"] = "starttls"
    subject_prefix: str = "[tiergate]"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if "@" not in a or any(c in a for c in "\r\n")]
        if bad:
            raise ValueError(f"not an e-mail address: {', '.join(bad)}")
        return v


class FileSink(_Model):
    """One file per run in ``path`` (a directory, made if missing): ``JOB-YYYYmmddTHHMMSSZ-RUN.md``."""

    type: Literal["file"]
    path: Path


SinkConfig = Annotated[WebhookSink | SlackSink | TelegramSink | EmailSink | FileSink, Field(discriminator="type")]
SINK_TYPES = ("webhook", "slack", "telegram", "email", "file")


class InputSource(_Model):
    """One template input: fetched from ``url`` (GET), read from ``file``, or the literal ``value``."""

    url: str | None = None
    file: Path | None = None
    value: Any = None
    max_kb: int = Field(256, ge=1, le=16384, description="largest body read; a bigger one fails the run")
    timeout: Annotated[Duration, Field(gt=0)] = 10.0

    @model_validator(mode="before")
    @classmethod
    def _literal(cls, v: object) -> object:
        """A plain value (text, number, list, or a mapping without url/file/value) is a literal."""
        if isinstance(v, dict) and ({"url", "file", "value"} & set(v)):
            if "timeout" in v:
                v = {**v, "timeout": _seconds(v["timeout"])}
            return v
        return {"value": v}

    @model_validator(mode="after")
    def _one_source(self) -> InputSource:
        given = [n for n in ("url", "file") if getattr(self, n) is not None]
        if len(given) > 1 or (given and self.value is not None):
            raise ValueError("give one of url, file or value")
        if self.url is not None:
            _check_url(self.url, "url")
        return self


class ReportSpec(_Model):
    """The daily digest: spend, savings against all-frontier, groups, failures, escalations, forecast."""

    kind: Literal["digest"] = "digest"
    period: Literal["yesterday", "today"] = "yesterday"


class JobConfig(_Model):
    name: str
    schedule: str = Field(description="cron (minute hour day month weekday [second]) in the job's timezone")
    timezone: str | None = Field(None, description="IANA zone; default the config's timezone")
    prompt: str | None = Field(None, description="a Jinja template; inputs are {{ inputs.NAME }}")
    system: str | None = None
    report: ReportSpec | None = None
    task: str | None = None
    model: str = "auto"
    agent: str | None = Field(None, description="attribution; default the job's name")
    max_tokens: int | None = Field(None, gt=0)
    inputs: dict[str, InputSource] = Field(default_factory=dict)
    deliver: list[str] = Field(default_factory=list)
    retries: int = Field(2, ge=0, le=10)
    retry_backoff: Duration = 30.0
    timeout: Annotated[Duration, Field(gt=0)] = 600.0
    missed: Literal["skip", "catch_up"] = Field("skip", description="after downtime: skip, or run the latest once")
    overlap: Literal["skip", "allow"] = Field("skip", description="a slot due while the last run still runs")
    enabled: bool = True

    @field_validator("retry_backoff", "timeout", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float:
        return _seconds(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not JOB_NAME.match(v):
            raise ValueError("must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return v

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        from croniter import croniter

        if len(v.split()) not in (5, 6) or not croniter.is_valid(v):
            raise ValueError(
                f"invalid cron expression {v!r}: five fields, minute hour day-of-month month day-of-week "
                "(e.g. '0 7 * * 1-5', '*/15 * * * *'), and optionally a sixth, seconds"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if v is None:
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {v!r} (e.g. UTC, Europe/Paris, America/New_York)") from None
        return v

    @field_validator("task")
    @classmethod
    def _task(cls, v: str | None) -> str | None:
        return v.lower() if v else v

    @model_validator(mode="after")
    def _work(self) -> JobConfig:
        if (self.prompt is None) == (self.report is None):
            raise ValueError("give prompt (an agent job) or report (a scheduled report), not both")
        if self.prompt is not None:
            from tiergate.config.job_templates import template_problem

            problem = template_problem(self.prompt) or (template_problem(self.system) if self.system else None)
            if problem:
                raise ValueError(problem)
        return self

    @property
    def kind(self) -> str:
        return "report" if self.report is not None else "agent"

    @property
    def agent_name(self) -> str:
        return self.agent or self.name


class SchedulerConfig(_Model):
    max_concurrent: int = Field(2, ge=1, le=256, description="job runs at once per gateway (seed 001: 2 agents)")
    queue_timeout: Duration = Field(600.0, description="a run waiting longer for a slot fails as queued too long")
    lease: Annotated[Duration, Field(ge=5)] = Field(
        60.0, description="a claimed run's lease, renewed while it runs; expired, another replica takes it over"
    )
    grace: Duration = Field(300.0, description="a slot started later than this after its time counts as missed")
    poll: Annotated[Duration, Field(gt=0, le=60)] = 1.0
    delivery_retries: int = Field(2, ge=0, le=10)
    delivery_timeout: Annotated[Duration, Field(gt=0)] = 10.0
    delivery_backoff: Duration = 1.0
    history_days: int = Field(90, ge=1, description="run records older than this are pruned")

    @field_validator("queue_timeout", "lease", "grace", "poll", "delivery_timeout", "delivery_backoff", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float:
        return _seconds(v)


def job_problems(
    jobs: Sequence[JobConfig],
    sinks: dict[str, Any],
    alerts: Sequence[AlertSinkConfig],
    models: Sequence[str] | None = None,
) -> list[str]:
    """``jobs[0].deliver[1]: ...`` for every delivery that names nothing, names given twice, and (given the
    model names clients may send: deployments and their upstream models, aliases, model_map globs, wildcard
    routes) a job's model
    that names nothing: every run of it would fail."""
    import fnmatch

    out: list[str] = []
    names = [j.name for j in jobs]
    for i, j in enumerate(jobs):
        if names.count(j.name) > 1 and names.index(j.name) != i:
            out.append(f"jobs[{i}].name: {j.name!r} is the name of another job; job names must be unique")
        known = models is None or j.model == "auto" or j.model.startswith("task/")
        if not known and not any(fnmatch.fnmatchcase(j.model, m) for m in models or ()):
            models_text = ", ".join(["auto", "task/<type>", *sorted(set(models or ()))])
            out.append(
                f"jobs[{i}].model: {j.model!r} names no deployment, upstream model, alias or model_map entry; "
                f"allowed values: {models_text}"
            )
        for k, target in enumerate(j.deliver):
            if target in sinks:
                continue
            of_type = [a for a in alerts if a.type == target]
            if target in ALERT_SINK_TYPES and len(of_type) == 1:
                continue
            allowed = sorted(set(sinks) | {t for t in ALERT_SINK_TYPES if sum(a.type == t for a in alerts) == 1})
            why = (
                f"{len(of_type)} alert sinks have type {target!r}; name one under sinks:"
                if len(of_type) > 1
                else f"unknown sink {target!r}"
            )
            out.append(f"jobs[{i}].deliver[{k}]: {why}; allowed values: {', '.join(allowed) or 'none (add sinks:)'}")
    return out
