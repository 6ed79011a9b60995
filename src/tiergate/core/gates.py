"""Quality gates: does an answer do what its request asked? Pure: an answer's view in, a verdict out.

An upstream that answers 200 may still have failed its agent: no text and no
tool call, a reasoning model that spent its whole allowance thinking, JSON
that does not parse or does not fit the schema the client sent, a tool call
whose arguments are broken or name a tool nobody offered. Each is a named
gate; a failed gate lets the executor escalate the request to a better tier.

The adapters turn a protocol's reply or stream into an ``AnswerView`` and a
request body into ``Expectations``; this module only judges. Regular
expressions (the operator's and those in a client's schema) run with a time
limit: an answer is untrusted text, and one pathological pattern must not
stall the event loop. What cannot be judged (an invalid schema, a pattern
that ran out of time) passes: a gate fails an answer only on evidence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

import orjson
import regex

GateName = Literal[
    "empty",
    "reasoning_starved",
    "invalid_json",
    "json_schema",
    "tool_arguments",
    "unknown_tool",
    "tool_schema",
    "refusal",
    "min_length",
    "regex",
]
GATES: Final[tuple[str, ...]] = get_args(GateName)
# min_length and regex do nothing until configured; refusal without patterns judges only a protocol's own
# refusal field (OpenAI's message.refusal)
DEFAULT_CHECKS: Final = frozenset(GATES)
StreamMode = Literal["auto", "hold", "prefix", "off"]
STREAM_MODES: Final[tuple[str, ...]] = get_args(StreamMode)
PATTERN_TIMEOUT_S: Final = 0.05  # per pattern and answer; past it the pattern is not judged
REFUSAL_WINDOW: Final = 400  # refusals open an answer: patterns look at its first characters only


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: Any  # a JSON text (OpenAI), or the object itself (Anthropic, Ollama, Gemini)
    freeform: bool = False  # a Responses custom tool's raw input: no JSON to judge


@dataclass(slots=True)
class AnswerView:
    """What an answer holds, whatever its protocol said it in."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    truncated: bool = False  # stopped for length (finish_reason length, stop_reason max_tokens, ...)
    refusal: str = ""  # a refusal the protocol names as one
    complete: bool = True  # a stream: its protocol's end arrived


@dataclass(frozen=True, slots=True)
class Expectations:
    """What the request asked of its answer."""

    json: bool = False  # JSON text (json_object, a JSON schema, Ollama's format, Gemini's MIME type)
    schema: Mapping[str, Any] | None = None  # the schema the JSON must fit
    tools: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)  # name -> parameters schema
    tools_known: bool = True  # every offered tool was understood: a call to another name is unknown


NO_EXPECTATIONS: Final = Expectations()


@dataclass(frozen=True, slots=True)
class GateRule:
    """The gates one request's answers must pass (config's defaults, then its task's, alias's, deployment's)."""

    enabled: bool = True
    checks: frozenset[str] = DEFAULT_CHECKS
    refusal_patterns: tuple[regex.Pattern[str], ...] = ()
    min_chars: int = 0
    must_match: tuple[regex.Pattern[str], ...] = ()
    stream: StreamMode = "auto"
    prefix_chars: int = 1  # the first visible character: empty and reasoning-only answers are caught, little waits

    def stream_mode(self, expect: Expectations) -> StreamMode:
        """``auto``: hold JSON and tool-call answers whole (they can only be judged whole), prefix the rest."""
        if self.stream != "auto":
            return self.stream
        return "hold" if expect.json or expect.tools else "prefix"


@dataclass(frozen=True, slots=True)
class GateRulePatch:
    """One config level's changes to a rule; None leaves the level below as it is."""

    enabled: bool | None = None
    checks: frozenset[str] | None = None
    refusal_patterns: tuple[regex.Pattern[str], ...] | None = None
    min_chars: int | None = None
    must_match: tuple[regex.Pattern[str], ...] | None = None
    stream: StreamMode | None = None
    prefix_chars: int | None = None

    def over(self, rule: GateRule) -> GateRule:
        changes = {f.name: v for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}
        return dataclasses.replace(rule, **changes) if changes else rule


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """Which requests are gated and how far a failed one climbs."""

    apply_to: Literal["routed", "all", "none"] = "routed"  # routed: auto and task routing
    max_escalations: int = 2
    escalate_to: Literal["next_tier", "next_candidate"] = "next_tier"
    starved_retry_factor: float = 2.0  # a reasoning-starved answer is retried once with this times its allowance
    default: GateRule = GateRule()
    tasks: Mapping[str, GateRulePatch] = field(default_factory=dict)
    models: Mapping[str, GateRulePatch] = field(default_factory=dict)  # aliases (and model_map targets)
    deployments: Mapping[str, GateRulePatch] = field(default_factory=dict)

    def for_request(self, task: str | None, model: str, *, routed: bool) -> GateRule | None:
        """The rule for a request's answers, or None when it is not gated."""
        t = self.tasks.get(task) if task is not None else None
        m = self.models.get(model)
        rule = self.default
        if t is not None:
            rule = t.over(rule)
        if m is not None:
            rule = m.over(rule)
        explicit = m.enabled if m is not None and m.enabled is not None else (t.enabled if t is not None else None)
        if explicit is not None:
            gated = explicit
        else:
            gated = self.default.enabled and (self.apply_to == "all" or (self.apply_to == "routed" and routed))
        return rule if gated else None

    def for_deployment(self, rule: GateRule, deployment: str) -> GateRule:
        """The rule for ``deployment``'s answers: a deployment's patch adjusts it (``enabled: false`` ends it)."""
        patch = self.deployments.get(deployment)
        return patch.over(rule) if patch is not None else rule


DEFAULT_POLICY: Final = GatePolicy()


@dataclass(frozen=True, slots=True)
class GateFailure:
    gate: str
    detail: str

    def __str__(self) -> str:
        return f"gate {self.gate}: {self.detail}"


def judge(view: AnswerView, expect: Expectations, rule: GateRule) -> GateFailure | None:
    """The first gate the answer fails, or None when it passes every enabled one."""
    if not rule.enabled:
        return None
    on = rule.checks
    text = view.text.strip()
    if view.refusal and "refusal" in on:
        return GateFailure("refusal", f"the model refused: {_clip(view.refusal)}")
    if not text and not view.tool_calls:
        if view.truncated and "reasoning_starved" in on:
            thought = f" after {len(view.reasoning)} characters of reasoning" if view.reasoning else ""
            return GateFailure("reasoning_starved", f"stopped for length with no visible answer{thought}")
        if view.reasoning and "reasoning_starved" in on:
            return GateFailure("reasoning_starved", "only reasoning, no answer")
        if "empty" in on:
            return GateFailure("empty", "no text and no tool call")
        return None
    for call in view.tool_calls:
        failed = _judge_call(call, expect, on)
        if failed is not None:
            return failed
    if text:
        failed = _judge_text(text, view, expect, rule)
        if failed is not None:
            return failed
    return None


def _judge_call(call: ToolCall, expect: Expectations, on: frozenset[str]) -> GateFailure | None:
    offered = expect.tools
    if call.name not in offered:
        if "unknown_tool" in on and expect.tools_known:
            names = ", ".join(sorted(offered)[:8]) or "none"
            return GateFailure("unknown_tool", f"called {_clip(call.name, 60)!r}; offered: {names}")
        return None
    if call.freeform:
        return None
    args = call.arguments
    if isinstance(args, str):
        try:
            args = orjson.loads(args) if args.strip() else {}
        except orjson.JSONDecodeError as exc:
            if "tool_arguments" in on:
                return GateFailure("tool_arguments", f"{call.name}'s arguments are not JSON ({exc})")
            return None
    if not isinstance(args, dict):
        if "tool_arguments" in on:
            return GateFailure("tool_arguments", f"{call.name}'s arguments are {type(args).__name__}, not an object")
        return None
    schema = offered[call.name]
    if schema and "tool_schema" in on:
        problem = schema_problem(args, schema)
        if problem is not None:
            return GateFailure("tool_schema", f"{call.name}'s arguments: {problem}")
    return None


def _judge_text(text: str, view: AnswerView, expect: Expectations, rule: GateRule) -> GateFailure | None:
    on = rule.checks
    if expect.json and not view.tool_calls and ("invalid_json" in on or "json_schema" in on):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            if "invalid_json" in on:
                cut = " (stopped for length)" if view.truncated else ""
                return GateFailure("invalid_json", f"the answer is not JSON{cut}: {exc}")
            return None
        if expect.schema and "json_schema" in on:
            problem = schema_problem(value, expect.schema)
            if problem is not None:
                return GateFailure("json_schema", problem)
    if rule.refusal_patterns and "refusal" in on:
        opening = text[:REFUSAL_WINDOW]
        for p in rule.refusal_patterns:
            if _search(p, opening):
                return GateFailure("refusal", f"the answer opens like a refusal ({p.pattern!r}): {_clip(text)}")
    if rule.min_chars and "min_length" in on and len(text) < rule.min_chars:
        return GateFailure("min_length", f"{len(text)} characters, at least {rule.min_chars} wanted")
    if "regex" in on:
        for p in rule.must_match:
            if _search(p, text) is False:
                return GateFailure("regex", f"the answer does not match {p.pattern!r}")
    return None


def _search(p: regex.Pattern[str], text: str) -> bool | None:
    """Whether ``p`` is found in ``text``; None when it ran out of time (not judged)."""
    try:
        return p.search(text, timeout=PATTERN_TIMEOUT_S) is not None
    except TimeoutError:
        return None


def _clip(s: str, n: int = 80) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


# ----------------------------------------------------------------------------- JSON Schema, with bounded patterns


def _pattern(validator: Any, pattern: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if not isinstance(pattern, str) or not validator.is_type(instance, "string"):
        return
    try:
        if regex.search(pattern, instance, timeout=PATTERN_TIMEOUT_S) is None:
            yield ValidationError(f"{_clip(instance, 40)!r} does not match {pattern!r}")
    except (TimeoutError, regex.error):
        return


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not isinstance(patterns, dict) or not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for k, v in instance.items():
            try:
                found = regex.search(pattern, k, timeout=PATTERN_TIMEOUT_S) is not None
            except (TimeoutError, regex.error):
                continue
            if found:
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def schema_problem(value: Any, schema: Mapping[str, Any]) -> str | None:
    """Why ``value`` does not fit ``schema`` (the first error, with its path), or None.

    A schema that is itself invalid, refers to what cannot be resolved or nests past Python's stack is
    not judged (None): the gate fails an answer, never a request's own mistakes.
    """
    from jsonschema import validators
    from jsonschema.exceptions import SchemaError

    try:
        base = validators.validator_for(schema)
        base.check_schema(schema)
        cls = validators.extend(base, {"pattern": _pattern, "patternProperties": _pattern_properties})
        error = next(iter(cls(schema).iter_errors(value)), None)
    except (SchemaError, RecursionError):
        return None
    except Exception:
        return None
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{'at ' + where + ': ' if where else ''}{_clip(error.message, 160)}"
