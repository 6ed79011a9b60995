"""Typed configuration: the one place the environment is read.

The YAML shape is the user's contract (see docs/configuration.md). Models use
``extra="forbid"`` so a typo is an error naming the field, never a silent
default. Secrets are written as ``env:NAME`` (or LiteLLM's ``os.environ/NAME``)
and resolved here, once, into ``SecretStr`` so they never reach a log line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from tiergate.config.alerts import AlertSinkConfig
from tiergate.config.gates import GatesConfig
from tiergate.config.guardrails import (
    BudgetConfig,
    GuardianConfig,
    LimitList,
    OutageConfig,
)
from tiergate.config.jobs import JobConfig, SchedulerConfig, SinkConfig, job_problems
from tiergate.config.local_models import LocalModelsConfig
from tiergate.config.observability import ObservabilityConfig
from tiergate.config.references import listed, reference_problems
from tiergate.core.capabilities import Capability

log = logging.getLogger("tiergate.config")

ApiType = Literal[
    "openai-chat",
    "anthropic-messages",
    "azure-openai",
    "openai-responses",
    "ollama",
    "bedrock-converse",
    "google-generative-ai",
]
API_TYPES: tuple[str, ...] = get_args(ApiType)
AZURE_STREAM_USAGE_SINCE = "2024-09-01"  # Azure OpenAI takes stream_options.include_usage from this api-version
ENV_PREFIXES = ("env:", "os.environ/")
# the fields whose names others point at, or that point at names (tiergate.config.references)
REFERENCING_FIELDS = {"providers", "deployments", "local_models", "aliases", "model_map", "routing"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Model):
    """USD per million tokens. A field written here wins over the price database (config/prices.py)."""

    input_per_mtok: float = Field(0.0, ge=0, allow_inf_nan=False)
    output_per_mtok: float = Field(0.0, ge=0, allow_inf_nan=False)
    cache_read_per_mtok: float | None = Field(None, ge=0, allow_inf_nan=False, description="prompt read from cache")
    cache_write_per_mtok: float | None = Field(None, ge=0, allow_inf_nan=False, description="prompt written to cache")


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=0, le=65535)
    max_body_mb: float = Field(16.0, gt=0, description="largest request body accepted")
    max_body_in_flight_mb: float = Field(
        32.0,
        gt=0,
        description="request-body bytes all requests of one worker may be reading at once; beyond, 503 Retry-After",
    )
    large_body_mb_per_s: float = Field(
        64.0,
        gt=0,
        allow_inf_nan=False,
        description="request-body bytes past each body's first MiB one worker reads per second, all bodies together",
    )
    # client-side bounds (tiergate/client_protocol.py): a socket that sends too slowly or not at all is closed
    header_timeout_s: float = Field(10.0, gt=0, le=3600, description="request line and headers, from their first byte")
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description="the whole body, from the end of the headers")
    keepalive_timeout_s: float = Field(15.0, gt=0, le=3600, description="idle between requests on one connection")
    max_connections: int = Field(512, ge=1, le=1_000_000, description="open client connections per process")
    drain_timeout_s: float = Field(25.0, ge=0, le=3600, description="SIGTERM: time in-flight requests get to finish")
    # orjson's encoder stops at 255 levels and translations recurse, hence the ceiling
    max_json_depth: int = Field(64, ge=2, le=200, description="deepest nesting of JSON arrays and objects accepted")


class AuthConfig(_Model):
    master_key: SecretStr | None = None
    required: bool = True
    max_failures_per_minute: int = Field(
        20, ge=0, description="wrong or missing keys per client address per minute before 429; 0 turns it off"
    )


class ProviderConfig(_Model):
    api: ApiType
    base_url: str
    api_key: SecretStr | None = None
    local: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0, description="per-attempt timeout; default routing.attempt_timeout_s")
    # Bounded reading of this provider's answers (issue 13): a faulty upstream costs one attempt, not memory.
    stream_timeout_s: float | None = Field(
        None, gt=0, description="a whole stream, request to last event; default routing.request_timeout_s"
    )
    stream_idle_timeout_s: float | None = Field(None, gt=0, description="between events; default the attempt timeout")
    max_event_kb: int = Field(1024, gt=0, description="largest SSE event; a stream without event ends is cut here")
    max_response_mb: float = Field(64.0, gt=0, description="largest non-streamed reply body; beyond it, fail over")
    api_version: str | None = Field(
        None, description="azure-openai: the ?api-version= of every call (required unless base_url ends in /openai/v1)"
    )
    entra_token: SecretStr | None = Field(
        None, description="azure-openai: a Microsoft Entra token, sent as Authorization: Bearer (instead of api_key)"
    )

    aws_region: str | None = Field(
        None, description="bedrock-converse: the region signed for; default: from base_url (bedrock-runtime.REGION...)"
    )
    aws_access_key_id: SecretStr | None = Field(None, description="bedrock-converse: SigV4 credentials (env:NAME)")
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = Field(None, description="bedrock-converse: temporary credentials' token")

    @property
    def region(self) -> str | None:
        """Bedrock's signing region: aws_region, else the one in a bedrock-runtime.REGION.amazonaws.com URL."""
        import re

        found = re.match(r"https://bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com", self.base_url)
        return self.aws_region or (found.group(1) if found else None)

    @model_validator(mode="after")
    def _bedrock(self) -> ProviderConfig:
        aws = (self.aws_access_key_id, self.aws_secret_access_key)
        if self.api == "bedrock-converse":
            if self.api_key is None and None in aws:
                raise ValueError(
                    "aws_access_key_id and aws_secret_access_key: required for bedrock-converse (SigV4), "
                    "or api_key holding a Bedrock API key"
                )
            if self.api_key is None and self.region is None:
                raise ValueError(
                    "aws_region: required when base_url is not https://bedrock-runtime.REGION.amazonaws.com"
                )
        elif any(v is not None for v in (*aws, self.aws_session_token, self.aws_region)):
            raise ValueError("aws_region and aws_* credentials: only for api bedrock-converse")
        return self

    @model_validator(mode="after")
    def _azure(self) -> ProviderConfig:
        if self.api == "azure-openai":
            if self.api_version is None and not self.base_url.endswith("/openai/v1"):
                raise ValueError(
                    "api_version: required for azure-openai at a resource endpoint (Azure answers 404 without it), "
                    "e.g. 2024-10-21; or use the v1 API: base_url https://NAME.openai.azure.com/openai/v1"
                )
            if self.api_version is not None and self.api_version[:10] < AZURE_STREAM_USAGE_SINCE:
                raise ValueError(
                    f"api_version: {self.api_version} predates {AZURE_STREAM_USAGE_SINCE}, the first version that "
                    "reports a stream's usage (tiergate bills streams by it); use 2024-10-21 or later"
                )
        elif self.api_version is not None or self.entra_token is not None:
            raise ValueError("api_version and entra_token: only for api azure-openai")
        return self

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class DeploymentConfig(_Model):
    name: str = Field(min_length=1)
    provider: str | None = None
    model: str | None = None
    local_model: str | None = Field(None, description="a local_models.models[].name that tiergate runs itself")
    tier: int = Field(0, ge=0, le=9)
    context_window: int = Field(8192, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    price: Price = Field(default_factory=Price)
    capabilities: list[Capability] | None = Field(
        None, description="what it can do; default: from the model's family (tiergate.core.capabilities)"
    )
    base_model: str | None = Field(
        None, description="the model the price database prices it as (an Azure deployment's name is not a model)"
    )
    weight: float = Field(
        1.0, ge=0, le=1e9, allow_inf_nan=False, description="its share of a routing.balance alias; 0: failover only"
    )
    rpm: int | None = Field(
        None, gt=0, description="requests per minute it takes (a provider quota); at it, the next candidate is tried"
    )
    tpm: int | None = Field(None, gt=0, description="tokens per minute it takes; at it, the next candidate is tried")
    reasoning_floor_tokens: int | None = Field(
        None, gt=0, description="a reasoning model: a client's max_tokens below this is raised to it upstream"
    )

    @model_validator(mode="after")
    def _wildcard(self) -> DeploymentConfig:
        """A ``*`` in the name makes a wildcard route: the client's model name, the ``*`` part written into
        ``model`` (LiteLLM's ``openai/*``), is passed through."""
        if "*" in self.name:
            if self.name.count("*") > 1 or (self.model or "").count("*") > 1 or self.local_model is not None:
                raise ValueError(
                    "name: a wildcard route has one * in name and at most one in model (e.g. name: openai/*, "
                    "model: '*'), and a provider, not a local_model"
                )
        elif "*" in (self.model or ""):
            raise ValueError(f"model: {self.model!r} has a * but name {self.name!r} has none to fill it from")
        return self


class PrivacyConfig(_Model):
    """Requests that may only be served by local deployments, by who sends them or what they name.

    Any match makes a request local-only (the strictest source wins), as the
    X-Tiergate-Privacy: local-only header does; globs as in budgets.
    """

    local_only_keys: list[str] = Field(default_factory=list, description="key names (globs)")
    local_only_agents: list[str] = Field(default_factory=list, description="agent names (globs)")
    local_only_tasks: list[str] = Field(default_factory=list, description="task names (globs)")
    local_only_models: list[str] = Field(
        default_factory=list, description="model names as clients send them: aliases, deployments, globs"
    )


class RoutingConfig(_Model):
    num_retries: int = Field(2, ge=0, le=10, description="retries on the same deployment")
    retry_backoff_s: float = Field(0.25, ge=0)
    max_retry_after_s: float = Field(10.0, ge=0, description="longest Retry-After honoured before moving on")
    request_timeout_s: float = Field(600.0, gt=0)
    attempt_timeout_s: float = Field(300.0, gt=0)
    connect_timeout_s: float = Field(3.0, gt=0)
    breaker_failures: int = Field(3, ge=1)
    breaker_cooldown_s: float = Field(30.0, gt=0)
    escalate: bool = Field(True, description="after the requested target fails, try higher tiers")
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    balance: list[str] = Field(
        default_factory=list,
        description="aliases whose members share the load round-robin (a LiteLLM model group), failing over in turn",
    )
    cheapest_first: list[str] = Field(
        default_factory=list,
        description="aliases whose members are tried cheapest first by their resolved prices (LiteLLM's "
        "cost-based-routing); unpriced members last",
    )
    embeddings_local_only: bool = Field(
        False, description="embeddings only from local deployments (seed 004: embeddings always stay local)"
    )


class ResponsesConfig(_Model):
    store_days: float = Field(
        30.0, gt=0, le=3650, description="how long a Responses API response kept with store stays readable"
    )


class TiergateConfig(_Model):
    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    ledger: SecretStr | None = Field(None, description="sqlite:///PATH or postgresql://...; may hold a password")
    ledger_spool: Path | None = Field(None, description="where PostgreSQL ledger records wait while it is down")
    ledger_timeout_s: int = Field(
        5, ge=1, le=120, description="PostgreSQL connect and read deadline; raise it on a loaded host"
    )
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    deployments: list[DeploymentConfig] = Field(default_factory=list)
    aliases: dict[str, list[str]] = Field(default_factory=dict)
    tasks: dict[str, int] = Field(default_factory=dict)
    model_map: dict[str, str] = Field(default_factory=dict)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    timezone: str = Field("UTC", description="IANA zone for budget windows and reports")
    budgets: list[BudgetConfig] = Field(default_factory=list)
    limits: LimitList = Field(default_factory=list, description="rate and concurrency limits per key or agent")
    guardian: GuardianConfig = Field(default_factory=GuardianConfig)
    alerts: list[AlertSinkConfig] = Field(default_factory=list)
    local_models: LocalModelsConfig | None = None
    state: str | None = Field(None, description="redis://HOST:PORT/DB: state shared by workers and replicas")
    state_prefix: str = Field("tiergate:", min_length=1, description="key prefix in the shared state")
    state_timeout_s: float = Field(
        3.0, gt=0, le=60, description="per-call deadline for the shared state; a loaded host needs more than 1 s"
    )
    on_outage: OutageConfig = Field(default_factory=OutageConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    jobs: list[JobConfig] = Field(default_factory=list, description="scheduled agent jobs and reports (docs/jobs.md)")
    sinks: dict[str, SinkConfig] = Field(default_factory=dict, description="named places job results go")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig, description="quality gates (docs/gates.md)")
    observability: ObservabilityConfig = Field(
        default_factory=ObservabilityConfig, description="metrics labels, log format, tracing (docs/observability.md)"
    )

    @field_validator("state")
    @classmethod
    def _state_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be redis://HOST:PORT/DB (or rediss://, unix://); omit it for in-process state")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {v!r} (e.g. UTC, Europe/Paris, America/New_York)") from None
        return v

    @field_validator("ledger")
    @classmethod
    def _ledger_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(
                "must be sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
                "(with a password: env:NAME holding the whole URL)"
            )
        return v

    @field_validator("tasks")
    @classmethod
    def _task_tiers(cls, v: dict[str, int]) -> dict[str, int]:
        """Task names ignore case (X-Tiergate-Task: CODING is coding), so they are kept lower-case."""
        out: dict[str, int] = {}
        for task, tier in v.items():
            if not 0 <= tier <= 9:
                raise ValueError(f"task {task!r}: tier must be 0..9, got {tier}")
            if task.lower() in out:
                raise ValueError(f"task {task!r}: given twice (task names ignore case)")
            out[task.lower()] = tier
        return out

    @model_validator(mode="after")
    def _references(self) -> TiergateConfig:
        """Every name must point at something; all that do not are reported at once, one per line."""
        problems = self._reference_problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _reference_problems(self) -> list[str]:
        out = reference_problems(self.model_dump(include=REFERENCING_FIELDS))
        ids = [b.id for b in self.budgets]
        if len(ids) != len(set(ids)):
            out.append(
                f"budgets: two budgets share an id {listed(i for i in ids if ids.count(i) > 1)}; give one a name"
            )
        models = [n for d in self.deployments for n in (d.name, d.model) if n] + [*self.aliases, *self.model_map]
        return out + job_problems(self.jobs, self.sinks, self.alerts, models) + self._gate_problems()

    def _gate_problems(self) -> list[str]:
        names = {d.name for d in self.deployments}
        asked = names | set(self.aliases) | set(self.model_map) | {"auto"}
        out = [
            f"gates.deployments.{n}: unknown deployment; allowed: {listed(names)}"
            for n in self.gates.deployments
            if n not in names
        ]
        out += [
            f"gates.aliases.{n}: unknown alias or model; allowed: {listed(asked)}"
            for n in self.gates.aliases
            if n not in asked and not n.startswith("task/")
        ]
        out += [
            f"gates.tasks.{n}: unknown task; allowed: {listed(self.tasks)} (tasks:)"
            for n in self.gates.tasks
            if n not in self.tasks
        ]
        shadow = self.gates.shadow
        if shadow is not None:
            out += [
                f"gates.shadow.{field}: unknown deployment or alias {name!r}; "
                f"allowed: {listed(names | set(self.aliases))}"
                for field, name in (("reference", shadow.reference), ("lower", shadow.lower))
                if name is not None and name not in names and name not in self.aliases
            ]
            out += [
                f"gates.shadow.tasks: unknown task {t!r}; allowed: {listed(self.tasks)} (tasks:)"
                for t in shadow.tasks
                if t not in self.tasks
            ]
        return out

    @property
    def ledger_url(self) -> str:
        """The ledger to open (``open_ledger``); may hold a password, so log ``ledger_display`` instead."""
        return self.ledger.get_secret_value() if self.ledger else f"sqlite:///{default_data_dir() / 'ledger.db'}"

    @property
    def ledger_display(self) -> str:
        """The ledger for log lines: a SQLite path, or the PostgreSQL URL with its password masked."""
        return str(self.ledger_path) if self.ledger_url.startswith("sqlite:///") else masked_url(self.ledger_url)

    @property
    def ledger_path(self) -> Path:
        if self.ledger:
            return Path(self.ledger.get_secret_value().removeprefix("sqlite:///")).expanduser()
        return default_data_dir() / "ledger.db"

    @property
    def ledger_spool_dir(self) -> Path:
        return self.ledger_spool.expanduser() if self.ledger_spool else default_data_dir() / "spool"


def masked_url(url: str) -> str:
    """A database URL safe to log: any password (in the user part or a password= parameter) becomes ***."""
    import re

    url = re.sub(r"^([a-z][a-z0-9+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", url, flags=re.I)
    return re.sub(r"(?i)(\bpassword=)[^&\s]*", r"\1***", url)


def default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("tiergate", appauthor=False))
