"""What a tiergate model name offers, for the model lists of clients that ask before they chat.

Ollama clients (OpenClaw, VS Code) keep only models whose ``/api/show``
lists ``tools``; Gemini clients read token limits from ``models.get``. A name
may stand for several deployments (an alias, ``auto``, ``task/<type>``): it
offers what any of them can do, since the router picks one that can serve
each request, and the smallest context window and output cap among them,
since any of them may answer. Pure: a catalog in, cards out.
"""

from __future__ import annotations

from dataclasses import dataclass

from tiergate.core.catalog import Catalog, Deployment

# tiergate capability -> Ollama's word for it (types/model/capability.go)
OLLAMA_CAPABILITY = {
    "chat": "completion",
    "tools": "tools",
    "vision": "vision",
    "embeddings": "embedding",
    "reasoning": "thinking",
}


@dataclass(frozen=True, slots=True)
class ModelCard:
    name: str
    deployments: tuple[Deployment, ...]
    capabilities: frozenset[str]
    context_window: int
    max_output_tokens: int | None

    @property
    def local(self) -> bool:
        return all(d.local for d in self.deployments)

    @property
    def embeddings_only(self) -> bool:
        return self.capabilities == frozenset({"embeddings"})

    def ollama_capabilities(self) -> list[str]:
        return [OLLAMA_CAPABILITY[c] for c in OLLAMA_CAPABILITY if c in self.capabilities]


def _deployments(catalog: Catalog, name: str) -> tuple[Deployment, ...]:
    if name == "auto" or name.startswith("task/"):
        tier = catalog.tasks.get(name[len("task/") :], 0) if name.startswith("task/") else 0
        chosen = [d for d in catalog.deployments.values() if d.tier >= tier and "embeddings" not in d.capabilities]
        return tuple(chosen)
    names = catalog.expand(name)
    if not names and (target := catalog.map_model(name)) is not None:
        names = catalog.expand(target)
    return tuple(catalog.deployments[n] for n in names if n in catalog.deployments)


def model_card(catalog: Catalog, name: str) -> ModelCard | None:
    """The card of one name; None for a name that stands for no deployment."""
    ds = _deployments(catalog, name)
    if not ds:
        return None
    caps = frozenset().union(*(d.capabilities for d in ds))
    caps_out = [d.max_output_tokens for d in ds if d.max_output_tokens]
    return ModelCard(
        name=name,
        deployments=ds,
        capabilities=caps,
        context_window=min(d.context_window for d in ds),
        max_output_tokens=min(caps_out) if caps_out else None,
    )


def model_cards(catalog: Catalog) -> list[ModelCard]:
    """A card per listed name, in ``Catalog.model_names`` order."""
    return [card for name in catalog.model_names() if (card := model_card(catalog, name)) is not None]
