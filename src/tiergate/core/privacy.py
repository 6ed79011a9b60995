"""Who may send a request to the cloud: the X-Tiergate-Privacy header and config rules. Pure.

Privacy fails closed. A header value tiergate does not know is an error naming
the allowed values, never a silent "no restriction". Config rules (by key,
agent, task or the model name the client sent) can only make a request
stricter: any match makes it local-only, whatever the header says.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Final, Protocol

from tiergate.core.errors import BadRequest
from tiergate.core.types import Identity

PRIVACY_HEADER: Final = "X-Tiergate-Privacy"
LOCAL_ONLY: Final = frozenset({"local-only", "local_only", "local", "strict", "private", "true", "yes", "on", "1"})
UNRESTRICTED: Final = frozenset({"none", "off", "false", "no", "0", "any"})


def header_local_only(value: str | None) -> bool:
    """Whether an X-Tiergate-Privacy value asks for local-only; BadRequest for anything unknown."""
    if value is None:
        return False
    v = value.strip().lower()
    if not v or v in UNRESTRICTED:
        return False
    if v in LOCAL_ONLY:
        return True
    raise BadRequest(
        f"{PRIVACY_HEADER}: unknown value {value[:40]!r}; allowed: local-only (also local, local_only, strict, "
        "private, true, yes, on, 1) or none (also off, false, no, 0, any)",
        param=PRIVACY_HEADER,
    )


class PrivacyRules(Protocol):
    """``privacy:`` as config gives it (``tiergate.config.schema.PrivacyConfig``), read-only."""

    @property
    def local_only_keys(self) -> Sequence[str]: ...
    @property
    def local_only_agents(self) -> Sequence[str]: ...
    @property
    def local_only_tasks(self) -> Sequence[str]: ...
    @property
    def local_only_models(self) -> Sequence[str]: ...


def _match(value: str | None, patterns: Sequence[str]) -> str | None:
    if value is None:
        return None
    return next((p for p in patterns if p == value or fnmatch.fnmatchcase(value, p)), None)


def rule_local_only(rules: PrivacyRules, ident: Identity, model: str) -> str | None:
    """Why config makes this request local-only (the first rule that matches), or None."""
    for what, value, patterns, field in (
        ("key", ident.key_name, rules.local_only_keys, "local_only_keys"),
        ("agent", ident.agent, rules.local_only_agents, "local_only_agents"),
        ("task", ident.task, rules.local_only_tasks, "local_only_tasks"),
        ("model", model, rules.local_only_models, "local_only_models"),
    ):
        hit = _match(value, patterns)
        if hit is not None:
            return f"privacy local-only: {what} {value} matches privacy.{field} {hit!r}"
    return None
