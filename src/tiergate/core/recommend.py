"""``tiergate recommend``: which tasks the ledger says should start a tier higher, or lower. Pure: counts
in, advice out.

A task starts at its ``tasks:`` tier. When many of the answers given at that tier fail a quality gate,
each of those requests paid twice: once for the failed answer, once at a higher tier. Starting the task
one tier up costs less than that once the failure rate is high enough (``recommend``).

Lowering needs other evidence, because a task that starts above tier 0 is never answered below it. Shadow
comparisons with ``gates.shadow.lower`` ask a lower deployment a sample of the task's requests that a
higher tier served, and record whether the two answers agree. When the lower tier agreed often enough
(``agreement``) over enough comparisons, starting the task there would have given the same answers for
less (``lowering``). Shadows of local answers against a reference tier are not such evidence: they
exist only for answers tier 0 served, which a task that starts above tier 0 never has.

Advice is given only when there is enough evidence (``min_requests``), and each one carries its counts.
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


@dataclass(frozen=True, slots=True)
class ShadowRow:
    """One shadow comparison: the task, the tier that served the request, the tier asked, and the verdict."""

    task: str
    served_tier: int
    shadow_tier: int
    agreed: bool


@dataclass(slots=True)
class Lowering:
    task: str
    current_tier: int
    suggested_tier: int
    compared: int  # answers served at or above the task's tier, also asked of the suggested tier
    agreed: int

    @property
    def agreement(self) -> float:
        return self.agreed / self.compared if self.compared else 0.0

    def line(self) -> str:
        return (
            f"tasks.{self.task}: {self.current_tier} -> {self.suggested_tier}  ({self.agreed} of {self.compared} "
            f"answers served at tier {self.current_tier}+ were matched at tier {self.suggested_tier} "
            f"in shadow comparisons)"
        )


def lowering(
    task_tiers: Mapping[str, int], shadows: Iterable[ShadowRow], *, min_requests: int = 20, agreement: float = 0.9
) -> list[Lowering]:
    """Tasks above tier 0 whose answers (served at or above their tier) a lower tier matched in at least
    ``agreement`` of at least ``min_requests`` shadow comparisons; suggested tier: the lowest such tier.
    Sorted by agreement, highest first."""
    counts: dict[tuple[str, int], list[int]] = {}  # (task, lower tier) -> [compared, agreed]
    for s in shadows:
        start = task_tiers.get(s.task)
        if start is not None and s.shadow_tier < start <= s.served_tier:
            c = counts.setdefault((s.task, s.shadow_tier), [0, 0])
            c[0] += 1
            c[1] += s.agreed
    out: dict[str, Lowering] = {}
    for (task, tier), (n, agreed) in sorted(counts.items()):
        if n >= min_requests and agreed / n >= agreement and task not in out:  # the lowest tier first
            out[task] = Lowering(task, task_tiers[task], tier, n, agreed)
    return sorted(out.values(), key=lambda r: (-r.agreement, r.task))
