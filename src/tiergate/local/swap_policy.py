"""Pure swap decisions for the local model manager (no I/O, no clock, table-tested).

- ``plan_load``: what to evict so a model fits the memory budget -- least recently
  used idle models first; never a model serving (or queued for) a request, never a
  pinned or attached one -- or why it cannot load now (``CannotFit``). With a
  ``SwapGuard`` a swap is also *held* (not queued; asked again later) while a model
  it would evict is inside its minimum residency or the swap-rate bound is reached:
  that, not luck, is what stops two models evicting each other request by request.
- ``expired_idle``: which idle models have outlived their ``idle_ttl``.
- ``serve_order``: queued requests grouped by model, the loaded models' groups first,
  so a burst for two models costs one swap instead of one per request.
- ``residents_to_restore``: pinned models, and the default when it fits without evicting.
- ``place_request``: for a request routed by tier, serve it on a loaded (or loading)
  local model that reaches the tier instead of loading the one the plan preferred.

States: stopped, queued (waiting for its turn to load), loading, ready, unloading, failed.
Memory is held by loading, ready and unloading models; pinned and attached models
always count (their memory is reserved even while a pinned one restarts).
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from tiergate.core.types import Candidate, RoutePlan

RESIDENT_STATES = frozenset({"loading", "ready", "unloading"})
COMING_STATES = frozenset({"queued", "loading"})


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
    loaded_at: float = 0.0  # clock time the current load completed
    on_demand: bool = False  # loaded for a request (not as the default or a pinned model coming back)

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
    ``permanent``: it can never fit beside the pinned and attached models; ``held``: the
    swap guard refuses it until about ``retry_at`` (the load is not queued meanwhile)."""

    model: str
    reason: str
    wait_for: tuple[str, ...] = ()
    permanent: bool = False
    held: bool = False
    retry_at: float | None = None


@dataclass(frozen=True)
class SwapGuard:
    """Thrash limits at clock time ``now``: a model loaded on demand stays at least
    ``min_residency_s``; at most ``max_swaps`` swaps (loads that evict) in any ``window_s``,
    ``recent`` being the clock times of past swaps. The default guards nothing."""

    now: float = 0.0
    min_residency_s: float = 0.0
    max_swaps: int | None = None
    window_s: float = 0.0
    recent: tuple[float, ...] = ()

    def protects(self, m: ModelView) -> bool:
        """``m`` is inside its minimum residency (only a model a request brought in is protected:
        the default coming back, or a model loaded at start, has cost no swap worth keeping)."""
        return m.on_demand and m.state == "ready" and self.now - m.loaded_at < self.min_residency_s

    def rate_hold(self, model: str, victims: Sequence[str]) -> CannotFit | None:
        """The hold when ``max_swaps`` swaps already happened inside the window, else None."""
        if self.max_swaps is None:
            return None
        inside = sorted(t for t in self.recent if self.now - t < self.window_s)
        if len(inside) < self.max_swaps:
            return None
        return CannotFit(
            model,
            f"swap held: {_plural(len(inside), 'swap')} in the last {self.window_s:g}s "
            f"(max_swaps {self.max_swaps}); it would evict {', '.join(victims)}",
            held=True,
            retry_at=inside[len(inside) - self.max_swaps] + self.window_s,
        )


class SwapHistory:
    """The clock times of recent swaps (loads that evicted), forgotten once out of every window."""

    def __init__(self) -> None:
        self._times: collections.deque[float] = collections.deque()

    def record(self, now: float) -> None:
        self._times.append(now)

    def guard(self, now: float, min_residency_s: float, max_swaps: int | None, window_s: float) -> SwapGuard:
        while self._times and now - self._times[0] >= window_s:
            self._times.popleft()
        return SwapGuard(now, min_residency_s, max_swaps, window_s, tuple(self._times))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _busy_why(m: ModelView) -> str:
    if m.state == "ready":
        return f"{m.name} ({_plural(m.in_flight, 'request')} in flight)"
    return f"{m.name} ({m.state})"


def plan_load(
    models: Sequence[ModelView], requested: str, *, budget_mb: int, guard: SwapGuard | None = None
) -> LoadPlan | CannotFit:
    """Decide how ``requested`` fits into ``budget_mb`` given every model's current state; ``guard``
    holds swaps that would evict a model inside its minimum residency or exceed the swap rate."""
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
    g = guard or SwapGuard()
    young = [m for m in others if g.protects(m)]
    idle = sorted((m for m in others if m.evictable_now and not g.protects(m)), key=lambda m: (m.last_used, m.name))
    victims: list[str] = []
    room = free
    for m in idle:
        if room >= need:
            break
        victims.append(m.name)
        room += m.memory_mb
    if room >= need:
        return g.rate_hold(requested, victims) or LoadPlan(
            requested,
            tuple(victims),
            f"evicts {', '.join(victims)} (least recently used idle) to free {need - free} MB",
        )
    busy = sorted(
        (
            m
            for m in others
            if not (m.pinned or m.attached) and m.holds_memory and not m.evictable_now and not g.protects(m)
        ),
        key=lambda m: (m.state != "unloading", m.last_used, m.name),
    )
    blockers: list[ModelView] = []
    for m in busy:
        if room >= need:
            break
        blockers.append(m)
        room += m.memory_mb
    if room < need and young:
        ages = ", ".join(f"{m.name} (loaded {g.now - m.loaded_at:.0f}s ago)" for m in young)
        return CannotFit(
            requested,
            f"swap held: {ages} stays at least min_residency_s {g.min_residency_s:g}s",
            held=True,
            retry_at=min(m.loaded_at for m in young) + g.min_residency_s,
        )
    draining = [m.name for m in blockers if m.state == "ready"]  # draining a ready model starts a swap
    held = g.rate_hold(requested, draining) if draining else None
    if held is not None:
        return held
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


@dataclass(frozen=True)
class LocalOption:
    """One candidate of a request's plan as placement sees it: ``model`` is the managed
    local model behind the deployment, None for any other deployment."""

    deployment: str
    model: str | None
    tier: int


@dataclass(frozen=True)
class Placement:
    """``serve``: a loaded local deployment to put first; ``load``: a local model to start loading."""

    serve: str | None = None
    load: str | None = None
    reason: str = ""


def place_request(
    ideal: Sequence[LocalOption], *, available: Collection[str], states: Mapping[str, str], by_tier: bool
) -> Placement:
    """Where a request whose preferred local model is not loaded goes, and what to load.

    ``ideal``: the plan's candidates as if every local model could serve; ``available``: the
    deployments that can serve now; ``states``: local model -> state. A request routed by tier
    (``by_tier``: auto or a task) is served by the first loaded local model at or above the
    tier its plan wanted, and while such a model is loading, no other local model is loaded
    for it: serving a classification on the big model costs nothing, swapping it out for the
    small one costs two loads. A request naming its target keeps it: that model is loaded.
    """
    if not ideal or ideal[0].model is None or ideal[0].deployment in available:
        return Placement()
    want = ideal[0]
    if by_tier:
        able = [o for o in ideal[1:] if o.model is not None and o.model != want.model and o.tier >= want.tier]
        loaded = next((o for o in able if o.deployment in available), None)
        if loaded is not None:
            return Placement(
                serve=loaded.deployment,
                reason=f"{loaded.model} is loaded and reaches tier {want.tier}; no swap to {want.model}",
            )
        coming = next((o for o in able if states.get(o.model or "") in COMING_STATES), None)
        if coming is not None:
            return Placement(reason=f"{coming.model} is loading and reaches tier {want.tier}; {want.model} waits")
    return Placement(load=want.model, reason=f"{want.model} is preferred and not loaded")


def served_first(plan: RoutePlan, place: Placement) -> RoutePlan:
    """``plan`` with ``place.serve`` moved to the front (its reason says why), or ``plan`` itself."""
    if place.serve is None or not plan.candidates or plan.candidates[0].deployment == place.serve:
        return plan
    moved = next((c for c in plan.candidates if c.deployment == place.serve), None)
    if moved is None:
        return plan
    first = Candidate(moved.deployment, moved.tier, f"{moved.reason}; {place.reason}")
    rest = tuple(c for c in plan.candidates if c is not moved)
    return replace(plan, candidates=(first, *rest))
