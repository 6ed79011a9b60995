"""docs/configuration.md documents every config field: adding a field without docs fails here."""

from __future__ import annotations

import typing
from pathlib import Path

from pydantic import BaseModel

from tiergate.config.schema import TiergateConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every field: dict values as <name>, list items as []."""
    out = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        out += _nested(info.annotation, path)
    return out


def _nested(annotation, path: str) -> list[str]:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return field_paths(annotation, f"{path}.")
    if origin is dict and args:
        return _nested(args[-1], f"{path}.<name>")
    if origin in (list, tuple) and args:
        return _nested(args[0], f"{path}[]")
    if args and origin is not None and origin not in (dict, list, tuple):  # Optional / Union
        return [p for a in args for p in _nested(a, path)]
    return []


def test_every_config_field_is_documented():
    text = DOC.read_text()
    missing = [p for p in field_paths(TiergateConfig) if f"`{p}`" not in text]
    assert not missing, f"undocumented config fields in docs/configuration.md: {missing}"


def test_walker_sees_nested_fields():
    paths = field_paths(TiergateConfig)
    assert "providers.<name>.api" in paths and "deployments[].price.input_per_mtok" in paths
    assert "routing.fallbacks" in paths and "server.host" in paths


def test_guardrails_worked_example_is_a_valid_config():
    import re

    import yaml

    from tiergate.config.loading import config_from_dict

    text = (DOC.parent / "guardrails.md").read_text()
    raw = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    env = {"TIERGATE_MASTER_KEY": "k", "OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a", "TELEGRAM_BOT_TOKEN": "t"}
    cfg = config_from_dict(raw, env=env)
    assert [b.action for b in cfg.budgets] == ["local-only", "downgrade", "reject"]
    assert cfg.guardian.session_max_age == 8 * 3600 and cfg.guardian.session_idle_ttl == 86400


def test_readme_and_configuration_examples_are_valid_configs():
    import re

    import yaml

    from tiergate.config.loading import config_from_dict

    env = {"TIERGATE_MASTER_KEY": "k", "OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a"}
    for path in (DOC.parents[1] / "README.md", DOC):
        blocks = re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S)
        full = [b for b in blocks if "deployments:" in b]
        assert full, path
        for block in full:
            config_from_dict(yaml.safe_load(block), env=env, source=str(path))
