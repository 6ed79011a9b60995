"""Prompt estimates against the counts the vendors' own APIs reported for documented example requests,
and the per-deployment ratio learned from settled calls.

OpenAI: the cookbook "How to count tokens with tiktoken" (example_messages: 129 prompt tokens on gpt-3.5-turbo
and gpt-4) and the per-request counts gpt-tokenizer checks against the API (hello: 8, function definitions ...).
Anthropic: the token counting guide (system "You are a scientist" + "Hello, Claude": 14; the get_weather tool:
403).
"""

from __future__ import annotations

import pytest

from tiergate.core.money import conservative_tokens
from tiergate.core.tokens import (
    ANTHROPIC_TOOLS,
    IMAGE_TOKENS,
    LOW_DETAIL_IMAGE,
    MIN_SAMPLES,
    PromptCount,
    Ratio,
    chat_prompt,
    embeddings_prompt,
    learn,
    learned_tokens,
    messages_prompt,
)

JARGON = "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."
LEVERAGE = "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."
COOKBOOK = [
    {"role": "system", "content": JARGON},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": LEVERAGE},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]
FOO = {"name": "foo", "parameters": {"type": "object", "properties": {}}}
HELLO = [{"role": "user", "content": "hello"}]

OPENAI_DOCUMENTED = [
    ("cookbook example_messages", {"messages": COOKBOOK}, 129),
    *(
        (f"cookbook message {i}", {"messages": [m]}, n)
        for i, (m, n) in enumerate(zip(COOKBOOK, [24, 20, 19, 27, 24, 25], strict=True))
    ),
    ("hello", {"messages": HELLO}, 8),
    ("hello world", {"messages": [{"role": "user", "content": "hello world"}]}, 9),
    (
        "three roles",
        {
            "messages": [
                {"role": "system", "content": "# Important: you're the best robot"},
                {"role": "user", "content": "hello robot"},
                {"role": "assistant", "content": "hello world"},
            ]
        },
        26,
    ),
    ("a function", {"messages": HELLO, "functions": [FOO]}, 31),
    ("a function, described", {"messages": HELLO, "functions": [{**FOO, "description": "Do a foo"}]}, 35),
    (
        "a function with two properties",
        {
            "messages": HELLO,
            "functions": [
                {
                    "name": "bing_bong",
                    "description": "Do a bing bong",
                    "parameters": {
                        "type": "object",
                        "properties": {"foo": {"type": "string"}, "bar": {"type": "number", "description": "A number"}},
                    },
                }
            ],
        },
        52,
    ),
    (
        "an assistant's function call",
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": "",
                    "function_call": {"name": "do_stuff", "arguments": '{"foo": "bar", "baz": 1.5}'},
                }
            ]
        },
        27,
    ),
    (
        "a function's result",
        {
            "messages": [
                {"role": "user", "content": "hello world"},
                {"role": "function", "name": "do_stuff", "content": '{"foo": "bar", "baz": 1.5}'},
            ]
        },
        29,
    ),
    (
        "two functions, three messages",
        {
            "messages": [
                {"role": "system", "content": "Hello:"},
                {"role": "system", "content": "Hello"},
                {"role": "user", "content": "Hi there"},
            ],
            "functions": [FOO, {**FOO, "name": "do_other_stuff"}],
        },
        51,
    ),
]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}},
        "required": ["location"],
    },
}
ANTHROPIC_DOCUMENTED = [
    ("basic", {"system": "You are a scientist", "messages": [{"role": "user", "content": "Hello, Claude"}]}, 14),
    (
        "a tool",
        {
            "tools": [WEATHER_TOOL],
            "messages": [{"role": "user", "content": "What's the weather like in San Francisco?"}],
        },
        403,
    ),
]


def _check(estimate: int, actual: int) -> None:
    # close: within 10% below (the margin covers it) and 40% above (plus 6 tokens for the tiniest)
    assert 0.9 * actual <= estimate <= 1.4 * actual + 6, (estimate, actual)
    # a reservation of a request not seen before never holds less than the vendor bills
    assert conservative_tokens(estimate) >= actual


@pytest.mark.parametrize(("name", "body", "actual"), OPENAI_DOCUMENTED, ids=[c[0] for c in OPENAI_DOCUMENTED])
def test_openai_documented_requests(name, body, actual):
    _check(chat_prompt(body).tokens, actual)


@pytest.mark.parametrize(("name", "body", "actual"), ANTHROPIC_DOCUMENTED, ids=[c[0] for c in ANTHROPIC_DOCUMENTED])
def test_anthropic_documented_requests(name, body, actual):
    _check(messages_prompt(body).tokens, actual)


def test_the_envelope_is_not_counted():
    """The old estimate read the whole JSON body: ids, keys and settings cost tokens they do not."""
    small = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    busy = {
        **small,
        "temperature": 0.2,
        "user": "u" * 200,
        "metadata": {"trace": "t" * 500},
        "stream_options": {"include_usage": True},
    }
    assert chat_prompt(small) == chat_prompt(busy)
    assert chat_prompt(small).tokens == 1 + 4 + 3  # "hi", a message, the reply priming: OpenAI bills 8


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # images count a fixed amount each, whatever their URL or base64 length
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x" * 90000}}]}]},
            PromptCount(0, 0, 7, IMAGE_TOKENS),
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "low"}}]}
                ]
            },
            PromptCount(0, 0, 7, LOW_DETAIL_IMAGE),
        ),
        # CJK: each non-ASCII byte counts half a token (1.5 a character); the ratio learns the rest
        ({"messages": [{"role": "user", "content": "你好世界"}]}, PromptCount(24, 12, 7, 0)),
        # tool calls: name, JSON arguments (dense: 1.5 weight), a call's framing
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                    }
                ]
            },
            PromptCount(1 + 3, 3, 7 + 8, 0),
        ),
    ],
)
def test_openai_parts(body, expected):
    assert chat_prompt(body) == expected


def test_anthropic_blocks_and_cache_breakpoints():
    body = {
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 50000}},
                    {"type": "text", "text": "what is this?"},
                ],
            },
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "look", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "a cat"}]},
        ],
        "tools": [WEATHER_TOOL],
    }
    p = messages_prompt(body)
    assert p.cache_writes and p.fixed == IMAGE_TOKENS
    assert p.overhead == 3 + 4 * 4 + ANTHROPIC_TOOLS
    assert not messages_prompt({"messages": body["messages"][1:]}).cache_writes
    # a breakpoint on any block, or on the tools, may write the prefix before it
    mark = {"cache_control": {"type": "ephemeral"}}
    image = {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}, **mark}
    assert messages_prompt({"messages": [{"role": "user", "content": [image]}]}).cache_writes
    tool_use = {"type": "tool_use", "id": "t", "name": "look", "input": {}, **mark}
    assert messages_prompt({"messages": [{"role": "assistant", "content": [tool_use]}]}).cache_writes
    hi = [{"role": "user", "content": "hi"}]
    assert messages_prompt({"messages": hi, "tools": [{**WEATHER_TOOL, **mark}]}).cache_writes
    assert messages_prompt({"messages": hi, **mark}).cache_writes  # automatic caching


@pytest.mark.parametrize(
    ("value", "fixed", "text_bytes"),
    [("The food was delicious", 0, 22), (["ab", "cd"], 0, 4), ([1, 2, 3], 3, 0), ([[1, 2], [3]], 3, 0)],
)
def test_embeddings_inputs(value, fixed, text_bytes):
    p = embeddings_prompt({"input": value})
    assert (p.fixed, p.text_bytes, p.overhead) == (fixed, text_bytes, 0)


# --------------------------------------------------------------------------- the learned ratio
STANDIN = PromptCount(units=400, text_bytes=400, overhead=7)  # 400 bytes the stand-in bills as 100 tokens


def taught(*samples: tuple[PromptCount, int]) -> Ratio | None:
    r = None
    for prompt, tokens in samples:
        r = learn(r, prompt, tokens)
    return r


@pytest.mark.parametrize(
    ("samples", "prompt", "expected"),
    [
        ([], STANDIN, None),  # nothing learned: the caller uses the estimate
        ([(STANDIN, 100)] * (MIN_SAMPLES - 1), STANDIN, None),  # not yet enough
        ([(STANDIN, 100)] * MIN_SAMPLES, STANDIN, 102),  # 100 and the 1/64 margin, rounded up
        ([(STANDIN, 100)] * MIN_SAMPLES, STANDIN._replace(text_bytes=4000), 1016),  # longer prompts scale
        ([(STANDIN, 100)] * MIN_SAMPLES, STANDIN._replace(text_bytes=8), 7),  # never less than the framing
        ([(STANDIN, 100)] * MIN_SAMPLES, STANDIN._replace(fixed=1600), 1702),  # fixed parts are added, not scaled
        # a tokenizer at 2 bytes a token (CJK, dense JSON) is learned too: more than the estimate
        ([(STANDIN, 200)] * MIN_SAMPLES, STANDIN, 204),
        # estimated-looking samples that say nothing are skipped: too short, or no text tokens left
        ([(STANDIN._replace(text_bytes=10), 3)] * 5, STANDIN, None),
        ([(STANDIN._replace(fixed=1600), 1500)] * 5, STANDIN, None),
    ],
)
def test_learned_tokens(samples, prompt, expected):
    assert learned_tokens(taught(*samples), prompt) == expected


def test_a_spread_of_ratios_widens_the_margin_and_an_outlier_is_bounded():
    steady = taught(*[(STANDIN, 100)] * 8)
    mixed = taught(*[(STANDIN, n) for n in (100, 80, 120, 90, 110, 100, 85, 115)])
    assert steady is not None and mixed is not None and mixed.deviation > 0
    assert learned_tokens(mixed, STANDIN) > learned_tokens(steady, STANDIN) >= 100
    # one absurd report (a prompt of nearly no tokens: long runs of one character) moves the mean 1/8 of the
    # way to the 8 bytes a token it is clamped to, and its deviation makes the next reservations larger
    wild = learn(steady, STANDIN, 1)
    assert wild is not None and wild.mean == pytest.approx(4 + (8 - 4) / 8)
    assert learned_tokens(wild, STANDIN) > learned_tokens(steady, STANDIN)
    # however many such reports come, a learned count stays at least half of four bytes a token
    taught_free = taught(*[(STANDIN, 1)] * 50)
    assert learned_tokens(taught_free, STANDIN) >= 400 / 8
