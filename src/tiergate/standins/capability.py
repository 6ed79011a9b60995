"""Simulated capability: a stand-in model that fails tasks above its class, at seeded rates, in the ways
the quality gates can see; answers as long as the task says; and a simulated generation time.

This is what bench/savings replays an agent workload against. A request opts in with a tag anywhere
in its messages::

    [[standin task=T0042 class=medium answer_tokens=250]]

and a profile per model, set with ``POST /_control/capability``, gives that model's failure rate for
each class of task. Whether a task fails is a hash of (seed, model, task id), so a replay fails the
same tasks on the same model every time, and tiers fail independently of one another. How it fails
follows the request: a JSON request gets broken or schema-less JSON, a tool request a tool call with
arguments that do not parse or miss a required field, any request an empty or reasoning-starved
answer (see ``failure``). ``starve_below`` makes every request (tagged or not) whose ``max_tokens`` is
below it come back reasoning-starved, as a reasoning model does when its allowance is too small.

Pure: no I/O, no state; the stand-in's control state holds the parsed :class:`Capability`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .fake_model import VOCAB

CLASSES = ("simple", "medium", "complex")
TEXT_FAILURES = ("empty", "reasoning_starved")
JSON_FAILURES = ("invalid_json", "json_schema", "reasoning_starved")
TOOL_FAILURES = ("tool_arguments", "tool_schema", "empty")
MAX_ANSWER_TOKENS = 100_000

_TAG = re.compile(r"\[\[standin ([^\]]{1,300})\]\]")


@dataclass(frozen=True)
class TaskTag:
    task: str
    level: str  # one of CLASSES
    answer_tokens: int


@dataclass(frozen=True)
class Profile:
    """One model's simulated capability."""

    fail: Mapping[str, float] = field(default_factory=dict)  # class -> share of tagged tasks it fails
    first_s: float = 0.0  # time to the first token
    per_token_s: float = 0.0  # then this per completion token
    starve_below: int = 0  # a max_tokens below this comes back reasoning-starved

    @classmethod
    def parse(cls, raw: Any) -> Profile:
        if not isinstance(raw, dict):
            raise ValueError(f"a profile is an object, got {raw!r}")
        unknown = set(raw) - {"fail", "first_s", "per_token_s", "starve_below"}
        if unknown:
            raise ValueError(f"unknown profile keys {sorted(unknown)}")
        fail = raw.get("fail", {})
        if not isinstance(fail, dict) or set(fail) - set(CLASSES):
            raise ValueError(f"fail maps classes {CLASSES} to rates, got {fail!r}")
        for level, rate in fail.items():
            if not _number(rate) or not 0 <= rate <= 1:
                raise ValueError(f"fail.{level} must be a number in [0, 1], got {rate!r}")
        for key in ("first_s", "per_token_s"):
            if not _number(raw.get(key, 0)) or raw.get(key, 0) < 0:
                raise ValueError(f"{key} must be a number >= 0")
        starve = raw.get("starve_below", 0)
        if not isinstance(starve, int) or isinstance(starve, bool) or starve < 0:
            raise ValueError("starve_below must be an integer >= 0")
        return cls(dict(fail), float(raw.get("first_s", 0)), float(raw.get("per_token_s", 0)), starve)

    def delay_s(self, completion_tokens: int) -> float:
        return self.first_s + completion_tokens * self.per_token_s


@dataclass(frozen=True)
class Capability:
    """Profiles by model (``*``: any model without its own) and the seed of the failure draws."""

    seed: int = 0
    profiles: Mapping[str, Profile] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any) -> Capability:
        if not isinstance(raw, dict) or not isinstance(raw.get("profiles"), dict):
            raise ValueError('expected {"seed": N, "profiles": {"MODEL or *": {...}}}')
        unknown = set(raw) - {"seed", "profiles"}
        if unknown:
            raise ValueError(f"unknown capability keys {sorted(unknown)}")
        seed = raw.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError("seed must be an integer")
        profiles = {}
        for model, p in raw["profiles"].items():
            try:
                profiles[model] = Profile.parse(p)
            except ValueError as exc:
                raise ValueError(f"profiles.{model}: {exc}") from None
        return cls(seed, profiles)

    def for_model(self, model: str) -> Profile | None:
        return self.profiles.get(model) or self.profiles.get("*")


def task_tag(prompt: str) -> TaskTag | None:
    """The task a request carries, or None when it has no (well-formed) tag."""
    m = _TAG.search(prompt)
    if m is None:
        return None
    fields = dict(part.partition("=")[::2] for part in m.group(1).split())
    level, task, tokens = fields.get("class", ""), fields.get("task", ""), fields.get("answer_tokens", "")
    if level not in CLASSES or not task or not tokens.isdigit():
        return None
    return TaskTag(task, level, max(1, min(int(tokens), MAX_ANSWER_TOKENS)))


def failure(cap: Capability, model: str, tag: TaskTag, *, wants_json: bool, calls_tool: bool) -> str | None:
    """How ``model`` fails this task, or None when it does it: the task fails with the probability its
    profile gives the task's class; the way is drawn from the ones this request can show."""
    profile = cap.for_model(model)
    if profile is None or _unit(cap.seed, model, tag.task, "fails") >= profile.fail.get(tag.level, 0.0):
        return None
    kinds = TOOL_FAILURES if calls_tool else JSON_FAILURES if wants_json else TEXT_FAILURES
    return kinds[min(len(kinds) - 1, int(_unit(cap.seed, model, tag.task, "how") * len(kinds)))]


def answer_text(name: str, task: str, words: int) -> str:
    """``[name]`` then ``words - 1`` words of the fake vocabulary (one token each), fixed by the task."""
    seed = int.from_bytes(hashlib.sha256(task.encode()).digest()[:4], "big")
    return " ".join([f"[{name}]"] + [VOCAB[(seed + 7 * i) % len(VOCAB)] for i in range(max(0, words - 1))])


def _unit(seed: int, *parts: str) -> float:
    """A number in [0, 1) fixed by the seed and the parts."""
    digest = hashlib.sha256("\0".join((str(seed), *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
