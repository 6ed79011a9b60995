"""Routing next to managed local models: which of their deployments cannot serve now, and where a request
goes while the model it prefers is not loaded (a loaded one that reaches its tier, no swap; see
local/swap_policy.place_request). Asked by the executor when it plans; no I/O but a load request."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from tiergate.core.catalog import Catalog
from tiergate.core.types import RequestFeatures, RoutePlan
from tiergate.local.swap_policy import LocalOption, place_request, served_first
from tiergate.router.policy import AUTO_NAMES, TASK_PREFIX, WorldSnapshot, decide

if TYPE_CHECKING:  # the manager runs engines (processes, health checks); routing only asks it questions
    from tiergate.local.manager import LocalModelManager

WAITABLE = ("stopped", "queued", "loading")  # local model states a request may wait out (local_models.load_wait_s)


def routed_by_tier(model: str, catalog: Catalog) -> bool:
    """``auto`` or a task (directly or through model_map): any deployment at the task's tier may serve it."""
    if model in AUTO_NAMES or model.startswith(TASK_PREFIX):  # the usual names: no catalog lookup
        return True
    m = model.strip()
    if m not in catalog.aliases and m not in catalog.deployments:
        m = catalog.map_model(m) or m
    return m in AUTO_NAMES or m.startswith(TASK_PREFIX)


def local_unavailable(local: LocalModelManager | None, catalog: Catalog) -> dict[str, str]:
    """Deployments on managed local models that cannot serve now, with why (a model a request may wait for
    to load, with local_models.load_wait_s, stays in the plan)."""
    if local is None:
        return {}
    down = local.unavailable()
    if local.cfg.load_wait_s > 0:
        # requests may wait for a load (acquire waits up to load_wait_s): keep those models in the plan
        down = {m: why for m, why in down.items() if not why.startswith(WAITABLE)}
    return {
        d.name: f"{d.local_model} {down[d.local_model]}"
        for d in catalog.deployments.values()
        if d.local_model is not None and d.local_model in down
    }


def load_on_demand(
    local: LocalModelManager | None,
    catalog: Catalog,
    features: RequestFeatures,
    world: WorldSnapshot,
    plan: RoutePlan | None,
) -> RoutePlan | None:
    """When the managed local model this request prefers is not loaded: a request routed by tier goes
    to a loaded local model that reaches the tier (no swap, see place_request); otherwise the model
    it preferred starts loading and the request goes on now."""
    if local is None:
        return plan
    local_down, states, ds = local_unavailable(local, catalog), local.states(), catalog.deployments
    # with load_wait_s a model not loaded yet stays in the plan (its request would wait): not serving now
    waits = {n for n, d in ds.items() if d.local_model and n not in local_down and states[d.local_model] != "ready"}
    if not local_down and not waits:
        return plan
    ideal = decide(
        features,
        catalog,
        replace(world, unavailable={k: v for k, v in world.unavailable.items() if k not in local_down}),
    )
    options = [LocalOption(c.deployment, ds[c.deployment].local_model, c.tier) for c in ideal.candidates]
    place = place_request(
        options,
        available=[c.deployment for c in plan.candidates if c.deployment not in waits] if plan else (),
        states=states,
        by_tier=routed_by_tier(features.model, catalog),
    )
    if place.load is not None:
        local.request_load(place.load)
    return served_first(plan, place) if plan is not None else None
