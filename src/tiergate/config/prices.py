"""Deployment prices: the config's ``price:`` line, else the genai-prices database.

genai-prices (pydantic's, pinned in constraints.txt) keeps the providers' list
prices, with cache reads and writes, long-prompt tiers and dated changes. Only
the list bundled in the installed wheel (``genai_prices.data``) is read: the
package can also fetch fresher prices at run time (``UpdatePrices``), which
tiergate never starts, so pricing needs no network and a price changes only
when the pinned version does. The lookup runs once per catalog build, never
per request.

Rules (docs/configuration.md, "Prices"): each field written in ``price:``
wins; a cloud deployment's other fields come from the database when it knows
the model (cache prices kept in the database's ratio to the input price, so a
discounted or free input price discounts its cache too); long-prompt tiers
only when the database prices the deployment alone; local deployments cost
what their line says, else nothing; a cloud deployment nothing prices is
``UNPRICED`` (recorded at $0, named by check-config and /health).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tiergate.core.catalog import UNPRICED
from tiergate.core.prices import PriceTier, Rates

if TYPE_CHECKING:
    from tiergate.config.schema import Price

# tiergate provider names and LiteLLM prefixes that the database's own provider matching misses
PROVIDER_ALIASES = {
    "fireworks_ai": "fireworks",
    "together_ai": "together",
    "xai": "x-ai",
    "moonshot": "moonshotai",
    "bedrock": "aws",
    "vertex_ai": "google",
    "gemini": "google",
}
SOURCE_PREFIX = "genai-prices:"


@dataclass(frozen=True, slots=True)
class DatabasePrice:
    provider_id: str
    model_id: str
    rates: Rates  # below any tier; a missing cache price is the input price
    tiers: tuple[PriceTier, ...]

    @property
    def source(self) -> str:
        return f"{SOURCE_PREFIX}{self.provider_id}/{self.model_id}"


@dataclass(frozen=True, slots=True)
class ResolvedPrice:
    """What a Deployment is built with (``fields()``) and where it came from."""

    input: float
    output: float
    cache_read: float | None  # None: the input price
    cache_write: float | None
    tiers: tuple[PriceTier, ...]
    source: str

    def fields(self) -> dict[str, Any]:
        return {
            "input_per_mtok": self.input,
            "output_per_mtok": self.output,
            "cache_read_per_mtok": self.cache_read,
            "cache_write_per_mtok": self.cache_write,
            "price_tiers": self.tiers,
            "price_source": self.source,
        }


def resolve_price(
    price: Price, *, local: bool, provider: str, base_url: str, model: str, at: dt.datetime | None = None
) -> ResolvedPrice:
    """A deployment's prices by the rules above."""
    written = {k for k in price.model_fields_set if getattr(price, k) is not None}
    own = ResolvedPrice(
        price.input_per_mtok,
        price.output_per_mtok,
        price.cache_read_per_mtok,
        price.cache_write_per_mtok,
        (),
        "config" if written else ("local" if local else UNPRICED),
    )
    if local or len(written) == 4:
        return own
    db = database_price(provider, base_url, model, at=at)
    if db is None:
        return own
    if not written:
        r = db.rates
        return ResolvedPrice(r.input, r.output, r.cache_read, r.cache_write, db.tiers, db.source)
    inp = price.input_per_mtok if "input_per_mtok" in written else db.rates.input
    out = price.output_per_mtok if "output_per_mtok" in written else db.rates.output
    read = price.cache_read_per_mtok if "cache_read_per_mtok" in written else _same_ratio(inp, db, db.rates.cache_read)
    write = (
        price.cache_write_per_mtok if "cache_write_per_mtok" in written else _same_ratio(inp, db, db.rates.cache_write)
    )
    return ResolvedPrice(inp, out, read, write, (), f"config+{db.source}")


def _same_ratio(inp: float, db: DatabasePrice, db_cache: float) -> float:
    return db_cache * inp / db.rates.input if db.rates.input > 0 else db_cache


def database_price(provider: str, base_url: str, model: str, *, at: dt.datetime | None = None) -> DatabasePrice | None:
    """The bundled database's list price of ``model`` as served by this provider, None when it does not know it.

    The database's provider is found, first match wins, from the base URL (its
    API pattern), a LiteLLM-style ``prefix/`` on the model, the tiergate
    provider's name, then the model name alone (claude-* is Anthropic's).
    """
    from genai_prices.data import providers  # the wheel's own list; imported only when a deployment needs it

    at = at or dt.datetime.now(dt.UTC)
    for p, ref in _candidates(providers, provider, base_url, model):
        info = p.find_model(ref, all_providers=providers)
        if info is not None:
            found = _from_model_price(info.get_prices(at))
            if found is not None:
                return DatabasePrice(p.id, info.id, *found)
    return None


def provider_knows(provider_id: str, model: str) -> bool:
    """Whether the database lists ``model`` under that provider itself (no match by the model's name elsewhere)."""
    from genai_prices.data import providers
    from genai_prices.data_snapshot import find_provider_by_id

    p = find_provider_by_id(providers, provider_id)
    return p is not None and any(m.id == model for m in p.models)


def database_context_window(provider: str, base_url: str, model: str) -> int | None:
    """The model's context window as the bundled database knows it (found as ``database_price`` finds it)."""
    from genai_prices.data import providers

    for p, ref in _candidates(providers, provider, base_url, model):
        info = p.find_model(ref, all_providers=providers)
        if info is not None:
            return int(info.context_window) if info.context_window else None
    return None


def _candidates(providers: list[Any], provider: str, base_url: str, model: str) -> Iterator[tuple[Any, str]]:
    from genai_prices.data_snapshot import find_provider_by_id

    prefix, slash, rest = model.partition("/")
    refs = [model, rest] if slash and rest else [model]
    by_url = [p for p in providers if re.match(p.api_pattern, base_url)][:1]
    by_prefix = [find_provider_by_id(providers, PROVIDER_ALIASES.get(prefix.lower(), prefix))] if slash else []
    by_name = [find_provider_by_id(providers, PROVIDER_ALIASES.get(provider.lower(), provider))]
    seen: set[str] = set()
    for p in (*by_url, *by_prefix, *by_name):
        if p is not None and p.id not in seen:
            seen.add(p.id)
            for ref in refs:
                yield p, ref
    for ref in refs:
        for p in providers:
            if p.model_match is not None and p.model_match.is_match(ref.lower()) and p.id not in seen:
                yield p, ref


_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")


def _from_model_price(mp: Any) -> tuple[Rates, tuple[PriceTier, ...]] | None:
    """genai-prices' ModelPrice (Decimal or tiered values) as base Rates and cliff tiers; None if not per token."""
    from genai_prices.types import TieredPrices

    values = [getattr(mp, k, None) for k in _KEYS]
    if values[0] is None and values[1] is None:
        return None  # priced per request, image or second: not something tiergate can bill
    starts = sorted({t.start for v in values if isinstance(v, TieredPrices) for t in v.tiers})

    def rates(above: int | None) -> Rates:
        got: list[float | None] = []
        for v in values:
            if isinstance(v, TieredPrices):
                price = v.base
                for t in v.tiers:  # ascending: the last tier the prompt passes
                    if above is not None and above >= t.start:
                        price = t.price
                got.append(float(price))
            else:
                got.append(None if v is None else float(v))
        inp = got[0] or 0.0
        return Rates(inp, got[1] or 0.0, inp if got[2] is None else got[2], inp if got[3] is None else got[3])

    return rates(None), tuple(PriceTier(s, rates(s)) for s in starts)
