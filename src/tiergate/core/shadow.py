"""Shadow comparisons, pure: do two answers to one request agree, and may a comparison be afforded today?

A sample of the answers a local tier served is also asked of a reference tier in the background. The
two answers are compared: tool calls by name and parsed arguments; text as JSON values when JSON was
asked for (``json``), else as the same words (``exact``: case and runs of spaces aside).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from tiergate.core.gates import AnswerView


def _args(raw: object) -> object:
    if isinstance(raw, str):
        try:
            return orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            return raw
    return raw


def agree(served: AnswerView, reference: AnswerView, mode: str) -> bool:
    """Whether the served answer says what the reference says (``mode``: exact or json)."""
    if served.tool_calls or reference.tool_calls:
        return [(c.name, _args(c.arguments)) for c in served.tool_calls] == [
            (c.name, _args(c.arguments)) for c in reference.tool_calls
        ]
    if mode == "json":
        try:
            return bool(orjson.loads(served.text) == orjson.loads(reference.text))
        except orjson.JSONDecodeError:
            return False
    return " ".join(served.text.split()).casefold() == " ".join(reference.text.split()).casefold()


@dataclass(slots=True)
class ShadowBudget:
    """What comparisons spent on one day (UTC); a comparison is made only when its worst case still fits."""

    per_day_usd: float
    day: int = -1
    spent_usd: float = 0.0

    def _roll(self, now: float) -> None:
        day = int(now // 86400)
        if day != self.day:
            self.day, self.spent_usd = day, 0.0

    def fits(self, worst_case_usd: float, now: float) -> bool:
        self._roll(now)
        return self.spent_usd + worst_case_usd <= self.per_day_usd

    def spend(self, usd: float, now: float) -> None:
        self._roll(now)
        self.spent_usd += usd
