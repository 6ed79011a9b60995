"""Reading a config: find the file, resolve env: secrets, validate, and say every problem at once.

The one place the environment is read (``environment()``); the models are in
``tiergate.config.schema``, the checks of what validates but cannot work in
``tiergate.config.checks``. Every message names its field in one style
(``deployments[0].provider``) so a user can find it in the file.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from tiergate.config.checks import Problem, field_path, file_problems, semantic_problems
from tiergate.config.references import reference_problems
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


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The YAML mapping in ``path`` ({} for an empty file); errors name the file, line and column."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_message(p, exc)) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping, got {type(raw).__name__}")
    return raw


def yaml_error_message(path: Path, exc: yaml.YAMLError) -> str:
    """``c.yaml:3:7: not valid YAML: ...``: PyYAML names the text "<unicode string>", never the file."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    what = getattr(exc, "problem", None) or str(exc)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        what += f" ({context} at line {context_mark.line + 1})"
    elif context:
        what += f" ({context})"
    return f"{where}: not valid YAML: {what}"


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> TiergateConfig:
    """Read YAML (tiergate's own shape or a LiteLLM proxy config) into a validated config."""
    return config_from_dict(read_config_file(path), env=env, source=str(Path(path)))


def config_from_dict(
    raw: dict[str, Any], *, env: Mapping[str, str] | None = None, source: str = "config"
) -> TiergateConfig:
    """A validated config, or a ConfigError listing every problem, one per line; warnings are logged."""
    cfg, problems = validate_config(raw, env=env)
    for p in problems:
        if p.warning:
            log.warning("%s", p)
    errors = [p for p in problems if not p.warning]
    if cfg is None or errors:
        raise ConfigError(f"{source}: invalid config\n" + "\n".join(f"  {p}" for p in errors))
    return cfg


def validate_config(
    raw: dict[str, Any], *, env: Mapping[str, str] | None = None
) -> tuple[TiergateConfig | None, list[Problem]]:
    """(the config or None, every problem found): secrets, then every field the schema refuses."""
    from tiergate.config.litellm import is_litellm_config, translate_litellm

    env = os.environ if env is None else env
    problems: list[Problem] = []
    if is_litellm_config(raw):
        env = {**env, **_litellm_environment(raw)}
        try:
            translation = translate_litellm(raw, env)
        except ConfigError as exc:  # its messages start with the LiteLLM key they are about
            head, _, rest = exc.message.partition(": ")
            return None, [Problem(head, rest) if rest else Problem("", head)]
        raw = translation.config
        problems += [Problem(path, note, warning=True) for path, note in translation.notes]
        if translation.unsupported:  # one warning naming all of them, at start and in check-config
            problems.append(
                Problem(
                    "",
                    f"LiteLLM settings with no meaning here, ignored: {'; '.join(translation.unsupported)}",
                    warning=True,
                )
            )
    raw = _default_master_key(raw, env)
    resolved = _resolve_secrets(raw, env, path=(), problems=problems)
    unset = {p.path for p in problems if not p.warning}
    try:
        cfg: TiergateConfig | None = TiergateConfig.model_validate(resolved)
    except ValidationError as exc:
        cfg = None
        problems += [p for p in validation_problems(exc) if p.path not in unset]  # said once: the variable
        if all(err["loc"] for err in exc.errors()):  # a field failed, so the model validator did not run:
            problems += [_split(line) for line in reference_problems(resolved)]  # dangling names, this run too
    return (None if unset else cfg), problems


def _litellm_environment(raw: Mapping[str, Any]) -> dict[str, str]:
    """LiteLLM's ``environment_variables:`` section: values LiteLLM sets in its environment (they win, as there)."""
    section = raw.get("environment_variables")
    if not isinstance(section, Mapping):
        return {}
    return {str(k): str(v) for k, v in section.items() if v is not None}


def check_config_dict(
    raw: dict[str, Any], *, env: Mapping[str, str], exists: Callable[[Path], bool]
) -> tuple[TiergateConfig | None, list[Problem]]:
    """All that ``check-config`` reports, in one run: the file as a whole, every field, then what validates
    but cannot work (``tiergate.config.checks``; ``exists`` says whether a model file is there)."""
    problems = file_problems(raw)
    if problems:
        return None, problems
    cfg, problems = validate_config(raw, env=env)
    if cfg is not None:
        problems += semantic_problems(cfg, exists=exists)
    return cfg, problems


def _default_master_key(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    auth = raw.get("auth")
    if (auth is None or (isinstance(auth, dict) and "master_key" not in auth)) and env.get("TIERGATE_MASTER_KEY"):
        raw = {**raw, "auth": {**(auth or {}), "master_key": "env:TIERGATE_MASTER_KEY"}}
    return raw


SECRET_FIELDS = {
    "api_key",
    "master_key",
    "bot_token",
    "password",
    "entra_token",
    "azure_ad_token",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
}


def _resolve_secrets(node: Any, env: Mapping[str, str], *, path: tuple[str | int, ...], problems: list[Problem]) -> Any:
    """``env:NAME`` values replaced by the variable; an unset one and a literal secret become problems."""
    if isinstance(node, dict):
        return {k: _resolve_secrets(v, env, path=(*path, str(k)), problems=problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_secrets(v, env, path=(*path, i), problems=problems) for i, v in enumerate(node)]
    if isinstance(node, str):
        where = field_path(path)
        for prefix in ENV_PREFIXES:
            if node.startswith(prefix):
                name = node[len(prefix) :]
                if name not in env:
                    problems.append(Problem(where, f"environment variable {name} is not set"))
                    return node
                return env[name]
        if path and path[-1] in SECRET_FIELDS and node:
            problems.append(Problem(where, "literal secret in config; prefer env:NAME", warning=True))
        elif path == ("ledger",) and masked_url(node) != node:
            problems.append(
                Problem("ledger", "literal password in config; prefer env:NAME holding the whole URL", warning=True)
            )
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
        elif (origin := getattr(node, "__origin__", None)) in (dict, list, tuple):
            node = get_args(node)[0] if origin is tuple else get_args(node)[-1]
        else:
            return owner, None
    return owner, annotation


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model a location points at (the one whose validator reported there), if it is one."""
    node: Any = _unwrap(_walk(loc)[1]) if loc else TiergateConfig
    while (origin := getattr(node, "__origin__", None)) in (dict, list, tuple):
        node = _unwrap(get_args(node)[0] if origin is tuple else get_args(node)[-1])
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


_HEAD = re.compile(r"[A-Za-z_]\w*")


def _split(line: str, loc: tuple[Any, ...] = ()) -> Problem:
    """A validator's ``models[0].memory_mb: too big`` at ``local_models`` -> local_models.models[0].memory_mb."""
    base = field_path(loc)
    head, sep, rest = line.partition(": ")
    first = _HEAD.match(head)
    model = _model_at(loc)
    if sep and first and not any(c.isspace() for c in head) and model is not None and first[0] in model.model_fields:
        return Problem(f"{base}.{head}" if base else head, rest)
    return Problem(base, line)


def validation_problems(exc: ValidationError) -> list[Problem]:
    """One problem per refusal: the field path, what is wrong, and what is allowed."""
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            fields = sorted(parent.model_fields) if parent is not None else []
            msg = "unknown field" + (f"; allowed fields: {', '.join(fields)}" if fields else "")
        else:
            annotation = _walk(loc)[1]
            literal = [a for a in get_args(_unwrap(annotation)) if isinstance(a, str)] if annotation else []
            if literal and "allowed" not in msg:
                msg = f"{msg}; allowed values: {', '.join(literal)}"
        out += [_split(line, loc) for line in msg.splitlines() if line.strip()]  # a model validator: one per line
    return out


def format_validation_error(exc: ValidationError) -> str:
    """One indented line per problem, for a message."""
    return "\n".join(f"  {p}" for p in validation_problems(exc))
