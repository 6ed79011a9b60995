"""Reading a config: find the file, resolve env: secrets, validate, and name the field path of any error.

The one place the environment is read (``environment()``); the models are in
``tiergate.config.schema``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from tiergate.config.schema import ENV_PREFIXES, TiergateConfig, masked_url
from tiergate.core.errors import ConfigError

log = logging.getLogger("tiergate.config")


def environment() -> Mapping[str, str]:
    """The process environment; every other module asks here instead of reading os.environ."""
    return os.environ


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


def config_from_dict(
    raw: dict[str, Any], *, env: Mapping[str, str] | None = None, source: str = "config"
) -> TiergateConfig:
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
                name = node[len(prefix) :]
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
            fields = (
                sorted(parent_model.model_fields)
                if isinstance(parent_model, type) and issubclass(parent_model, BaseModel)
                else []
            )
            msg = "unknown field" + (f"; allowed fields: {', '.join(fields)}" if fields else "")
        else:
            literal = [a for a in get_args(_unwrap(annotation)) if isinstance(a, str)] if annotation else []
            if literal and "allowed" not in msg:
                msg = f"{msg}; allowed values: {', '.join(literal)}"
        lines.append(f"  {where}: {msg}" if where else f"  {msg}")
    return "\n".join(lines)
