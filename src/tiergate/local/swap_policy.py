"""Pure swap decisions for the local model manager (no I/O, no clock, table-tested).

- ``plan_load``: what to evict so a model fits the memory budget -- least recently
  used idle models first; never a model serving (or queued for) a request, never a
  pinned or attached one -- or why it cannot load now (``CannotFit``).
- ``expired_idle``: which idle models have outlived their ``idle_ttl``.
- ``serve_order``: queued requests grouped by model, the loaded models' groups first,
  so a burst for two models costs one swap instead of one per request.
- ``residents_to_restore``: pinned models, and the default when it fits without evicting.

States: stopped, queued (waiting for its turn to load), loading, ready, unloading, failed.
Memory is held by loading, ready and unloading models; pinned and attached models
always count (their memory is reserved even while a pinned one restarts).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

RESIDENT_STATES = frozenset({"loading", "ready", "unloading"})


@dataclass(frozen=True)
class ModelView:
    """What the policy needs to know about one model at one moment."""

    name: str
    memory_mb: int
    state: str = "stopped"
    in_flight: int = 0  # requests being served, plus requests queued for it while it is loaded
    pinned: bool = False
    attached: bool = False
    last_used: float = 0.0  # clock time the last request finished (or the load completed)
    idle_ttl: float | None = None

    @property
    def holds_memory(self) -> bool:
        return self.attached or self.pinned or self.state in RESIDENT_STATES

    @property
    def evictable_now(self) -> bool:
        return not (self.pinned or self.attached) and self.state == "ready" and self.in_flight == 0


@dataclass(frozen=True)
class LoadPlan:
    """Load ``model`` after unloading ``evict`` (in this order); ``reason`` explains it."""

    model: str
    evict: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class CannotFit:
    """``model`` cannot load now. ``wait_for``: busy models whose release would make room;
    ``permanent``: it can never fit beside the pinned and attached models."""

    model: str
    reason: str
    wait_for: tuple[str, ...] = ()
    permanent: bool = False


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _busy_why(m: ModelView) -> str:
    if m.state == "ready":
        return f"{m.name} ({_plural(m.in_flight, 'request')} in flight)"
    return f"{m.name} ({m.state})"


def plan_load(models: Sequence[ModelView], requested: str, *, budget_mb: int) -> LoadPlan | CannotFit:
    """Decide how ``requested`` fits into ``budget_mb`` given every model's current state."""
    by_name = {m.name: m for m in models}
    req = by_name[requested]
    if req.attached or req.state in RESIDENT_STATES:
        return LoadPlan(requested, (), f"{requested} is already {req.state if not req.attached else 'attached'}")
    others = [m for m in models if m.name != requested]
    need = req.memory_mb
    fixed = sum(m.memory_mb for m in others if m.pinned or m.attached)
    if need > budget_mb - fixed:
        return CannotFit(
            requested,
            f"needs {need} MB but only {budget_mb - fixed} MB of the {budget_mb} MB budget "
            "is not held by pinned or attached models",
            permanent=True,
        )
    free = budget_mb - sum(m.memory_mb for m in others if m.holds_memory)
    if need <= free:
        return LoadPlan(requested, (), f"fits: needs {need} MB, {free} MB free")
    idle = sorted((m for m in others if m.evictable_now), key=lambda m: (m.last_used, m.name))
    victims: list[str] = []
    room = free
    for m in idle:
        if room >= need:
            break
        victims.append(m.name)
        room += m.memory_mb
    if room >= need:
        return LoadPlan(
            requested,
            tuple(victims),
            f"evicts {', '.join(victims)} (least recently used idle) to free {need - free} MB",
        )
    busy = sorted(
        (m for m in others if not (m.pinned or m.attached) and m.holds_memory and not m.evictable_now),
        key=lambda m: (m.state != "unloading", m.last_used, m.name),
    )
    blockers: list[ModelView] = []
    for m in busy:
        if room >= need:
            break
        blockers.append(m)
        room += m.memory_mb
    return CannotFit(
        requested,
        f"waiting for {', '.join(_busy_why(m) for m in blockers)} to free memory: needs {need} MB, {free} MB free",
        wait_for=tuple(m.name for m in blockers),
    )


def expired_idle(models: Iterable[ModelView], now: float, *, keep: Collection[str] = ()) -> list[str]:
    """Idle, unpinned, ready models unused for at least their ``idle_ttl`` (oldest first)."""
    due = [
        m
        for m in models
        if m.evictable_now and m.idle_ttl is not None and m.name not in keep and now - m.last_used >= m.idle_ttl
    ]
    return [m.name for m in sorted(due, key=lambda m: (m.last_used, m.name))]


def serve_order(queue: Sequence[tuple[str, int]], loaded: Collection[str]) -> list[tuple[str, int]]:
    """Queued ``(model, seq)`` requests grouped by model: loaded models' groups first, then the
    other groups by their oldest request; within a group by ``seq``."""
    groups: dict[str, list[int]] = {}
    for model, seq in queue:
        groups.setdefault(model, []).append(seq)
    order = sorted(groups, key=lambda model: (model not in loaded, min(groups[model]), model))
    return [(model, seq) for model in order for seq in sorted(groups[model])]


def residents_to_restore(models: Sequence[ModelView], budget_mb: int, *, default: str | None) -> list[str]:
    """Stopped models to load without being asked: every pinned one, and the default when it fits
    in free memory (it never evicts anything to come back)."""
    out = [m.name for m in models if m.pinned and not m.attached and m.state == "stopped"]
    by_name = {m.name: m for m in models}
    d = by_name.get(default) if default else None
    if d is not None and not d.pinned and d.state == "stopped":
        plan = plan_load(models, d.name, budget_mb=budget_mb)
        if isinstance(plan, LoadPlan) and not plan.evict:
            out.append(d.name)
    return out
