"""Quality gates, pure: the verdict table, JSON Schema with bounded patterns, policies, and the readers of
every protocol's answers and requests (on the vendors' documented examples in tests/wire/fixtures)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import orjson
import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiergate.adapters.gate_requests import expectations
from tiergate.adapters.gate_views import StreamView, reply_view
from tiergate.core.gates import (
    NO_EXPECTATIONS,
    AnswerView,
    Expectations,
    GatePolicy,
    GateRule,
    GateRulePatch,
    ToolCall,
    judge,
    schema_problem,
)

FIXTURES = Path(__file__).parents[1] / "wire" / "fixtures"
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER = {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
JSON_ASKED = Expectations(json=True)
SCHEMA_ASKED = Expectations(json=True, schema=PERSON)
TOOLS = Expectations(tools={"get_weather": WEATHER, "apply_patch": None})
RULE = GateRule()


def gate_of(view: AnswerView, expect: Expectations = NO_EXPECTATIONS, rule: GateRule = RULE) -> str | None:
    failure = judge(view, expect, rule)
    return None if failure is None else failure.gate


@pytest.mark.parametrize(
    ("view", "expect", "gate"),
    [
        (AnswerView(text="Paris."), NO_EXPECTATIONS, None),
        (AnswerView(text=""), NO_EXPECTATIONS, "empty"),
        (AnswerView(text=" \n\t "), NO_EXPECTATIONS, "empty"),
        # a reasoning model that spent its allowance thinking (seed 001's qwen3 at max_tokens 256)
        (AnswerView(reasoning="Let me think step by step...", truncated=True), NO_EXPECTATIONS, "reasoning_starved"),
        (AnswerView(truncated=True), NO_EXPECTATIONS, "reasoning_starved"),
        (AnswerView(reasoning="The answer is 4."), NO_EXPECTATIONS, "reasoning_starved"),
        (AnswerView(text="4", reasoning="2+2", truncated=False), NO_EXPECTATIONS, None),
        (AnswerView(text="partial answer", truncated=True), NO_EXPECTATIONS, None),  # visible text: the client's call
        (AnswerView(text='{"a": 1}'), JSON_ASKED, None),
        (AnswerView(text='```json\n{"a": 1}\n```'), JSON_ASKED, "invalid_json"),  # fenced: json.loads fails on it
        (AnswerView(text='{"a": 1'), JSON_ASKED, "invalid_json"),
        (AnswerView(text='{"name": "Ada", "age": 36}'), SCHEMA_ASKED, None),
        (AnswerView(text='{"name": "Ada"}'), SCHEMA_ASKED, "json_schema"),
        (AnswerView(text='{"name": "Ada", "age": -1}'), SCHEMA_ASKED, "json_schema"),
        (AnswerView(text='{"name": "Ada", "age": 3, "x": 1}'), SCHEMA_ASKED, "json_schema"),
        (AnswerView(text="not json at all"), NO_EXPECTATIONS, None),  # JSON not asked for
        (AnswerView(tool_calls=[ToolCall("get_weather", '{"location": "Paris"}')]), TOOLS, None),
        (AnswerView(tool_calls=[ToolCall("get_weather", {"location": "Paris"})]), TOOLS, None),  # Anthropic's input
        (AnswerView(tool_calls=[ToolCall("get_weather", '{"location": "Par')]), TOOLS, "tool_arguments"),
        (AnswerView(tool_calls=[ToolCall("get_weather", "[1, 2]")]), TOOLS, "tool_arguments"),
        (AnswerView(tool_calls=[ToolCall("get_weather", "{}")]), TOOLS, "tool_schema"),
        (AnswerView(tool_calls=[ToolCall("get_weather", '{"location": 7}')]), TOOLS, "tool_schema"),
        (AnswerView(tool_calls=[ToolCall("get_wether", '{"location": "Paris"}')]), TOOLS, "unknown_tool"),
        (AnswerView(tool_calls=[ToolCall("ls", "{}")]), NO_EXPECTATIONS, "unknown_tool"),  # no tools offered
        (AnswerView(tool_calls=[ToolCall("web_search", "{}")]), Expectations(tools={}, tools_known=False), None),
        (AnswerView(tool_calls=[ToolCall("apply_patch", "*** Begin Patch", freeform=True)]), TOOLS, None),
        (AnswerView(tool_calls=[ToolCall("get_weather", "")]), TOOLS, "tool_schema"),  # no arguments: {}
        (AnswerView(refusal="I'm sorry, I cannot help with that."), NO_EXPECTATIONS, "refusal"),
        # a tool call is an answer even when JSON was asked for: only the text is JSON-checked
        (
            AnswerView(tool_calls=[ToolCall("get_weather", '{"location": "x"}')]),
            Expectations(json=True, tools=TOOLS.tools),
            None,
        ),
    ],
)
def test_verdicts(view, expect, gate):
    assert gate_of(view, expect) == gate


def test_configured_checks_refusals_length_and_patterns():
    rule = GateRule(
        refusal_patterns=(regex.compile(r"(?i)^\s*(i'?m sorry|i cannot|as an ai)"),),
        min_chars=10,
        must_match=(regex.compile(r"\d"),),
    )
    assert gate_of(AnswerView(text="I'm sorry, but I can't do that: 1"), rule=rule) == "refusal"
    assert gate_of(AnswerView(text="short 1"), rule=rule) == "min_length"
    assert gate_of(AnswerView(text="long enough but no digit"), rule=rule) == "regex"
    assert gate_of(AnswerView(text="The answer is 42, plainly."), rule=rule) is None
    # a check not listed is not applied
    assert gate_of(AnswerView(text=""), rule=GateRule(checks=frozenset({"invalid_json"}))) is None
    assert gate_of(AnswerView(text=""), rule=GateRule(enabled=False)) is None


def test_pathological_patterns_are_bounded_in_time_and_judge_nothing():
    evil = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}
    answer = {"s": "a" * 5000 + "!"}
    t = time.perf_counter()
    assert schema_problem(answer, evil) is None  # ran out of time: not judged
    rule = GateRule(must_match=(regex.compile(r"^(a|aa)+$"),))
    assert gate_of(AnswerView(text="a" * 5000 + "!"), rule=rule) is None
    assert time.perf_counter() - t < 5  # two bounded searches, not an exponential one (generous for a busy host)
    keyed = {"type": "object", "patternProperties": {"^x-": {"type": "integer"}}}
    assert schema_problem({"x-a": "one"}, keyed) is not None
    assert schema_problem({"x-a": 1, "y": "free"}, keyed) is None


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "no-such-type"},  # invalid schema: the request's mistake, not the answer's
        {"$ref": "https://example.invalid/schema.json"},  # unresolvable (never fetched)
        {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},  # Gemini's responseSchema dialect
    ],
)
def test_schemas_that_cannot_judge_pass(schema):
    assert schema_problem({"a": 1}, schema) is None


def test_deep_answers_and_deep_schemas_do_not_raise():
    deep: object = 1
    for _ in range(900):
        deep = {"a": deep}
    nested: dict = {"type": "object"}
    for _ in range(60):
        nested = {"type": "object", "properties": {"a": nested}}
    assert schema_problem(deep, nested) in (None,) or isinstance(schema_problem(deep, nested), str)


def patch(**kw) -> GateRulePatch:
    return GateRulePatch(**kw)


@pytest.mark.parametrize(
    ("policy", "task", "model", "routed", "gated"),
    [
        (GatePolicy(), None, "auto", True, True),
        (GatePolicy(), "coding", "task/coding", True, True),
        (GatePolicy(), None, "gpt-4o", False, False),  # a named model: the client chose it
        (GatePolicy(apply_to="all"), None, "gpt-4o", False, True),
        (GatePolicy(apply_to="none"), None, "auto", True, False),
        (GatePolicy(models={"gpt-4o": patch(enabled=True)}), None, "gpt-4o", False, True),
        (GatePolicy(tasks={"chat": patch(enabled=False)}), "chat", "auto", True, False),
        (GatePolicy(apply_to="none", tasks={"extract": patch(enabled=True)}), "extract", "auto", True, True),
        # the alias's word wins over the task's
        (GatePolicy(tasks={"x": patch(enabled=True)}, models={"m": patch(enabled=False)}), "x", "m", True, False),
        (GatePolicy(default=GateRule(enabled=False)), None, "auto", True, False),
    ],
)
def test_which_requests_are_gated(policy, task, model, routed, gated):
    assert (policy.for_request(task, model, routed=routed) is not None) == gated


def test_rules_layer_default_task_alias_then_deployment():
    policy = GatePolicy(
        default=GateRule(min_chars=5),
        tasks={"extract": patch(stream="hold", min_chars=20)},
        models={"fast": patch(min_chars=30)},
        deployments={"frontier": patch(enabled=False)},
    )
    rule = policy.for_request("extract", "fast", routed=True)
    assert rule is not None and rule.stream == "hold" and rule.min_chars == 30
    assert policy.for_deployment(rule, "frontier").enabled is False
    assert policy.for_deployment(rule, "local").enabled is True
    assert GateRule().stream_mode(JSON_ASKED) == "hold"
    assert GateRule().stream_mode(TOOLS) == "hold"
    assert GateRule().stream_mode(NO_EXPECTATIONS) == "prefix"
    assert GateRule(stream="off").stream_mode(JSON_ASKED) == "off"


# ----------------------------------------------------------------------------- readers, on documented examples


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def sse_events(name: str) -> list[bytes]:
    raw = (FIXTURES / name).read_bytes().replace(b"\r\n", b"\n")
    return [e + b"\n\n" for e in raw.split(b"\n\n") if e.strip()]


def test_openai_reply_and_stream_with_tool_calls():
    view = reply_view("openai-chat", orjson.dumps(fixture("resp_openai_tool_calls.json")["openai"]))
    assert view is not None and [c.name for c in view.tool_calls] == ["get_current_weather"]
    assert orjson.loads(view.tool_calls[0].arguments) == {"location": "Boston, MA"}
    sv = StreamView("openai-chat")
    for ev in sse_events("openai_stream_parallel_tools.sse"):
        sv.feed(ev)
    streamed = sv.finished()
    assert sv.view.complete and [c.name for c in streamed.tool_calls] == ["get_weather", "get_weather"]
    assert [orjson.loads(c.arguments)["location"] for c in streamed.tool_calls] == ["Paris, France", "Bogotá, Colombia"]
    assert judge(streamed, Expectations(tools={"get_weather": WEATHER}), RULE) is None


def test_anthropic_reply_and_stream_with_thinking_and_tool_use():
    view = reply_view("anthropic-messages", orjson.dumps(fixture("resp_anthropic_tool_use.json")["anthropic"]))
    assert view is not None and view.reasoning and [c.name for c in view.tool_calls] == ["get_weather"]
    sv = StreamView("anthropic-messages")
    for ev in sse_events("anthropic_stream_thinking_tool.sse"):
        sv.feed(ev)
    streamed = sv.finished()
    assert sv.view.complete and streamed.text.startswith("Okay, let's check the weather")
    assert streamed.reasoning and [c.name for c in streamed.tool_calls] == ["get_weather"]
    assert orjson.loads(streamed.tool_calls[0].arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}


def test_responses_ollama_and_gemini_replies():
    # OpenAI Responses API reference: a function_call output item, and an incomplete reasoning-only response
    call = {"output": [{"type": "function_call", "name": "get_weather", "arguments": '{"location":"Paris"}'}]}
    starved = {
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": [{"type": "reasoning", "summary": [], "encrypted_content": "gAAAA..."}],
    }
    assert gate_of(reply_view("openai-responses", orjson.dumps(call)), TOOLS) is None
    assert gate_of(reply_view("openai-responses", orjson.dumps(starved))) == "reasoning_starved"
    # Ollama's API docs: a chat response with a tool call (arguments as an object), and a thinking-only one
    ollama = {
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"location": "Paris"}}}],
        },
        "done": True,
        "done_reason": "stop",
    }
    assert gate_of(reply_view("ollama-chat", orjson.dumps(ollama)), TOOLS) is None
    thinking = {"message": {"content": "", "thinking": "Hmm"}, "done": True, "done_reason": "length"}
    assert gate_of(reply_view("ollama-chat", orjson.dumps(thinking))) == "reasoning_starved"
    assert gate_of(reply_view("ollama-generate", orjson.dumps({"response": "", "done": True}))) == "empty"
    # Gemini's generateContent reference: a functionCall part; a thought part only, stopped at MAX_TOKENS
    gemini = {
        "candidates": [
            {
                "content": {"parts": [{"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}]},
                "finishReason": "STOP",
            }
        ]
    }
    assert gate_of(reply_view("gemini-generate", orjson.dumps(gemini)), TOOLS) is None
    gthought = {
        "candidates": [{"content": {"parts": [{"text": "Considering", "thought": True}]}, "finishReason": "MAX_TOKENS"}]
    }
    assert gate_of(reply_view("gemini-generate", orjson.dumps(gthought))) == "reasoning_starved"
    blocked = {"candidates": [{"finishReason": "SAFETY"}]}
    assert gate_of(reply_view("gemini-generate", orjson.dumps(blocked))) == "refusal"


def test_streamed_ollama_lines_and_gemini_chunks_accumulate():
    ov = StreamView("ollama-chat")
    for line in ({"message": {"content": '{"na'}, "done": False}, {"message": {"content": 'me": 1}'}, "done": True}):
        ov.feed(orjson.dumps(line) + b"\n")
    assert ov.view.complete and ov.finished().text == '{"name": 1}'
    gv = StreamView("gemini-generate")
    for chunk in (
        {"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]},
        {"candidates": [{"content": {"parts": [{"text": "lo"}]}, "finishReason": "STOP"}]},
    ):
        gv.feed(b"data: " + orjson.dumps(chunk) + b"\n\n")
    assert gv.view.complete and gv.finished().text == "Hello" and gv.visible == 5


@pytest.mark.parametrize(
    ("protocol", "body", "json_", "schema", "tools", "known"),
    [
        ("openai-chat", {"response_format": {"type": "json_object"}}, True, None, [], True),
        (
            "openai-chat",
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "p", "schema": PERSON, "strict": True},
                }
            },
            True,
            PERSON,
            [],
            True,
        ),
        (
            "openai-chat",
            {"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]},
            False,
            None,
            ["get_weather"],
            True,
        ),
        ("openai-chat", {"functions": [{"name": "f", "parameters": WEATHER}]}, False, None, ["f"], True),
        ("openai-chat", {"tools": [{"type": "web_search_preview"}]}, False, None, [], False),
        (
            "anthropic-messages",
            {"tools": [{"name": "get_weather", "input_schema": WEATHER}, {"type": "bash_20250124", "name": "bash"}]},
            False,
            None,
            ["bash", "get_weather"],
            True,
        ),
        ("anthropic-messages", {"output_format": {"type": "json_schema", "schema": PERSON}}, True, PERSON, [], True),
        (
            "openai-responses",
            {
                "text": {"format": {"type": "json_schema", "name": "p", "schema": PERSON}},
                "tools": [{"type": "custom", "name": "apply_patch"}, {"type": "web_search"}],
            },
            True,
            PERSON,
            ["apply_patch"],
            False,
        ),
        ("ollama-chat", {"format": PERSON}, True, PERSON, [], True),
        ("ollama-generate", {"format": "json"}, True, None, [], True),
        (
            "gemini-generate",
            {
                "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": PERSON},
                "tools": [
                    {"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": WEATHER}]},
                    {"googleSearch": {}},
                ],
            },
            True,
            PERSON,
            ["get_weather"],
            False,
        ),
        ("openai-chat", {"messages": []}, False, None, [], True),
        ("openai-embeddings", {"response_format": {"type": "json_object"}}, False, None, [], True),
    ],
)
def test_request_expectations(protocol, body, json_, schema, tools, known):
    e = expectations(protocol, body)
    assert (e.json, e.schema, sorted(e.tools), e.tools_known) == (json_, schema, tools, known)


# ----------------------------------------------------------------------------- hostile input never raises

ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
)
PROTOCOLS = st.sampled_from(
    ["openai-chat", "anthropic-messages", "openai-responses", "ollama-chat", "ollama-generate", "gemini-generate"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(protocol=PROTOCOLS, body=ANY_JSON, raw=st.binary(max_size=200), schema=ANY_JSON)
def test_readers_and_gates_take_any_input(protocol, body, raw, schema):
    for blob in (raw, orjson.dumps(body)):
        view = reply_view(protocol, blob)
        if view is not None:
            judge(view, expectations(protocol, body) if isinstance(body, dict) else NO_EXPECTATIONS, RULE)
        sv = StreamView(protocol)
        sv.feed(blob)
        sv.feed(b"data: " + orjson.dumps(body) + b"\n\n")
        judge(sv.finished(), NO_EXPECTATIONS, RULE)
    if isinstance(schema, dict):
        assert schema_problem(body, schema) is None or isinstance(schema_problem(body, schema), str)
        judge(AnswerView(text=orjson.dumps(body).decode()), Expectations(json=True, schema=schema), RULE)


# ----------------------------------------------------------------------------- the chat lane's shortcut


@pytest.mark.parametrize(
    ("content", "extra", "plain"),
    [
        ('"Hello there"', {}, True),
        ('""', {}, False),
        ('" "', {}, False),
        ('"\\n\\nHi"', {}, False),  # starts with an escape: parsed and judged (passes: text after strip)
        ("null", {}, False),
        ('"Hi"', {"refusal": "I can't"}, False),
        ('"Hi"', {"tool_calls": []}, False),
        ('"Hi"', {"refusal": None}, True),
    ],
)
def test_plainly_answered_replies_skip_the_parse(content, extra, plain):
    from tiergate.adapters.gate_views import plainly_answered

    msg = orjson.dumps({"role": "assistant", **extra}).decode()[:-1] + f', "content": {content}}}'
    body = f'{{"id": "x", "choices": [{{"index": 0, "message": {msg}, "finish_reason": "stop"}}]}}'.encode()
    assert plainly_answered("openai-chat", {}, body, RULE) is plain
    assert plainly_answered("openai-chat", {}, body.replace(b": ", b":"), RULE) is plain  # compact JSON too
    assert not plainly_answered("openai-chat", {}, body, GateRule(min_chars=3))  # a check on the text: always parsed


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    message=st.dictionaries(
        st.sampled_from(["content", "refusal", "tool_calls", "reasoning_content", "role"]), ANY_JSON, max_size=5
    ),
    compact=st.booleans(),
)
def test_the_shortcut_never_passes_an_answer_a_gate_would_fail(message, compact):
    from tiergate.adapters.gate_views import plainly_answered

    obj = {"choices": [{"index": 0, "message": message, "finish_reason": "length"}]}
    body = orjson.dumps(obj) if compact else json.dumps(obj).encode()
    if plainly_answered("openai-chat", {}, body, RULE):
        assert judge(reply_view("openai-chat", body), NO_EXPECTATIONS, RULE) is None


@pytest.mark.parametrize(
    ("floor", "limit", "asked", "sent"),
    [
        (None, None, 256, 256),
        (2048, None, 256, 2048),  # seed 001: qwen3 asked for 256 thought for all of it
        (2048, 1024, 256, 1024),  # still held to the deployment's own limit
        (2048, None, 4096, 4096),
        (2048, None, None, None),  # no cap asked: none given
        (None, 1024, 4096, 1024),
    ],
)
def test_the_reasoning_floor(floor, limit, asked, sent):
    from dataclasses import replace

    from tiergate.core.catalog import Deployment
    from tiergate.core.money import reserved_output

    d = Deployment("q", "box", "openai-chat", "http://x", "qwen3:8b", 0, True, 32768, limit, 0.0, 0.0)
    d = replace(d, reasoning_floor=floor)
    assert d.output_tokens(asked) == sent
    if asked is not None:
        assert reserved_output(d, asked, 100) == sent  # the budget reserves what is sent


@pytest.mark.parametrize(
    ("floor", "limit", "asked", "factor", "retry"),
    [
        (2048, None, 256, 2.0, 4096),  # sent the floor (2048), starved: once more with twice that
        (2048, None, 4096, 2.0, 8192),  # sent what was asked
        (2048, 6000, 4096, 2.0, 6000),  # held to the deployment's own limit
        (2048, 2048, 256, 2.0, None),  # already at its limit: nothing larger to try
        (2048, None, None, 2.0, None),  # no cap sent: the model's own default was its allowance
        (None, None, 256, 2.0, None),  # not a reasoning model: no retry, escalate
        (2048, None, 256, 1.0, None),  # retries turned off
        (2048, None, 256, 1.5, 3072),
    ],
)
def test_a_starved_answer_is_retried_with_a_larger_allowance(floor, limit, asked, factor, retry):
    from dataclasses import replace

    from tiergate.core.catalog import Deployment
    from tiergate.core.money import reserved_output

    d = Deployment("q", "box", "openai-chat", "http://x", "qwen3:8b", 0, True, 32768, limit, 0.0, 0.0)
    d = replace(d, reasoning_floor=floor)
    assert d.starved_allowance(asked, factor) == retry
    if retry is not None:  # the retry's copy sends the larger allowance, and its reservation assumes it
        roomier = replace(d, reasoning_floor=retry)
        assert roomier.output_tokens(asked) == retry and reserved_output(roomier, asked, 100) == retry
