"""An eval suite file (``tiergate eval SUITE.yaml``): tasks, what each asks for, and its checks.

```yaml
name: starter
runs: 3                      # per task and target (--runs overrides)
tasks:
  - name: extract-date
    task: extraction         # sent as X-Tiergate-Task
    prompt: "Extract the due date from: 'Invoice due on 2026-12-01.' Answer with the date only."
    max_tokens: 32
    checks: [{contains: "2026-12-01"}]
```

A task may also give ``system``, ``schema`` (a JSON schema the answer must be: sent as
``response_format``), ``json: true`` (any JSON object) and ``tools`` (OpenAI function tools).
Checks: ``exact``, ``contains``, ``regex``, ``json_schema``, ``tool_call`` (a name, or
``{name, arguments}`` where the arguments given must be among the call's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import regex
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tiergate.config.loading import read_config_file
from tiergate.core.errors import ConfigError
from tiergate.core.evals import Check

CHECK_KINDS = ("exact", "contains", "regex", "json_schema", "tool_call")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EvalCheck(_Model):
    exact: str | None = None
    contains: str | None = None
    regex: str | None = None
    json_schema: dict[str, Any] | None = None
    tool_call: str | dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> EvalCheck:
        given = [k for k in CHECK_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(CHECK_KINDS)} (got {', '.join(given) or 'none'})")
        if self.regex is not None:
            try:
                regex.compile(self.regex)
            except regex.error as exc:
                raise ValueError(f"regex {self.regex!r} is not a regular expression: {exc}") from None
        if isinstance(self.tool_call, dict) and not isinstance(self.tool_call.get("name"), str):
            raise ValueError("tool_call: needs a name")
        return self

    def check(self) -> Check:
        kind = next(k for k in CHECK_KINDS if getattr(self, k) is not None)
        return Check(kind, getattr(self, kind))


class EvalTask(_Model):
    name: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    system: str | None = None
    task: str | None = Field(None, description="sent as X-Tiergate-Task")
    max_tokens: int = Field(256, gt=0)
    answer_schema: dict[str, Any] | None = Field(None, alias="schema", description="response_format json_schema")
    json_object: bool = Field(False, alias="json", description="response_format json_object")
    tools: list[dict[str, Any]] = Field(default_factory=list, description="OpenAI function tools")
    checks: list[EvalCheck] = Field(default_factory=list)


class EvalSuite(_Model):
    name: str = "suite"
    runs: int = Field(1, ge=1, le=1000)
    tasks: list[EvalTask] = Field(min_length=1)

    @field_validator("tasks")
    @classmethod
    def _unique(cls, v: list[EvalTask]) -> list[EvalTask]:
        names = [t.name for t in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique: {', '.join(dupes)}")
        return v


def load_suite(path: str | Path) -> EvalSuite:
    """The suite in ``path``; a ConfigError names each field that is wrong."""
    raw = read_config_file(path)
    try:
        return EvalSuite.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path}: invalid eval suite\n" + "\n".join(lines)) from None
