"""Config for the local model manager: the ``local_models:`` section of the YAML.

```yaml
local_models:
  budget_mb: 20000            # memory the local models may use together
  default: qwen-7b            # the model that comes back when idle ones unload
  load_wait_s: 0              # how long a request waits for a loading model (0 = next candidate at once)
  lock_file: /run/gpu.lock    # while another process holds an flock on it local tiers are busy
  lock_mode: flock            # or exists: the file's presence means busy
  gpu_busy_share: 0.5         # nvidia-smi: other processes above this share of memory -> busy
  models:
    - {name: qwen-7b, gguf: /models/qwen-7b.gguf, context: 8192, memory_mb: 7000, pinned: true}
    - {name: coder-32b, gguf: /models/coder-32b.gguf, context: 8192, idle_ttl: 5m}
    - {name: remote-box, attach: "http://127.0.0.1:8080/v1", memory_mb: 0}
```

Pure: validation never touches the file system (the manager stats GGUF files).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
# Fields that only make sense for a server tiergate starts itself.
_MANAGED_ONLY = ("context", "pinned", "idle_ttl", "threads", "parallel", "gpu_layers", "extra_args")


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``2.5``, ``"30s"``, ``"5m"``, ``"1h"`` or ``"500ms"``; never negative."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as 30, '30s', '5m' or '1h', got {value!r}")
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalModelConfig(_Model):
    """One local model: a GGUF that tiergate runs, or a server it only attaches to."""

    name: str = Field(min_length=1, pattern=r"^\S+$")
    gguf: Path | None = Field(None, description="model file tiergate serves with llama.cpp")
    attach: str | None = Field(None, description="OpenAI base URL (…/v1) of a server tiergate did not start")
    context: int = Field(4096, ge=64, description="tokens per request; the server gets context x parallel")
    memory_mb: int | None = Field(None, ge=0, description="memory when loaded; default: estimated from the GGUF")
    pinned: bool = Field(False, description="loaded at start and never evicted")
    idle_ttl: Duration | None = Field(None, description="unload after this long unused; default: only when evicted")
    threads: int | None = Field(None, ge=1, description="CPU threads; default: half the cores")
    parallel: int = Field(2, ge=1, le=64, description="requests served at once (llama.cpp slots)")
    gpu_layers: int | None = Field(None, ge=0, description="layers offloaded to the GPU (llama.cpp -ngl)")
    extra_args: tuple[str, ...] = Field((), description="more tiergate.local.llamacpp_server arguments")

    @field_validator("attach")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError(
                "must start with http:// or https:// (the server's OpenAI base URL, e.g. http://host:8080/v1)"
            )
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_source(self) -> LocalModelConfig:
        if (self.gguf is None) == (self.attach is None):
            raise ValueError("set exactly one of gguf (a file tiergate serves) or attach (a running server's URL)")
        if self.attach is not None:
            bad = sorted(f for f in _MANAGED_ONLY if f in self.model_fields_set)
            if bad:
                raise ValueError(f"{', '.join(bad)}: only for models tiergate starts (gguf), not attach")
        if self.pinned and self.idle_ttl is not None:
            raise ValueError("idle_ttl: a pinned model never unloads; drop idle_ttl or pinned")
        return self

    @property
    def attached(self) -> bool:
        return self.attach is not None

    @property
    def server_ctx(self) -> int:
        """The llama.cpp ``--ctx`` (shared by all slots)."""
        return self.context * self.parallel


class LocalModelsConfig(_Model):
    budget_mb: int = Field(gt=0, description="memory the local models may use together (MiB)")
    default: str | None = Field(None, description="model loaded at start and brought back when others idle out")
    load_wait_s: Duration = Field(0.0, description="how long a request waits for a loading model; 0 = not at all")
    load_timeout_s: Duration = Field(300.0, gt=0, description="a load slower than this fails")
    lock_file: Path | None = Field(None, description="GPU mutex shared with other programs; large loads take it")
    lock_mode: Literal["flock", "exists"] = Field(
        "flock", description="flock: busy while another process holds an flock on lock_file; exists: while it exists"
    )
    min_residency_s: Duration = Field(30.0, description="a model loaded for a request is not evicted before this")
    max_swaps: int | None = Field(6, ge=1, description="at most this many swaps per swap_window_s; none = no bound")
    swap_window_s: Duration = Field(600.0, gt=0, description="the window max_swaps counts in")
    gpu_busy_share: float | None = Field(
        None, gt=0, le=1, description="busy when other processes use more of the GPU memory"
    )
    models: tuple[LocalModelConfig, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> LocalModelsConfig:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"models: duplicate name(s) {', '.join(dupes)}")
        if self.default is not None:
            if self.default not in names:
                raise ValueError(f"default: {self.default!r} is not one of the models ({', '.join(names)})")
            if self.model(self.default).attached:
                raise ValueError(f"default: {self.default!r} is an attached server; name a model with gguf")
        for i, m in enumerate(self.models):
            if m.memory_mb is not None and m.memory_mb > self.budget_mb:
                raise ValueError(f"models[{i}].memory_mb: {m.memory_mb} exceeds budget_mb {self.budget_mb}")
        fixed = sum(m.memory_mb or 0 for m in self.models if m.pinned or m.attached)
        if fixed > self.budget_mb:
            raise ValueError(
                f"pinned and attached models need {fixed} MB together, more than budget_mb {self.budget_mb}"
            )
        return self

    def model(self, name: str) -> LocalModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no local model named {name!r}; configured: {', '.join(m.name for m in self.models)}")
