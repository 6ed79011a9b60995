"""How much memory a GGUF model needs once loaded: weights plus the KV cache.

``estimate_memory_mb`` is pure (table-tested); ``read_gguf_shape`` reads only the
metadata section of a GGUF file (the key/value header, never the tensors), so it
takes milliseconds even for a 20 GB model and needs no third-party package.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MIB = 1024 * 1024
FALLBACK_FACTOR = 1.2  # weights + KV + compute buffers when the header cannot be read
KV_BYTES_PER_VALUE = 2  # llama.cpp's default KV cache type is f16

# GGUF value types -> fixed element size in bytes (8 = string, 9 = array are variable)
_FIXED_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_INT_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 10: "<Q", 11: "<q"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GgufShape:
    """The header fields that size the KV cache."""

    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int | tuple[int, ...]  # some models give one count per layer
    key_length: int | None = None
    value_length: int | None = None


def kv_cache_bytes(shape: GgufShape, context: int) -> int:
    """K and V for every layer and every token of ``context`` (all slots together)."""
    head_dim = shape.embedding_length // max(shape.head_count, 1)
    per_head = (shape.key_length or head_dim) + (shape.value_length or head_dim)
    if isinstance(shape.head_count_kv, tuple):
        kv_heads = sum(shape.head_count_kv)
    else:
        kv_heads = shape.head_count_kv * shape.block_count
    return kv_heads * per_head * context * KV_BYTES_PER_VALUE


def estimate_memory_mb(file_bytes: int, shape: GgufShape | None, *, context: int) -> int:
    """MiB a loaded model takes: file size plus KV cache, or file size x 1.2 without a header."""
    if shape is None:
        return max(1, math.ceil(file_bytes * FALLBACK_FACTOR / MIB))
    return max(1, math.ceil((file_bytes + kv_cache_bytes(shape, context)) / MIB))


def estimate_file_memory_mb(path: Path, context: int) -> int:
    """Stat and read the header of ``path`` (I/O); raises FileNotFoundError when it is missing."""
    return estimate_memory_mb(Path(path).stat().st_size, read_gguf_shape(path), context=context)


def read_gguf_shape(path: Path) -> GgufShape | None:
    """The KV-cache shape from a GGUF header, or None when it is not a readable GGUF v2/v3."""
    try:
        with open(path, "rb") as f:
            meta = _read_metadata(f)
    except (OSError, ValueError, struct.error, UnicodeDecodeError):
        return None
    if meta is None:
        return None
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        return None

    def field(name: str) -> object:
        return meta.get(f"{arch}.{name}")

    block, embd, heads = field("block_count"), field("embedding_length"), field("attention.head_count")
    kv = field("attention.head_count_kv")
    if kv is None:
        kv = heads
    if (
        not (isinstance(block, int) and isinstance(embd, int) and isinstance(heads, int))
        or min(block, embd, heads) <= 0
    ):
        return None
    if isinstance(kv, list):
        kv = tuple(int(x) for x in kv)
    elif not isinstance(kv, int):
        return None
    key_len, val_len = field("attention.key_length"), field("attention.value_length")
    return GgufShape(
        block,
        embd,
        heads,
        kv,
        key_len if isinstance(key_len, int) else None,
        val_len if isinstance(val_len, int) else None,
    )


def _read_metadata(f: BinaryIO) -> dict[str, object] | None:
    """The header's integer, string and small integer-array values; tokenizer data is skipped."""
    if f.read(4) != b"GGUF":
        return None
    (version,) = struct.unpack("<I", f.read(4))
    if version < 2:
        return None
    _tensor_count, kv_count = struct.unpack("<QQ", f.read(16))
    meta: dict[str, object] = {}
    for _ in range(kv_count):
        key = _read_str(f)
        (vtype,) = struct.unpack("<I", f.read(4))
        meta[key] = _read_value(f, vtype, keep=not key.startswith("tokenizer."))
    return meta


def _read_str(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", f.read(8))
    return f.read(n).decode("utf-8")


def _read_value(f: BinaryIO, vtype: int, *, keep: bool) -> object:
    if vtype in _INT_FORMATS:
        (v,) = struct.unpack(_INT_FORMATS[vtype], f.read(_FIXED_SIZES[vtype]))
        return v
    if vtype in _FIXED_SIZES:
        f.seek(_FIXED_SIZES[vtype], 1)
        return None
    if vtype == _STRING:
        if keep:
            return _read_str(f)
        (n,) = struct.unpack("<Q", f.read(8))
        f.seek(n, 1)
        return None
    if vtype == _ARRAY:
        etype, n = struct.unpack("<IQ", f.read(12))
        if etype in _INT_FORMATS and keep and n <= 4096:
            size = _FIXED_SIZES[etype]
            fmt = "<" + _INT_FORMATS[etype][1] * n
            return list(struct.unpack(fmt, f.read(size * n)))
        if etype in _FIXED_SIZES:
            f.seek(_FIXED_SIZES[etype] * n, 1)
            return None
        if etype == _STRING:
            for _ in range(n):
                (m,) = struct.unpack("<Q", f.read(8))
                f.seek(m, 1)
            return None
        raise ValueError(f"unsupported GGUF array element type {etype}")
    raise ValueError(f"unknown GGUF value type {vtype}")
