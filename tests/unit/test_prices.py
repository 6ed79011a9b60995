"""Prices: the genai-prices database read offline, config overrides, cache reads and writes at their own prices.

Expected prices are the providers' list prices as the pinned genai-prices
(constraints.txt) holds them on a fixed date, so a price change upstream
shows here only when the pin moves.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from pipeline_harness import COMPLETION, build
from tiergate.adapters.memory_transport import Reply
from tiergate.config.catalog import build_catalog
from tiergate.config.loading import config_from_dict
from tiergate.config.prices import database_price, resolve_price
from tiergate.config.schema import Price
from tiergate.core.catalog import UNPRICED, Deployment
from tiergate.core.prices import PriceTier, Rates, tier_rates
from tiergate.core.types import Usage

AT = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)
SONNET = Rates(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
SONNET_LONG = Rates(input=6.0, output=22.5, cache_read=0.6, cache_write=7.5)  # every token past 200K prompt tokens


# --------------------------------------------------------------------------- the database, offline
@pytest.mark.parametrize(
    ("provider", "base_url", "model", "source", "rates"),
    [
        # by the provider's base URL
        ("anthro", "https://api.anthropic.com", "claude-sonnet-4-5", "anthropic/claude-sonnet-4-5", SONNET),
        ("x", "https://api.groq.com/openai/v1", "llama-3.3-70b-versatile", "groq/llama-3.3-70b-versatile", None),
        ("x", "https://api.mistral.ai/v1", "mistral-large-latest", "mistral/mistral-large", None),
        ("x", "https://api.deepseek.com/v1", "deepseek-chat", "deepseek/deepseek-chat", None),
        # a dated id matches its model
        ("anthropic", "http://127.0.0.1:9", "claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4-5", SONNET),
        # by the tiergate provider's name (LiteLLM's names too)
        ("openai", "http://127.0.0.1:9/v1", "gpt-4o-mini", "openai/gpt-4o-mini", Rates(0.15, 0.6, 0.075, 0.15)),
        ("gemini", "http://127.0.0.1:9/v1", "gemini-2.5-flash", "google/gemini-2.5-flash", None),
        ("groq", "http://127.0.0.1:9/v1", "llama-3.3-70b-versatile", "groq/llama-3.3-70b-versatile", None),
        # a LiteLLM-style prefix on the model
        ("proxy", "http://127.0.0.1:9/v1", "deepseek/deepseek-chat", "deepseek/deepseek-chat", None),
        # the model's name alone: claude-* is Anthropic's, gpt-* OpenAI's
        ("cloud", "http://127.0.0.1:9", "claude-sonnet-4-5", "anthropic/claude-sonnet-4-5", SONNET),
        ("cheapco", "http://127.0.0.1:9/v1", "gpt-4o-mini", "openai/gpt-4o-mini", None),
    ],
)
def test_known_models_are_priced_from_the_bundled_database(provider, base_url, model, source, rates):
    got = database_price(provider, base_url, model, at=AT)
    assert got is not None and got.source == f"genai-prices:{source}"
    assert got.rates.input > 0 and got.rates.output > 0
    if rates is not None:
        assert got.rates == rates


@pytest.mark.parametrize(
    ("provider", "base_url", "model"),
    [
        ("cheapco", "http://127.0.0.1:9/v1", "my-finetune-v3"),
        ("openai", "https://api.openai.com/v1", "gpt-nonexistent-99"),
        ("anthropic", "https://api.anthropic.com", "claude-imaginary"),
    ],
)
def test_unknown_models_are_not_guessed(provider, base_url, model):
    assert database_price(provider, base_url, model, at=AT) is None


def test_long_prompt_tiers_and_models_without_cache_prices():
    sonnet = database_price("anthropic", "https://api.anthropic.com", "claude-sonnet-4-5", at=AT)
    assert sonnet is not None and sonnet.tiers == (PriceTier(200_000, SONNET_LONG),)
    groq = database_price("groq", "https://api.groq.com/openai/v1", "llama-3.3-70b-versatile", at=AT)
    assert groq is not None and groq.tiers == ()
    assert groq.rates.cache_read == groq.rates.cache_write == groq.rates.input  # no cache price: the input price


def test_the_database_is_read_without_the_network():
    """Only the list bundled in the wheel: tiergate never starts genai-prices' updater (it would fetch)."""
    import genai_prices.update_prices as updates

    database_price("anthropic", "https://api.anthropic.com", "claude-sonnet-4-5", at=AT)
    assert updates._shared_updater.ref_count == 0


# --------------------------------------------------------------------------- resolution rules
def P(**fields) -> Price:
    return Price(**fields)


ANTHROPIC = {"provider": "anthropic", "base_url": "https://api.anthropic.com", "model": "claude-sonnet-4-5"}
UNKNOWN = {"provider": "cheapco", "base_url": "http://127.0.0.1:9/v1", "model": "my-finetune-v3"}


@pytest.mark.parametrize(
    ("price", "local", "where", "rates", "source", "tiers"),
    [
        # no price line: the database
        (P(), False, ANTHROPIC, (3.0, 15.0, 0.3, 3.75), "genai-prices:anthropic/claude-sonnet-4-5", 1),
        # a full price line wins outright (no lookup, no tiers)
        (
            P(input_per_mtok=1, output_per_mtok=2, cache_read_per_mtok=0.5, cache_write_per_mtok=1.5),
            False,
            ANTHROPIC,
            (1.0, 2.0, 0.5, 1.5),
            "config",
            0,
        ),
        # input and output written: the cache keeps the database's ratio (a tenth, 1.25x)
        (
            P(input_per_mtok=2.0, output_per_mtok=10.0),
            False,
            ANTHROPIC,
            (2.0, 10.0, 0.2, 2.5),
            "config+genai-prices:anthropic/claude-sonnet-4-5",
            0,
        ),
        # a free line keeps the cache free too
        (P(input_per_mtok=0, output_per_mtok=0), False, ANTHROPIC, (0, 0, 0, 0), "config+genai-prices:", 0),
        # one field written: the others from the database
        (P(output_per_mtok=20.0), False, ANTHROPIC, (3.0, 20.0, 0.3, 3.75), "config+genai-prices:", 0),
        # a cache price written wins over the ratio
        (
            P(input_per_mtok=3, output_per_mtok=15, cache_read_per_mtok=0.1),
            False,
            ANTHROPIC,
            (3.0, 15.0, 0.1, 3.75),
            "config+genai-prices:",
            0,
        ),
        # unknown model, no line: unpriced
        (P(), False, UNKNOWN, (0, 0, 0, 0), UNPRICED, 0),
        # unknown model with a line: its prices, cache at the input price
        (P(input_per_mtok=1, output_per_mtok=4), False, UNKNOWN, (1.0, 4.0, 1.0, 1.0), "config", 0),
        # local: never looked up, free unless priced
        (P(), True, ANTHROPIC, (0, 0, 0, 0), "local", 0),
        (P(input_per_mtok=0.01, output_per_mtok=0.02), True, ANTHROPIC, (0.01, 0.02, 0.01, 0.01), "config", 0),
    ],
)
def test_price_resolution_rules(price, local, where, rates, source, tiers):
    got = resolve_price(price, local=local, at=AT, **where)
    d = Deployment(
        name="d",
        provider="p",
        api="openai-chat",
        base_url="",
        model="m",
        tier=0,
        local=local,
        context_window=1,
        max_output_tokens=None,
        **got.fields(),
    )
    assert (d.rates.input, d.rates.output, d.rates.cache_read, d.rates.cache_write) == pytest.approx(rates)
    assert got.source.startswith(source) and len(got.tiers) == tiers
    assert d.priced == (source != UNPRICED)


def test_the_catalog_looks_prices_up_once_and_lists_unpriced_deployments():
    raw = {
        "providers": {
            "anthropic": {"api": "anthropic-messages", "base_url": "https://api.anthropic.com"},
            "cheapco": {"api": "openai-chat", "base_url": "http://127.0.0.1:9/v1"},
            "box": {"api": "openai-chat", "base_url": "http://127.0.0.1:8/v1", "local": True},
        },
        "deployments": [
            {"name": "sonnet", "provider": "anthropic", "model": "claude-sonnet-4-5", "tier": 3},
            {"name": "mystery", "provider": "cheapco", "model": "my-finetune-v3", "tier": 1},
            {
                "name": "priced",
                "provider": "cheapco",
                "model": "my-finetune-v4",
                "tier": 1,
                "price": {"input_per_mtok": 1},
            },
            {"name": "box-4o", "provider": "box", "model": "gpt-4o", "tier": 0},  # local: free whatever its name
        ],
    }
    cat = build_catalog(config_from_dict(raw, env={}))
    assert cat.unpriced() == ["mystery"]
    assert cat.deployments["sonnet"].rates == SONNET and cat.deployments["sonnet"].price_tiers
    assert cat.deployments["box-4o"].cost(1_000_000, 1_000_000) == 0 and cat.deployments["box-4o"].priced
    assert cat.deployments["priced"].cost(1_000_000, 0) == pytest.approx(1.0)


# --------------------------------------------------------------------------- what a call costs
def sonnet() -> Deployment:
    return Deployment(
        name="sonnet",
        provider="anthropic",
        api="anthropic-messages",
        base_url="https://api.anthropic.com",
        model="claude-sonnet-4-5",
        tier=3,
        local=False,
        context_window=1_000_000,
        max_output_tokens=None,
        input_per_mtok=3.0,
        output_per_mtok=15.0,
        cache_read_per_mtok=0.3,
        cache_write_per_mtok=3.75,
        price_tiers=(PriceTier(200_000, SONNET_LONG),),
    )


@pytest.mark.parametrize(
    ("prompt", "completion", "read", "write", "usd"),
    [
        (100_000, 0, 0, 0, 0.3),  # plain input
        (0, 1_000_000, 0, 0, 15.0),
        (100_000, 0, 100_000, 0, 0.03),  # all read from the cache: a tenth
        (100_000, 0, 0, 100_000, 0.375),  # all written: 1.25x
        (1000, 100, 600, 300, (100 * 3 + 600 * 0.3 + 300 * 3.75 + 100 * 15) / 1e6),
        (200_000, 0, 0, 0, 0.6),  # at the threshold: the base rate
        (200_001, 1000, 150_000, 0, (50_001 * 6 + 150_000 * 0.6 + 1000 * 22.5) / 1e6),  # past it: every token dearer
        (100, 0, 500, 0, 500 * 0.3 / 1e6),  # cache above the prompt (a bogus upstream): never a negative input
    ],
)
def test_cost_of_a_call(prompt, completion, read, write, usd):
    assert sonnet().cost(prompt, completion, read, write) == pytest.approx(usd, rel=1e-12)


A, B = Rates(1, 1, 1, 1), Rates(2, 2, 2, 2)


@pytest.mark.parametrize(("prompt", "rates"), [(0, None), (100, None), (101, A), (200, A), (201, B), (10**9, B)])
def test_the_tier_a_prompt_passes(prompt, rates):
    assert tier_rates((PriceTier(100, A), PriceTier(200, B)), prompt) == rates


def test_anthropic_documented_usage_with_cache_tokens_costs_exactly():
    """Anthropic's usage block (prompt caching docs): input 50, cache reads 100,000, cache writes 248, output 503."""
    usage = Usage(100_298, 503, cache_read_tokens=100_000, cache_write_tokens=248)  # prompt: all three summed
    # 50 x $3 + 100,000 x $0.30 + 248 x $3.75 + 503 x $15, per million
    assert sonnet().usage_cost(usage) == pytest.approx(0.038625, rel=1e-12)
    assert sonnet().cost(usage.prompt_tokens, usage.completion_tokens) == pytest.approx(0.308439)  # 8x, as before


# --------------------------------------------------------------------------- through the pipeline
CACHED = {"input_tokens": 50, "cache_read_input_tokens": 100_000, "cache_creation_input_tokens": 248}
MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {**CACHED, "output_tokens": 503},
}
EVENTS = [
    {
        "type": "message_start",
        "message": {**MESSAGE, "content": [], "stop_reason": None, "usage": {**CACHED, "output_tokens": 1}},
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 503},
    },
    {"type": "message_stop"},
]


def claude_only() -> dict:
    return {
        "providers": {"claude": {"api": "anthropic-messages", "base_url": "http://claude.test", "api_key": "sk-test"}},
        "deployments": [
            {"name": "sonnet", "provider": "claude", "model": "claude-sonnet-4-5", "tier": 3, "context_window": 200_000}
        ],
        "auth": {"required": False},
    }


@pytest.mark.parametrize("protocol", ["anthropic-messages", "openai-chat"])  # pass-through, and translated
@pytest.mark.parametrize("stream", [False, True])
def test_a_cached_claude_call_without_a_price_line_is_billed_at_the_database_cache_prices(protocol, stream):
    h = build(claude_only())
    h.script("claude", Reply.sse(EVENTS) if stream else Reply.json(MESSAGE))
    answer, status = asyncio.run(h.ask(protocol=protocol, stream=stream))
    assert status == 200
    (row,) = h.ledger.usage("request")
    assert row.cost_usd == pytest.approx(0.038625, rel=1e-12) and answer.cost == row.cost_usd
    assert (row.prompt_tokens, row.completion_tokens) == (100_298, 503)
    assert row.extra == {"cache_read_tokens": "100000", "cache_write_tokens": "248"}


def test_openai_cached_prompt_tokens_are_billed_as_cache_reads():
    raw = {
        "providers": {"oai": {"api": "openai-chat", "base_url": "http://oai.test/v1", "api_key": "sk-test"}},
        "deployments": [{"name": "mini", "provider": "oai", "model": "gpt-4o-mini", "tier": 1}],
        "auth": {"required": False},
    }
    h = build(raw)
    usage = {"prompt_tokens": 2006, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1920}}
    h.script("oai", Reply.json({**COMPLETION, "usage": {**usage, "total_tokens": 2306}}))
    asyncio.run(h.ask())
    (row,) = h.ledger.usage("request")
    # gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output per million
    assert row.cost_usd == pytest.approx((86 * 0.15 + 1920 * 0.075 + 300 * 0.6) / 1e6, rel=1e-12)
    assert row.extra == {"cache_read_tokens": "1920", "cache_write_tokens": "0"}


def test_a_litellm_entry_without_costs_is_priced_and_tiered_from_the_database():
    raw = {
        "model_list": [
            {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-sonnet-4-5"}},
            {"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini"}},
            {"model_name": "odd", "litellm_params": {"model": "openai/acme-unreleased-9"}},
            {"model_name": "free", "litellm_params": {"model": "openai/gpt-4o", "input_cost_per_token": 0}},
        ]
    }
    cfg = config_from_dict(raw, env={})
    cat = build_catalog(cfg)
    tiers = {d.name: d.tier for d in cfg.deployments}
    # by output price (TIER_RULE); a cloud model nobody prices is tier 1, never 0; "free" wrote only its input
    # price, so its output is the database's $10/Mtok
    assert tiers == {"claude": 3, "mini": 1, "odd": 1, "free": 3}
    assert cat.deployments["claude"].price_source == "genai-prices:anthropic/claude-sonnet-4-5"
    assert cat.deployments["claude"].rates == SONNET
    assert cat.unpriced() == ["odd"]
    assert cat.deployments["free"].price_source.startswith("config")  # a cost written, even 0, is the config's
