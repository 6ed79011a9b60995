"""Typed configuration: the one place the environment is read.

The YAML shape is the user's contract (see docs/configuration.md). Models use
``extra="forbid"`` so a typo is an error naming the field, never a silent
default. Secrets are written as ``env:NAME`` (or LiteLLM's ``os.environ/NAME``)
and resolved here, once, into ``SecretStr`` so they never reach a log line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from tiergate.config.guardrails import (
    BudgetConfig,
    GuardianConfig,
    LimitList,
    OutageConfig,
)
from tiergate.config.local_models import LocalModelsConfig
from tiergate.core.errors import ConfigError
from tiergate.guardrails.alerts import AlertSinkConfig

log = logging.getLogger("tiergate.config.schema")

ApiType = Literal["openai-chat", "anthropic-messages"]
API_TYPES: tuple[str, ...] = get_args(ApiType)
ENV_PREFIXES = ("env:", "os.environ/")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Model):
    """USD per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=0, le=65535)
    max_body_mb: float = Field(16.0, gt=0, description="largest request body accepted")


class AuthConfig(_Model):
    master_key: SecretStr | None = None
    required: bool = True


class ProviderConfig(_Model):
    api: ApiType
    base_url: str
    api_key: SecretStr | None = None
    local: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0, description="per-attempt timeout; default routing.attempt_timeout_s")

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


class TiergateConfig(_Model):
    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    ledger: SecretStr | None = Field(None, description="sqlite:///PATH or postgresql://...; may hold a password")
    ledger_spool: Path | None = Field(None, description="where PostgreSQL ledger records wait while it is down")
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
    on_outage: OutageConfig = Field(default_factory=OutageConfig)

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
            raise ValueError("must be sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
                             "(with a password: env:NAME holding the whole URL)")
        return v

    @field_validator("tasks")
    @classmethod
    def _task_tiers(cls, v: dict[str, int]) -> dict[str, int]:
        for task, tier in v.items():
            if not 0 <= tier <= 9:
                raise ValueError(f"task {task!r}: tier must be 0..9, got {tier}")
        return v

    @model_validator(mode="after")
    def _references(self) -> TiergateConfig:
        names = [d.name for d in self.deployments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"deployments: duplicate names {dupes}")
        local_names = [m.name for m in self.local_models.models] if self.local_models else []
        for i, d in enumerate(self.deployments):
            if d.local_model is not None:
                if d.local_model not in local_names:
                    raise ValueError(f"deployments[{i}].local_model: unknown local model {d.local_model!r}; "
                                     f"allowed: {local_names} (local_models.models[].name)")
                if d.provider is not None:
                    raise ValueError(f"deployments[{i}]: give either provider or local_model, not both")
                continue
            if d.provider is None or d.model is None:
                raise ValueError(f"deployments[{i}]: provider and model are required (or local_model)")
            if d.provider not in self.providers:
                raise ValueError(
                    f"deployments[{i}].provider: unknown provider {d.provider!r}; "
                    f"allowed: {sorted(self.providers)}"
                )
        known = set(names)
        for alias, targets in self.aliases.items():
            if alias in known:
                raise ValueError(f"aliases.{alias}: clashes with a deployment of the same name")
            for t in targets:
                if t not in known:
                    raise ValueError(f"aliases.{alias}: unknown deployment {t!r}; allowed: {sorted(known)}")
        targets_ok = known | set(self.aliases)
        ids = [b.id for b in self.budgets]
        if len(ids) != len(set(ids)):
            raise ValueError(f"budgets: two budgets share an id {sorted(i for i in ids if ids.count(i) > 1)}; give one a name")
        for pattern, target in self.model_map.items():
            if target not in targets_ok and target != "auto" and not target.startswith("task/"):
                raise ValueError(
                    f"model_map.{pattern}: unknown target {target!r}; allowed: auto, task/<type>, {sorted(targets_ok)}"
                )
        for src, dsts in self.routing.fallbacks.items():
            for t in [src, *dsts]:
                if t not in targets_ok:
                    raise ValueError(
                        f"routing.fallbacks.{src}: unknown deployment or alias {t!r}; allowed: {sorted(targets_ok)}"
                    )
        return self

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


# --------------------------------------------------------------------------- loading


def environment() -> Mapping[str, str]:
    """The process environment; every other module asks here instead of reading os.environ."""
    return os.environ


def default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("tiergate", appauthor=False))


def default_config_paths() -> list[Path]:
    from platformdirs import user_config_dir

    return [Path("tiergate.yaml"), Path(user_config_dir("tiergate", appauthor=False)) / "tiergate.yaml"]


def find_config(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The config to use: the explicit path, else ./tiergate.yaml, else the user's config dir."""
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    return next((p for p in default_config_paths() if p.is_file()), None)


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> TiergateConfig:
    """Read YAML (tiergate's own shape or a LiteLLM proxy config) into a validated config."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping, got {type(raw).__name__}")
    return config_from_dict(raw, env=env, source=str(p))


def config_from_dict(raw: dict[str, Any], *, env: Mapping[str, str] | None = None, source: str = "config") -> TiergateConfig:
    from tiergate.config.litellm import is_litellm_config, translate_litellm

    env = os.environ if env is None else env
    if is_litellm_config(raw):
        raw = translate_litellm(raw)
    raw = _default_master_key(raw, env)
    resolved = _resolve_secrets(raw, env, path=())
    try:
        return TiergateConfig.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid config\n" + format_validation_error(exc)) from None


def _default_master_key(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    auth = raw.get("auth")
    if (auth is None or (isinstance(auth, dict) and "master_key" not in auth)) and env.get("TIERGATE_MASTER_KEY"):
        raw = {**raw, "auth": {**(auth or {}), "master_key": "env:TIERGATE_MASTER_KEY"}}
    return raw


SECRET_FIELDS = {"api_key", "master_key", "bot_token"}


def _resolve_secrets(node: Any, env: Mapping[str, str], *, path: tuple[str, ...]) -> Any:
    if isinstance(node, dict):
        return {k: _resolve_secrets(v, env, path=(*path, str(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_secrets(v, env, path=(*path, str(i))) for i, v in enumerate(node)]
    if isinstance(node, str):
        for prefix in ENV_PREFIXES:
            if node.startswith(prefix):
                name = node[len(prefix):]
                if name not in env:
                    raise ConfigError(f"{'.'.join(path)}: environment variable {name} is not set")
                return env[name]
        if path and path[-1] in SECRET_FIELDS and node:
            log.warning("%s: literal secret in config; prefer env:NAME", ".".join(path))
        elif path == ("ledger",) and masked_url(node) != node:
            log.warning("ledger: literal password in config; prefer env:NAME holding the whole URL")
    return node


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Union-with-None so a walk can see the model underneath."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if args and getattr(annotation, "__origin__", None) is None and len(args) == 1:
        return args[0]
    if type(annotation).__name__ == "UnionType" and len(args) == 1:
        return args[0]
    return annotation


def _walk(loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, Any]:
    """Follow a validation error location to (the model owning the last field, its annotation)."""
    node: Any = TiergateConfig
    owner: type[BaseModel] | None = None
    annotation: Any = None
    for part in loc:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            info = node.model_fields.get(str(part))
            owner, annotation = node, (info.annotation if info else None)
            node = annotation
        elif getattr(node, "__origin__", None) in (dict, list):
            node = get_args(node)[-1]
        else:
            return owner, None
    return owner, annotation


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: the dotted field path, what is wrong, and what is allowed."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc)
        msg = err["msg"].removeprefix("Value error, ")
        owner, annotation = _walk(loc)
        if err["type"] == "extra_forbidden":
            parent_model = _unwrap(_walk(loc[:-1])[1]) if len(loc) > 1 else TiergateConfig
            while getattr(parent_model, "__origin__", None) in (dict, list):
                parent_model = get_args(parent_model)[-1]
            fields = sorted(parent_model.model_fields) if isinstance(parent_model, type) and issubclass(parent_model, BaseModel) else []
            msg = "unknown field" + (f"; allowed fields: {', '.join(fields)}" if fields else "")
        else:
            literal = [a for a in get_args(_unwrap(annotation)) if isinstance(a, str)] if annotation else []
            if literal and "allowed" not in msg:
                msg = f"{msg}; allowed values: {', '.join(literal)}"
        lines.append(f"  {where}: {msg}" if where else f"  {msg}")
    return "\n".join(lines)
