"""``tiergate recommend``: which tasks the ledger says should start a tier higher. Pure: counts in, advice out.

A task starts at its ``tasks:`` tier. When many of the answers given at that tier fail a quality gate,
each of those requests paid twice: once for the failed answer, once at a higher tier. Starting the task
one tier up costs less than that once the failure rate is high enough. Advice is given only when there
is enough evidence (``min_requests``), and each one carries its counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class GateFailureRow:
    task: str
    tier: int
    gate: str


@dataclass(slots=True)
class Recommendation:
    task: str
    current_tier: int
    suggested_tier: int
    requests: int  # of the task in the period
    failed_at_start: int  # answers at its starting tier that failed a gate
    gates: dict[str, int] = field(default_factory=dict)

    @property
    def failure_rate(self) -> float:
        return self.failed_at_start / self.requests if self.requests else 0.0

    def line(self) -> str:
        gates = ", ".join(f"{g} {n}" for g, n in sorted(self.gates.items(), key=lambda kv: -kv[1]))
        return (
            f"tasks.{self.task}: {self.current_tier} -> {self.suggested_tier}  "
            f"({self.failed_at_start} of {self.requests} answers at tier {self.current_tier} failed a gate: {gates})"
        )


def recommend(
    task_tiers: Mapping[str, int],
    requests: Mapping[str, int],
    failures: Iterable[GateFailureRow],
    served_tiers: Mapping[str, Iterable[int]],
    *,
    min_requests: int = 20,
    threshold: float = 0.2,
) -> list[Recommendation]:
    """Tasks whose answers at their starting tier failed a gate at least ``threshold`` of the time, over at
    least ``min_requests`` requests; suggested tier: the lowest tier above it that served the task, else
    the next one. Sorted by failure rate, highest first."""
    failures = list(failures)
    out = []
    for task, start in task_tiers.items():
        n = requests.get(task, 0)
        at_start = [f for f in failures if f.task == task and f.tier == start] if n >= min_requests else []
        if not at_start or len(at_start) / n < threshold:
            continue
        gates: dict[str, int] = {}
        for f in at_start:
            gates[f.gate] = gates.get(f.gate, 0) + 1
        above = sorted(t for t in set(served_tiers.get(task, ())) if t > start)
        out.append(Recommendation(task, start, above[0] if above else min(start + 1, 9), n, len(at_start), gates))
    return sorted(out, key=lambda r: (-r.failure_rate, r.task))
