"""The catalog Codex reads from model_catalog_url: every listed name, the smallest window it can reach."""

from __future__ import annotations

from tiergate.api.codex_catalog import codex_models
from tiergate.config.catalog import build_catalog
from tiergate.config.schema import TiergateConfig


def catalog():
    cfg = TiergateConfig.model_validate(
        {
            "providers": {"p": {"api": "openai-chat", "base_url": "http://127.0.0.1:1/v1", "local": True}},
            "deployments": [
                {"name": "small", "provider": "p", "model": "a", "tier": 0, "context_window": 8192},
                {"name": "big", "provider": "p", "model": "b", "tier": 1, "context_window": 128000},
            ],
            "aliases": {"coder": ["small", "big"], "roomy": ["big"]},
        }
    )
    return build_catalog(cfg)


def test_every_name_is_an_entry_with_the_weakest_window_it_reaches():
    models = {m["slug"]: m for m in codex_models(catalog())["models"]}
    assert list(models) == ["auto", "coder", "roomy", "small", "big"]
    assert {n: m["context_window"] for n, m in models.items()} == {
        "auto": 8192,
        "coder": 8192,
        "roomy": 128000,
        "small": 8192,
        "big": 128000,
    }
    assert [m["priority"] for m in models.values()] == [0, 1, 2, 3, 4]
    # the fields Codex's ModelInfo requires, with a system prompt of tiergate's own
    for m in models.values():
        assert m["visibility"] == "list" and m["supported_in_api"] and m["base_instructions"]
        assert m["truncation_policy"] == {"mode": "tokens", "limit": 10000}
        assert m["apply_patch_tool_type"] == "freeform" and m["shell_type"] == "shell_command"
