"""What a call costs: token prices (USD per million) applied to a call's usage. Pure.

Prompt tokens count every input token, cache reads and writes included, as
the upstreams report them; reads and writes are then billed at their own
prices. Anthropic reads a cached prefix at a tenth of the input price and
writes it at 1.25x, so billing a cache-heavy agent such as Claude Code at the
input price overstates its cost several-fold.

Some models charge more for every token of a long call (Claude, Gemini: past
200K prompt tokens): a :class:`PriceTier` holds those rates. It is a cliff,
not a marginal rate, as the providers bill it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens of each kind."""

    input: float
    output: float
    cache_read: float
    cache_write: float


@dataclass(frozen=True, slots=True)
class PriceTier:
    """The rates for every token of a call whose prompt has more than ``above`` tokens."""

    above: int
    rates: Rates


def token_cost(rates: Rates, prompt_tokens: int, completion_tokens: int, cache_read: int, cache_write: int) -> float:
    """USD for one call; the cache tokens are part of ``prompt_tokens`` (never billed twice)."""
    uncached = max(0, prompt_tokens - cache_read - cache_write)
    return (
        uncached * rates.input
        + cache_read * rates.cache_read
        + cache_write * rates.cache_write
        + completion_tokens * rates.output
    ) / 1_000_000


def tier_rates(tiers: tuple[PriceTier, ...], prompt_tokens: int) -> Rates | None:
    """The rates of the highest tier a prompt of this length passes (tiers ascending), None below them all."""
    found = None
    for t in tiers:
        if prompt_tokens > t.above:
            found = t.rates
    return found
