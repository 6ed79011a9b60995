"""A property over the Responses surface: whatever a client sends there, the answer is < 500 in OpenAI's envelope.

One real gateway (a chat stand-in, an Anthropic stand-in and a Responses stand-in behind it) takes
hypothesis-made bodies close to Responses requests (items of every type with wrong fields, tools of
every kind, formats, reasoning, include, store, previous_response_id) and random ids and queries on
GET/DELETE /v1/responses/{id} and /input_items. Afterwards the SDK still works and nothing was logged
as a traceback.
"""

from __future__ import annotations

import json

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_endpoints import JSON, Client, _check_envelope

from procs import CHEAP_KEY, MASTER_KEY, start_gateway, start_standin, tiered_config

BEARER = {"Authorization": f"Bearer {MASTER_KEY}".encode(), "Content-Type": b"application/json"}
ITEM_TYPES = st.sampled_from(
    [
        "message",
        "function_call",
        "function_call_output",
        "custom_tool_call",
        "custom_tool_call_output",
        "reasoning",
        "item_reference",
        "web_search_call",
        "x",
    ]
)
PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "output_text", "input_image", "input_file", "refusal", "x"]) | JSON},
    optional={"text": JSON, "image_url": JSON, "file_data": JSON, "refusal": JSON, "detail": JSON},
)
ITEM = st.fixed_dictionaries(
    {},
    optional={
        "type": ITEM_TYPES | JSON,
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | JSON,
        "content": st.text(max_size=20) | st.lists(PART, max_size=3) | JSON,
        "call_id": st.text(max_size=8) | JSON,
        "name": st.sampled_from(["get_weather", "apply_patch", "read"]) | JSON,
        "namespace": st.sampled_from(["fs"]) | JSON,
        "arguments": st.sampled_from(["{}", '{"city":"x"}', "nope"]) | JSON,
        "input": JSON,
        "output": JSON,
        "encrypted_content": JSON,
        "summary": JSON,
        "id": JSON,
    },
)
TOOL = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "custom", "namespace", "web_search", "mcp"]) | JSON},
    optional={
        "name": st.sampled_from(["get_weather", "apply_patch", "fs"]) | JSON,
        "parameters": JSON,
        "format": JSON,
        "tools": st.lists(JSON, max_size=2) | JSON,
        "description": JSON,
        "strict": JSON,
    },
)
BODY = st.fixed_dictionaries(
    {"model": st.sampled_from(["auto", "local-8b", "cheap", "sonnet", "oai-mini", "task/coding"]) | JSON},
    optional={
        "input": st.text(max_size=30) | st.lists(ITEM, max_size=4) | JSON,
        "instructions": JSON,
        "tools": st.lists(TOOL, max_size=3) | JSON,
        "tool_choice": st.sampled_from(["auto", "required", "none"])
        | st.fixed_dictionaries({"type": JSON, "name": JSON})
        | JSON,
        "text": st.fixed_dictionaries({"format": JSON, "verbosity": JSON}) | JSON,
        "reasoning": st.fixed_dictionaries({"effort": JSON, "summary": JSON}) | JSON,
        "include": st.lists(st.sampled_from(["reasoning.encrypted_content", "x"]), max_size=2) | JSON,
        "max_output_tokens": st.integers(-5, 10**12) | JSON,
        "stream": st.booleans() | JSON,
        "store": st.booleans() | JSON,
        "previous_response_id": st.text(max_size=12) | JSON,
        "parallel_tool_calls": JSON,
        "metadata": JSON,
        "truncation": JSON,
        "background": JSON,
    },
)
ID = st.text(alphabet="abcxyz019_-", min_size=1, max_size=12) | st.sampled_from(["resp_x", "%00", "..%2F"])
QUERY = st.sampled_from(["", "?limit=0", "?limit=abc", "?order=x", "?after=zz", "?limit=101", "?limit=5&order=asc"])


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    chat = start_standin("openai", "local", ["llama-8b", "gpt-4o-mini", "gpt-5-mini"])
    messages = start_standin("anthropic", "anthro", ["claude-sonnet-4-5"])
    cfg = tiered_config(chat, chat)
    cfg["providers"]["anthro"] = {
        "api": "anthropic-messages",
        "base_url": messages.base_url,
        "api_key": "env:CHEAP_KEY",
    }
    cfg["providers"]["oai"] = {"api": "openai-responses", "base_url": f"{chat.base_url}/v1"}
    cfg["deployments"] += [
        {"name": "sonnet", "provider": "anthro", "model": "claude-sonnet-4-5", "tier": 3, "context_window": 200000},
        {"name": "oai-mini", "provider": "oai", "model": "gpt-5-mini", "tier": 2, "context_window": 400000},
    ]
    gateway = start_gateway(tmp_path_factory.mktemp("fuzz-responses"), cfg, env_extra={"CHEAP_KEY": CHEAP_KEY})
    yield gateway
    gateway.stop()
    chat.stop()
    messages.stop()


@pytest.fixture(scope="module")
def client(gw):
    c = Client(gw.port)
    yield c
    c.conn.close()


@st.composite
def requests(draw):
    kind = draw(st.sampled_from(["create", "create", "create", "count", "get", "delete", "items"]))
    if kind in ("create", "count"):
        path = {"create": draw(st.sampled_from(["/v1/responses", "/responses"])), "count": "/v1/responses/input_tokens"}
        return "POST", path[kind], json.dumps(draw(BODY)).encode()
    suffix = "/input_items" + draw(QUERY) if kind == "items" else ""
    return ("DELETE" if kind == "delete" else "GET"), f"/v1/responses/{draw(ID)}{suffix}", b""


@settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(req=requests())
def test_no_responses_request_gets_a_5xx(gw, client, req):
    method, path, body = req
    status, raw = client.send(method, path, BEARER, body)
    assert status < 500, (status, raw[:500], req)
    if status >= 400:
        _check_envelope(path, status, raw)


def test_afterwards_the_sdk_still_works_and_nothing_crashed(gw):
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    first = c.responses.create(model="auto", input="hello")
    assert c.responses.create(model="oai-mini", input="again", previous_response_id=first.id).output_text
    text = "\n".join(gw.log)
    assert "Traceback" not in text and " ERROR " not in text, text[-4000:]
