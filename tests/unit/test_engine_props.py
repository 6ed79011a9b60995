"""What llama.cpp's /props and Ollama's /api/show change in a deployment's capabilities, and which deployments
are asked."""

from __future__ import annotations

import pytest

from tiergate.config.catalog import build_catalog
from tiergate.config.loading import config_from_dict
from tiergate.core.capabilities import CHAT_DEFAULT, EMBEDDINGS_ONLY
from tiergate.local.engine_probe import capabilities_from_props, capabilities_from_show, probe_targets

VISION = CHAT_DEFAULT | {"vision"}


@pytest.mark.parametrize(
    ("props", "guessed", "expected"),
    [
        ({"modalities": {"vision": False, "audio": False}}, VISION, CHAT_DEFAULT),  # gemma-3 without mmproj
        ({"modalities": {"vision": True}}, CHAT_DEFAULT, VISION),  # a vision model under another name
        ({"modalities": {"vision": True}}, VISION, VISION),
        ({"modalities": {"vision": True}}, EMBEDDINGS_ONLY, EMBEDDINGS_ONLY),  # an embedder does not chat
        ({"modalities": {"vision": "yes"}}, VISION, None),
        ({"modalities": []}, VISION, None),
        ({"total_slots": 2}, VISION, None),  # an older llama.cpp: nothing said
        (["not", "props"], VISION, None),
        (None, VISION, None),  # down, slow, 404 or too large
    ],
)
def test_props_table(props, guessed, expected):
    assert capabilities_from_props(props, guessed) == expected


@pytest.mark.parametrize(
    ("show", "expected"),
    [
        # docs/api.md's /api/show example (llava) and what Ollama lists for other kinds of model
        ({"capabilities": ["completion", "vision"]}, {"chat", "json_schema", "vision"}),
        ({"capabilities": ["completion", "tools", "thinking"]}, {"chat", "json_schema", "tools", "reasoning"}),
        ({"capabilities": ["embedding"]}, {"embeddings"}),
        ({"capabilities": ["completion", "insert"]}, {"chat", "json_schema"}),  # insert: no tiergate meaning
        ({"capabilities": ["insert", 7, None]}, None),  # nothing we know
        ({"capabilities": []}, None),
        ({"capabilities": "completion"}, None),
        ({"details": {"family": "llama"}}, None),  # an Ollama older than the field
        (["capabilities"], None),
        (None, None),  # down, slow, 404 (not Ollama) or too large
    ],
)
def test_show_table(show, expected):
    assert capabilities_from_show(show) == (None if expected is None else frozenset(expected))


BOX = {"api": "openai-chat", "base_url": "http://127.0.0.1:8080/v1", "local": True}


def test_only_local_undeclared_deployments_are_probed_once_per_server():
    cfg = config_from_dict(
        {
            "providers": {
                "box": BOX,
                "cloud": {"api": "openai-chat", "base_url": "https://cloud.example/v1"},
                "claude": {"api": "anthropic-messages", "base_url": "http://127.0.0.1:9/v1", "local": True},
                "olla": {"api": "ollama", "base_url": "http://127.0.0.1:11434/", "local": True},
            },
            "deployments": [
                {"name": "a", "provider": "box", "model": "gemma-3"},
                {"name": "b", "provider": "box", "model": "nomic-embed-text"},
                {"name": "c", "provider": "box", "model": "x", "capabilities": ["chat"]},
                {"name": "d", "provider": "cloud", "model": "gpt-4o"},
                {"name": "e", "provider": "claude", "model": "claude-sonnet-4-5"},
                {"name": "f", "provider": "olla", "model": "llava:7b"},
            ],
        },
        env={},
    )
    assert probe_targets(cfg) == {
        "http://127.0.0.1:8080": [("a", "gemma-3", VISION), ("b", "nomic-embed-text", EMBEDDINGS_ONLY)],
        "http://127.0.0.1:11434": [("f", "llava:7b", VISION)],
    }
    catalog = build_catalog(cfg, probed={"a": CHAT_DEFAULT, "c": VISION})
    assert catalog.deployments["a"].capabilities == CHAT_DEFAULT  # the engine's word over the family's
    assert catalog.deployments["c"].capabilities == frozenset({"chat"})  # config's word over the engine's
    assert catalog.deployments["b"].capabilities == EMBEDDINGS_ONLY
