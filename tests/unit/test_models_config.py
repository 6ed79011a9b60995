"""The ``local_models:`` config section, durations, and the GGUF memory estimate."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from tiergate.config.local_models import LocalModelsConfig, parse_duration
from tiergate.local.gguf_memory import (
    MIB,
    GgufShape,
    estimate_file_memory_mb,
    estimate_memory_mb,
    kv_cache_bytes,
    read_gguf_shape,
)

EXAMPLE = """
budget_mb: 20000
default: qwen-7b
load_wait_s: 0
lock_file: /run/gpu.lock
gpu_busy_share: 0.5
models:
  - {name: qwen-7b, gguf: /models/qwen-7b.gguf, context: 8192, memory_mb: 7000, pinned: true, threads: 4,
     parallel: 2, gpu_layers: 99, extra_args: []}
  - {name: coder-32b, gguf: /models/coder-32b.gguf, context: 8192, idle_ttl: 5m}
  - {name: remote-box, attach: "http://127.0.0.1:8080/v1", memory_mb: 0}
"""


def test_the_documented_example_parses():
    cfg = LocalModelsConfig.model_validate(yaml.safe_load(EXAMPLE))
    qwen, coder, remote = cfg.models
    assert (cfg.budget_mb, cfg.default, cfg.load_wait_s, cfg.gpu_busy_share) == (20000, "qwen-7b", 0.0, 0.5)
    assert str(cfg.lock_file) == "/run/gpu.lock"
    assert (qwen.pinned, qwen.memory_mb, qwen.gpu_layers, qwen.server_ctx) == (True, 7000, 99, 16384)
    assert (coder.idle_ttl, coder.memory_mb, coder.pinned, coder.attached) == (300.0, None, False, False)
    assert (remote.attached, remote.attach, remote.memory_mb) == (True, "http://127.0.0.1:8080/v1", 0)
    assert cfg.model("coder-32b") is coder
    with pytest.raises(KeyError, match="configured: qwen-7b, coder-32b, remote-box"):
        cfg.model("nope")
    with pytest.raises(ValidationError):  # frozen
        cfg.budget_mb = 1  # type: ignore[misc]


def test_lock_mode_and_swap_guard_defaults_and_bounds():
    base = {"budget_mb": 100, "models": [{"name": "a", "gguf": "/m/a.gguf"}]}
    cfg = LocalModelsConfig.model_validate(base)
    assert (cfg.lock_mode, cfg.min_residency_s, cfg.max_swaps, cfg.swap_window_s) == ("flock", 30.0, 6, 600.0)
    cfg = LocalModelsConfig.model_validate(
        {**base, "lock_mode": "exists", "min_residency_s": "2m", "max_swaps": None, "swap_window_s": "1h"}
    )
    assert (cfg.lock_mode, cfg.min_residency_s, cfg.max_swaps, cfg.swap_window_s) == ("exists", 120.0, None, 3600.0)
    for bad in ({"lock_mode": "present"}, {"max_swaps": 0}, {"swap_window_s": 0}, {"min_residency_s": -1}):
        with pytest.raises(ValidationError):
            LocalModelsConfig.model_validate({**base, **bad})


@pytest.mark.parametrize(
    "value,seconds",
    [
        (30, 30.0),
        (2.5, 2.5),
        ("30", 30.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5m", 90.0),
        ("500ms", 0.5),
        (" 10 s ", 10.0),
        (0, 0.0),
    ],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "-1s", -3, "1d", "", None, True, "m", float("inf")])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def _cfg(**over):
    base = {"budget_mb": 10000, "models": [{"name": "a", "gguf": "/m/a.gguf"}]}
    base.update(over)
    return base


INVALID = [
    ("neither gguf nor attach", _cfg(models=[{"name": "a"}]), "exactly one of gguf"),
    ("both gguf and attach", _cfg(models=[{"name": "a", "gguf": "/a", "attach": "http://x/v1"}]), "exactly one"),
    ("attach is not a URL", _cfg(models=[{"name": "a", "attach": "localhost:8080"}]), "http:// or https://"),
    (
        "attach with server options",
        _cfg(models=[{"name": "a", "attach": "http://x/v1", "threads": 2, "pinned": True}]),
        "pinned, threads: only for models tiergate starts",
    ),
    (
        "pinned with idle_ttl",
        _cfg(models=[{"name": "a", "gguf": "/a", "pinned": True, "idle_ttl": "5m"}]),
        "a pinned model never unloads",
    ),
    ("duplicate names", _cfg(models=[{"name": "a", "gguf": "/a"}, {"name": "a", "gguf": "/b"}]), "duplicate name(s) a"),
    ("unknown default", _cfg(default="zz"), "'zz' is not one of the models (a)"),
    ("attached default", _cfg(default="r", models=[{"name": "r", "attach": "http://x/v1"}]), "attached server"),
    (
        "model bigger than budget",
        _cfg(models=[{"name": "a", "gguf": "/a", "memory_mb": 20000}]),
        "models[0].memory_mb: 20000 exceeds budget_mb 10000",
    ),
    (
        "pinned plus attached over budget",
        _cfg(
            models=[
                {"name": "a", "gguf": "/a", "memory_mb": 6000, "pinned": True},
                {"name": "r", "attach": "http://x/v1", "memory_mb": 5000},
            ]
        ),
        "need 11000 MB together",
    ),
    ("unknown field", _cfg(models=[{"name": "a", "gguf": "/a", "ttl": "5m"}]), "Extra inputs are not permitted"),
    ("bad duration", _cfg(models=[{"name": "a", "gguf": "/a", "idle_ttl": "soon"}]), "expected a duration"),
    ("busy share above 1", _cfg(gpu_busy_share=1.5), "less than or equal to 1"),
    ("zero budget", _cfg(budget_mb=0), "greater than 0"),
    ("no models", _cfg(models=[]), "at least 1 item"),
    ("space in name", _cfg(models=[{"name": "a b", "gguf": "/a"}]), "String should match pattern"),
]


@pytest.mark.parametrize("raw,message", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_configs_say_what_is_wrong(raw, message):
    with pytest.raises(ValidationError) as exc:
        LocalModelsConfig.model_validate(raw)
    assert message in str(exc.value)


LLAMA_8B = GgufShape(block_count=32, embedding_length=4096, head_count=32, head_count_kv=8)
GEMMA_LIKE = GgufShape(
    block_count=2, embedding_length=1024, head_count=8, head_count_kv=2, key_length=256, value_length=256
)
PER_LAYER = GgufShape(block_count=3, embedding_length=64, head_count=4, head_count_kv=(1, 2, 4))

ESTIMATES = [
    # (id, file bytes, shape, context, expected MiB)
    ("no header: file x 1.2", 1000 * MIB, None, 8192, 1200),
    ("no header, tiny file rounds up", 10, None, 8192, 1),
    # Llama-3-8B at 8192 tokens: 32 layers x 8 kv heads x (128 + 128) x 8192 x 2 bytes = 1024 MiB
    ("llama 8B, 8k context", 4600 * MIB, LLAMA_8B, 8192, 4600 + 1024),
    ("llama 8B, 2k context", 4600 * MIB, LLAMA_8B, 2048, 4600 + 256),
    ("explicit key/value lengths", 100 * MIB, GEMMA_LIKE, 4096, 100 + 16),  # 2*2*(256+256)*4096*2 = 16 MiB
    ("per-layer kv head counts", 0, PER_LAYER, MIB // 2, 7 * 32),  # (1+2+4) x (16+16) x 2^19 x 2 bytes
]


@pytest.mark.parametrize("file_bytes,shape,context,expected", [c[1:] for c in ESTIMATES], ids=[c[0] for c in ESTIMATES])
def test_estimate_memory_mb(file_bytes, shape, context, expected):
    assert estimate_memory_mb(file_bytes, shape, context=context) == expected


def test_kv_cache_grows_with_context():
    assert kv_cache_bytes(LLAMA_8B, 16384) == 2 * kv_cache_bytes(LLAMA_8B, 8192)


def test_shape_is_read_from_a_real_gguf_header(tmp_path):
    from tiny_gguf import write_tiny_llama

    path = write_tiny_llama(tmp_path / "t.gguf", n_layer=3, n_embd=64, n_head=4, n_head_kv=2)
    assert read_gguf_shape(path) == GgufShape(block_count=3, embedding_length=64, head_count=4, head_count_kv=2)
    size = path.stat().st_size
    kv = 3 * 2 * (16 + 16) * 4096 * 2
    assert estimate_file_memory_mb(path, 4096) == -(-(size + kv) // MIB)


def test_shape_of_the_bundled_smollm2():
    from procs import bundled_gguf

    shape = read_gguf_shape(bundled_gguf())
    assert shape == GgufShape(block_count=30, embedding_length=576, head_count=9, head_count_kv=3)


def test_unreadable_files_fall_back_to_size(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all" * 1000)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 8 + b"\x05" + b"\x00" * 7 + b"\x10")
    assert read_gguf_shape(junk) is None and read_gguf_shape(truncated) is None
    assert read_gguf_shape(tmp_path / "missing.gguf") is None
    assert estimate_file_memory_mb(junk, 8192) == 1
    with pytest.raises(FileNotFoundError):
        estimate_file_memory_mb(tmp_path / "missing.gguf", 8192)


def test_the_example_in_the_configuration_docs_is_valid():
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    section = doc[doc.index("## `local_models`") :]
    raw = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    cfg = LocalModelsConfig.model_validate(raw["local_models"])
    assert [m.name for m in cfg.models] == ["qwen-7b", "coder-32b", "remote-box"]
