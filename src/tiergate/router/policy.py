"""Routing policy: a pure function from (request features, catalog, world) to a plan.

No I/O and no clock reads: everything that changes at run time (breakers,
which wire protocols the client can reach) arrives in ``WorldSnapshot``.
Every candidate and every skipped deployment carries a human-readable
reason; the chosen one's reason becomes ``X-Tiergate-Reason``.

Order of candidates:
1. the target the model field names (alias members in their listed order,
   or for a ``routing.balance`` alias taking turns to go first, which
   ``Planner`` does; a deployment, or for ``auto``/``task/<type>`` the
   cheapest at the task's minimum tier);
2. LiteLLM-style ``routing.fallbacks`` for that target;
3. escalation (when enabled): the remaining deployments at the same tier,
   then up the tiers, cheapest first. Never down: a cheaper tier was not
   asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from tiergate.core.capabilities import missing
from tiergate.core.catalog import Catalog, Deployment
from tiergate.core.errors import ContextTooLarge, ModelNotCapable, ModelNotFound, NoCandidate
from tiergate.core.types import Candidate, RequestFeatures, RoutePlan, Skipped

AUTO_NAMES = frozenset({"auto", ""})
TASK_PREFIX = "task/"
ASSUMED_OUTPUT_TOKENS = 256
LACKS = "lacks "  # a skip reason for a missing capability starts so (the error is then a 400)


@dataclass(slots=True)
class WorldSnapshot:
    """What the policy may know about the world at decision time."""

    unavailable: Mapping[str, str] = field(default_factory=dict)  # deployment -> why (breaker open, budget ...)
    reachable_apis: frozenset[str] = frozenset({"openai-chat", "anthropic-messages"})
    local_only_reason: str | None = None  # emergency mode: only local providers, and why
    tier_cap: int | None = None  # budget downgrade: nothing above this tier
    tier_cap_reason: str = ""
    context_reroute_at: float | None = None  # prompt share of a window above which a larger one is used


def _expected_cost(d: Deployment, f: RequestFeatures) -> float:
    out = f.max_tokens or ASSUMED_OUTPUT_TOKENS
    return d.cost(f.prompt_tokens_est, out)


def _cheapest_first(ds: list[Deployment], f: RequestFeatures) -> list[Deployment]:
    return sorted(ds, key=lambda d: (d.tier, _expected_cost(d, f), d.name))


def _known(model: str, cat: Catalog) -> bool:
    return (
        model in AUTO_NAMES
        or model.startswith(TASK_PREFIX)
        or model in cat.aliases
        or model in cat.deployments
        or any(d.model == model for d in cat.deployments.values())
    )


def _resolve_target(f: RequestFeatures, cat: Catalog) -> tuple[list[tuple[str, str]], str, int]:
    """(ordered (deployment, reason) pairs for the target, summary, minimum tier for escalation)."""
    model = f.model.strip()
    if not _known(model, cat):
        mapped = cat.map_model(model)
        if mapped is not None:
            pairs, summary, min_tier = _resolve_target(replace(f, model=mapped), cat)
            note = f"model_map {model} -> {mapped}"
            return [(n, f"{note}; {r}") for n, r in pairs], f"{note}; {summary}", min_tier
    task = f.task
    if model in AUTO_NAMES or model.startswith(TASK_PREFIX):
        if model.startswith(TASK_PREFIX):
            task = model[len(TASK_PREFIX) :].lower()
        if task and task in cat.tasks:
            min_tier, why = cat.tasks[task], f"task={task} needs tier>={cat.tasks[task]}"
        else:
            min_tier, why = 0, (f"task={task} unknown, tier>=0" if task else "no task, tier>=0")
        eligible = [d for d in cat.deployments.values() if d.tier >= min_tier]
        if f.local_only and not any(d.local and _capable(d, f) for d in eligible):
            # privacy outranks the task's tier floor: the strongest capable local model, never the cloud
            local = sorted(
                (d for d in cat.deployments.values() if d.local),
                key=lambda d: (not _capable(d, f), -d.tier, _expected_cost(d, f), d.name),
            )
            if local:
                why = (
                    f"{why}, but only local deployments may serve it (privacy or emergency) and none reaches that tier"
                )
                return (
                    [
                        (d.name, f"{why}; strongest local" if i == 0 else f"{why}; next local")
                        for i, d in enumerate(local)
                    ],
                    f"auto ({why})",
                    0,
                )
        if not eligible:
            raise NoCandidate(f"{why}: no deployment at or above tier {min_tier}")
        capable = [d for d in eligible if _capable(d, f)]
        lowest = min(d.tier for d in (capable or eligible))
        first = _cheapest_first([d for d in eligible if d.tier == lowest], f)
        first.sort(key=lambda d: not _capable(d, f))  # stable: the capable ones first, cheapest first
        if f.embeddings and capable:
            first = first[:1]  # one vector space: other embedding models only by alias or routing.fallbacks
        pairs = [
            (d.name, f"{why}; cheapest at tier {lowest}" if i == 0 else f"{why}; next at tier {lowest}")
            for i, d in enumerate(first)
        ]
        return pairs, f"auto ({why})", min_tier
    if model in cat.aliases:
        members = cat.aliases[model]
        pairs = [(n, f"alias {model} #{i + 1}") for i, n in enumerate(members)]
        return pairs, f"alias {model}", min(cat.deployments[n].tier for n in members)
    if model in cat.deployments:
        return [(model, "requested deployment")], f"deployment {model}", cat.deployments[model].tier
    by_upstream = [d for d in cat.deployments.values() if d.model == model]
    if by_upstream:
        ordered = _cheapest_first(by_upstream, f)
        return (
            [(d.name, f"serves upstream model {model}") for d in ordered],
            f"upstream model {model}",
            ordered[0].tier,
        )
    raise ModelNotFound(
        f"model {model!r} names no alias, deployment or task; use one of: {', '.join(cat.model_names())}",
        param="model",
    )


def _capable(d: Deployment, f: RequestFeatures) -> bool:
    return f.needs <= d.capabilities


def _served_locally(
    f: RequestFeatures, cat: Catalog, pairs: list[tuple[str, str]], summary: str
) -> tuple[list[tuple[str, str]], str]:
    """Local-only (privacy, emergency, a local-only budget) and the client named a cloud model: the
    strongest local deployment that can do what the body needs serves it instead of a 503.

    Not for embeddings: another model's vectors live in another space, so they are refused instead.
    """
    model = f.model.strip()
    if (
        not f.local_only
        or f.embeddings
        or model in AUTO_NAMES
        or model.startswith(TASK_PREFIX)
        or any(cat.deployments[n].local for n, _ in pairs)
    ):
        return pairs, summary
    # capable ones first; the others stay in the plan so that, if none can serve, their skip
    # reasons ("lacks vision") say which capability is missing
    local = sorted(
        (d for d in cat.deployments.values() if d.local),
        key=lambda d: (not _capable(d, f), -d.tier, _expected_cost(d, f), d.name),
    )
    if not local:
        return pairs, summary
    why = f"{model} is not local; served by a local deployment"
    return [(d.name, why if i == 0 else f"{why} (next)") for i, d in enumerate(local)], f"{summary}; {why}"


def _escalation(cat: Catalog, f: RequestFeatures, min_tier: int, seen: set[str]) -> list[tuple[str, str]]:
    rest = [d for d in cat.deployments.values() if d.name not in seen and d.tier >= min_tier]
    return [(d.name, f"escalation to tier {d.tier}") for d in _cheapest_first(rest, f)]


def _skip_reason(d: Deployment, f: RequestFeatures, world: WorldSnapshot, cat: Catalog) -> str | None:
    if not f.needs <= d.capabilities:  # a subset test first: the usual case costs one C call
        return f"{LACKS}{', '.join(missing(f.needs, d.capabilities))}"
    if cat.embeddings_local_only and not d.local and "embeddings" in f.needs:
        return "embeddings stay local (routing.embeddings_local_only): not a local provider"
    if f.local_only and not d.local:
        return (
            f"{world.local_only_reason}: not local"
            if world.local_only_reason
            else "privacy local-only: not a local provider"
        )
    if world.tier_cap is not None and d.tier > world.tier_cap:
        return world.tier_cap_reason or f"tier capped at {world.tier_cap}"
    if d.api not in world.reachable_apis:
        return f"cannot translate to {d.api}"
    out = f.max_tokens or 0
    if d.max_output_tokens:
        out = min(out, d.max_output_tokens)  # the adapter clamps max_tokens to the deployment's limit
    need = f.prompt_tokens_est + out
    if need > d.context_window:
        return f"context: ~{need} tokens > window {d.context_window}"
    if world.context_reroute_at and f.prompt_tokens_est > world.context_reroute_at * d.context_window:
        return (
            f"context: prompt ~{f.prompt_tokens_est} tokens is over {world.context_reroute_at:.0%} "
            f"of window {d.context_window}"
        )
    why = world.unavailable.get(d.name)
    if why:
        return why
    return None


def _capped(f: RequestFeatures, cat: Catalog, world: WorldSnapshot) -> tuple[list[tuple[str, str]], str, int]:
    """The target, brought down to the budget's tier cap when the task asked for more."""
    pairs, summary, min_tier = _resolve_target(f, cat)
    cap = world.tier_cap
    if (
        cap is None
        or min_tier <= cap
        or not (f.model.strip() in AUTO_NAMES or f.model.startswith(TASK_PREFIX) or cat.map_model(f.model.strip()))
    ):
        return pairs, summary, min_tier
    below = _cheapest_first([d for d in cat.deployments.values() if d.tier <= cap], f)
    below.sort(key=lambda d: (-d.tier, _expected_cost(d, f), d.name))  # the strongest allowed tier first
    note = world.tier_cap_reason or f"tier capped at {cap}"
    return [(d.name, note) for d in below], f"{summary}; {note}", 0


def decide(features: RequestFeatures, catalog: Catalog, world: WorldSnapshot) -> RoutePlan:
    """The ordered candidates for one request, or a ClientError/UpstreamError saying why none."""
    if world.local_only_reason and not features.local_only:
        features = replace(features, local_only=True)
    ordered, summary = _ordered(features, catalog, world)
    return _filtered(ordered, summary, features, catalog, world)


def _ordered(features: RequestFeatures, catalog: Catalog, world: WorldSnapshot) -> tuple[list[tuple[str, str]], str]:
    """Every deployment worth trying, in order, with its reason; before any per-request filter."""
    target_pairs, summary, min_tier = _capped(features, catalog, world)
    target_pairs, summary = _served_locally(features, catalog, target_pairs, summary)
    if world.local_only_reason:
        summary = f"{world.local_only_reason}; {summary}"
        target_pairs = [(n, f"{world.local_only_reason}; {r}") for n, r in target_pairs]
    ordered: list[tuple[str, str]] = list(target_pairs)
    seen = {n for n, _ in ordered}
    for fb in catalog.fallbacks.get(features.model, ()):
        for n in catalog.expand(fb):
            if n not in seen:
                ordered.append((n, f"fallback {fb} for {features.model}"))
                seen.add(n)
    if catalog.escalate and not features.embeddings:  # embeddings never change model unasked
        ordered += _escalation(catalog, features, min_tier, seen)
    return ordered, summary


def _filtered(
    ordered: Sequence[tuple[str, str]], summary: str, features: RequestFeatures, catalog: Catalog, world: WorldSnapshot
) -> RoutePlan:
    """The plan: what the context windows, breakers, budgets and privacy leave of the ordered list."""
    candidates: list[Candidate] = []
    skipped: list[Skipped] = []
    for name, reason in ordered:
        d = catalog.deployments[name]
        why_not = _skip_reason(d, features, world, catalog)
        if why_not:
            skipped.append(Skipped(name, why_not, len(candidates)))
        else:
            candidates.append(Candidate(name, d.tier, reason))
    if not candidates:
        detail = "; ".join(f"{s.deployment}: {s.reason}" for s in skipped) or "nothing configured"
        lacking = [s for s in skipped if s.reason.startswith(LACKS)]
        if lacking and len(lacking) == len(skipped):
            raise ModelNotCapable(
                f"no deployment for {features.model!r} can serve this request ({detail})", param="model"
            )
        if skipped and all(s.reason.startswith("context:") for s in skipped):
            raise ContextTooLarge(f"no deployment's context window holds this request ({detail})", param="messages")
        if world.local_only_reason:
            raise NoCandidate(f"{world.local_only_reason}, and no local deployment is available ({detail})")
        if features.local_only:
            raise NoCandidate(f"X-Tiergate-Privacy: local-only and no local deployment is available ({detail})")
        raise NoCandidate(f"no deployment available for {features.model!r} ({detail})")
    return RoutePlan(
        target=features.model,
        summary=summary,
        candidates=tuple(candidates),
        skipped=tuple(skipped),
        warning=catalog.task_warning(features.model, features.task),
    )


def order_is_token_independent(catalog: Catalog) -> bool:
    """True when no request's token counts can change the order of candidates.

    Candidates are ordered by (tier, expected cost, name); expected cost mixes
    prompt and output tokens, so two deployments of one tier can swap places
    with the request's shape unless one is no dearer than the other on both
    input and output prices.
    """
    by_tier: dict[int, list[Deployment]] = {}
    for d in catalog.deployments.values():
        by_tier.setdefault(d.tier, []).append(d)
    for same in by_tier.values():
        for i, a in enumerate(same):
            for b in same[i + 1 :]:
                a_first = a.input_per_mtok <= b.input_per_mtok and a.output_per_mtok <= b.output_per_mtok
                b_first = b.input_per_mtok <= a.input_per_mtok and b.output_per_mtok <= a.output_per_mtok
                if not (a_first or b_first):
                    return False
    return True


@dataclass(slots=True)
class _Order:
    """One memoised ordering, and the plans filtered from it while nothing in the world could skip a member."""

    ordered: tuple[tuple[str, str], ...]
    summary: str
    spin: int  # leading members of a balanced alias that take turns (0: none)
    smallest_window: int  # of every deployment in ``ordered``: a request that fits it is skipped by none
    plans: dict[frozenset[str], RoutePlan] = field(default_factory=dict)  # by the client's reachable apis


class Planner:
    """``decide`` for one catalog, memoised (the hot path calls it per request).

    The ordering depends only on the model field, task, privacy and the
    budget's emergency / tier-cap state, unless a catalog's prices make it
    depend on token counts (see ``order_is_token_independent``); then every
    request is planned from scratch. The per-request filter (context windows,
    breakers, budgets) runs unless nothing in it can skip a deployment but
    what the memo's key fixes already (capabilities, privacy, the tier cap):
    no breaker open or deployment blocked, and a request that fits every
    window in the order; then the plan itself is reused (plans are never
    mutated). Same result as ``decide``, by test, whatever comes in between.
    """

    MAX_ENTRIES = 4096  # model names come from clients: bound the memo

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.memoise = order_is_token_independent(catalog)
        self._orders: dict[tuple[object, ...], _Order] = {}
        # smooth weighted round-robin per balanced alias: each member's running credit
        self._credit: dict[str, list[float]] = {a: [0.0] * len(w) for a, w in catalog.balanced.items()}

    def _spin(self, model: str, ordered: Sequence[tuple[str, str]]) -> int:
        """How many leading candidates take turns: a balanced alias's members when they lead the order."""
        members = self.catalog.aliases.get(model, ()) if model in self.catalog.balanced else ()  # memoised
        n = len(members)
        return n if n > 1 and tuple(name for name, _ in ordered[:n]) == members else 0

    def _turn(self, model: str, ordered: tuple[tuple[str, str], ...], spin: int) -> tuple[tuple[str, str], ...]:
        """Whose turn it is to go first, in proportion to the members' weights (smooth weighted round-robin:
        even, never random); the others follow in their order, for failover."""
        weights, credit = self.catalog.balanced[model], self._credit[model]
        for i, w in enumerate(weights):
            credit[i] += w
        turn = max(range(spin), key=credit.__getitem__)
        credit[turn] -= sum(weights)
        return (*ordered[turn:spin], *ordered[:turn], *ordered[spin:])

    def decide(self, features: RequestFeatures, world: WorldSnapshot) -> RoutePlan:
        if not self.memoise:
            if not self.catalog.balanced:
                return decide(features, self.catalog, world)
            if world.local_only_reason and not features.local_only:
                features = replace(features, local_only=True)
            order, summary = _ordered(features, self.catalog, world)
            spin = self._spin(features.model, order)
            turned = self._turn(features.model, tuple(order), spin) if spin else tuple(order)
            return _filtered(turned, summary, features, self.catalog, world)
        if world.local_only_reason and not features.local_only:
            features = replace(features, local_only=True)
        key = (
            features.model,
            features.needs,
            features.task,
            features.local_only,
            world.local_only_reason,
            world.tier_cap,
            world.tier_cap_reason,
        )
        hit = self._orders.get(key)
        if hit is None:
            ordered, summary = _ordered(features, self.catalog, world)
            if len(self._orders) >= self.MAX_ENTRIES:
                self._orders.clear()
            ds = self.catalog.deployments
            hit = self._orders[key] = _Order(
                tuple(ordered),
                summary,
                self._spin(features.model, ordered),
                min((ds[n].context_window for n, _ in ordered), default=0),
            )
        if hit.spin:  # a balanced group (LiteLLM's load balancing): only then is there per-request work here
            return _filtered(
                self._turn(features.model, hit.ordered, hit.spin), hit.summary, features, self.catalog, world
            )
        if world.unavailable or not self._fits(features, world, hit.smallest_window):
            return _filtered(hit.ordered, hit.summary, features, self.catalog, world)
        plan = hit.plans.get(world.reachable_apis)
        if plan is None:  # a plan with no candidate raises, and is not kept
            plan = hit.plans[world.reachable_apis] = _filtered(hit.ordered, hit.summary, features, self.catalog, world)
        return plan

    @staticmethod
    def _fits(f: RequestFeatures, world: WorldSnapshot, window: int) -> bool:
        """No context-window skip can happen: ``_skip_reason``'s two context tests pass for every window >=
        ``window`` (its clamp of max_tokens to a deployment's limit only lowers the need)."""
        if f.prompt_tokens_est + (f.max_tokens or 0) > window:
            return False
        return not world.context_reroute_at or f.prompt_tokens_est <= world.context_reroute_at * window
