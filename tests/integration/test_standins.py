"""The vendor stand-ins, driven by the official SDKs and raw HTTP.

Servers run in a background event-loop thread (pytest-asyncio is not a
dependency); the tests themselves are plain sync code, like an SDK user.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http import client as http_client
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from tiergate.standins import (
    build_anthropic_standin,
    build_openai_standin,
    start_standin,
)

OAI_KEY = "sk-standin-test-123456"
ANTH_KEY = "sk-ant-standin-test"
HELLO = [{"role": "user", "content": "Say hello to the tests"}]  # 22 chars -> 5 tokens
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"enum": ["UTC", "CET"]}}}},
}
ANTH_WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}
ANTH_CLOCK = {"name": "get_time", "input_schema": CLOCK_TOOL["function"]["parameters"]}

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def servers():
    lt = _LoopThread()
    apps = {
        "oai": build_openai_standin(
            name="oai-a", models=["gpt-test", "gpt-other", "embed-test"], api_key=OAI_KEY, stream_chunks=5
        ),
        "oai_slow": build_openai_standin(name="oai-slow", models=["gpt-test"], stream_chunks=6, chunk_delay_s=0.05),
        "anth": build_anthropic_standin(
            name="anth-a", models=["claude-test", "claude-other"], api_key=ANTH_KEY, stream_chunks=5
        ),
    }
    running = {k: lt.run(start_standin(app)) for k, app in apps.items()}
    yield running
    for srv in running.values():
        lt.run(srv.stop())
    lt.close()


@pytest.fixture(autouse=True)
def _reset(servers):
    for srv in servers.values():
        assert control(srv, "/_control/reset", {}) == {"ok": True}


def http(
    url: str, body: Any = None, headers: dict[str, str] | None = None, method: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with _opener.open(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def control(srv: Any, path: str, body: Any = None) -> Any:
    status, _, raw = http(srv.base_url + path, body, method="POST" if body is not None else "GET")
    assert status == 200, raw
    return json.loads(raw)


def faults(srv: Any, *items: dict[str, Any]) -> None:
    control(srv, "/_control/faults", {"faults": list(items)})


def oai(srv: Any, **kw: Any) -> openai.OpenAI:
    kw.setdefault("api_key", OAI_KEY)
    return openai.OpenAI(base_url=srv.base_url + "/v1", **kw)


def anth(srv: Any, **kw: Any) -> anthropic.Anthropic:
    kw.setdefault("api_key", ANTH_KEY)
    return anthropic.Anthropic(base_url=srv.base_url, **kw)


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event, data) pairs; asserts the \\n\\n framing is intact."""
    text = raw.decode()
    assert text.endswith("\n\n")
    out = []
    for block in text.strip("\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((fields.get("event"), fields["data"]))
    return out


# --- OpenAI -------------------------------------------------------------------


def test_openai_chat_completion(servers):
    client = oai(servers["oai"])
    done = client.chat.completions.create(model="gpt-test", messages=HELLO)
    assert done.id.startswith("chatcmpl-") and done.object == "chat.completion"
    assert done.model == "gpt-test"
    msg = done.choices[0].message
    assert msg.role == "assistant" and msg.content.startswith("[oai-a] ")
    assert done.choices[0].finish_reason == "stop"
    assert done.usage.prompt_tokens == 5
    assert done.usage.completion_tokens == len(msg.content.split()) > 5
    assert done.usage.total_tokens == 5 + done.usage.completion_tokens
    again = client.chat.completions.create(model="gpt-test", messages=HELLO)
    other = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "something else"}])
    assert again.choices[0].message.content == msg.content != other.choices[0].message.content


def test_openai_max_tokens_and_stop(servers):
    client = oai(servers["oai"])
    for kw in ({"max_tokens": 3}, {"max_completion_tokens": 3}):
        done = client.chat.completions.create(model="gpt-test", messages=HELLO, **kw)
        assert len(done.choices[0].message.content.split()) == 3
        assert done.choices[0].finish_reason == "length"
        assert done.usage.completion_tokens == 3
    full = client.chat.completions.create(model="gpt-test", messages=HELLO)
    third = full.choices[0].message.content.split()[2]
    cut = client.chat.completions.create(model="gpt-test", messages=HELLO, stop=[third])
    assert third not in cut.choices[0].message.content
    assert cut.choices[0].finish_reason == "stop"


def test_openai_streaming_with_usage(servers):
    client = oai(servers["oai"])
    full = client.chat.completions.create(model="gpt-test", messages=HELLO)
    chunks = list(
        client.chat.completions.create(
            model="gpt-test", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert len(pieces) == 5 and all(pieces)
    assert "".join(pieces) == full.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == full.usage.total_tokens
    plain = list(client.chat.completions.create(model="gpt-test", messages=HELLO, stream=True))
    assert len(plain) == len(chunks) - 1 and all(c.usage is None for c in plain)


def test_openai_stream_wire_format(servers):
    status, headers, raw = http(
        servers["oai"].base_url + "/v1/chat/completions",
        {"model": "gpt-test", "messages": HELLO, "stream": True},
        {"authorization": f"Bearer {OAI_KEY}"},
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw)
    assert all(ev is None for ev, _ in events)
    assert events[-1][1] == "[DONE]" and raw.endswith(b"data: [DONE]\n\n")
    assert json.loads(events[0][1])["choices"][0]["delta"]["role"] == "assistant"


def test_openai_chunks_are_written_separately(servers):
    client = oai(servers["oai_slow"], api_key="anything")
    start = time.monotonic()
    arrivals = [time.monotonic() for _ in client.chat.completions.create(model="gpt-test", messages=HELLO, stream=True)]
    assert len(arrivals) == 1 + 6 + 1  # role, content pieces, finish
    # 7 gaps of 50 ms: the first chunk must arrive well before the last one.
    assert arrivals[-1] - arrivals[0] >= 0.25
    assert arrivals[0] - start < arrivals[-1] - start - 0.2


def test_openai_tool_call(servers):
    client = oai(servers["oai"])
    for kw in ({"tool_choice": "required"}, {"tool_choice": "auto"}):
        msgs = HELLO if kw["tool_choice"] == "required" else [{"role": "user", "content": "Please use tool now"}]
        done = client.chat.completions.create(model="gpt-test", messages=msgs, tools=[WEATHER_TOOL, CLOCK_TOOL], **kw)
        choice = done.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        call = choice.message.tool_calls[0]
        assert call.id.startswith("call_") and call.type == "function"
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
    named = client.chat.completions.create(
        model="gpt-test",
        messages=HELLO,
        tools=[WEATHER_TOOL, CLOCK_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    fn = named.choices[0].message.tool_calls[0].function
    assert fn.name == "get_time" and json.loads(fn.arguments) == {"tz": "UTC"}
    plain = client.chat.completions.create(model="gpt-test", messages=HELLO, tools=[WEATHER_TOOL])
    assert plain.choices[0].message.tool_calls is None
    assert plain.choices[0].finish_reason == "stop"
    # After the tool result comes back, the model answers in text (no loop).
    followup = [
        {"role": "user", "content": "use tool"},
        done.choices[0].message.model_dump(),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    answer = client.chat.completions.create(model="gpt-test", messages=followup, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content.startswith("[oai-a]")


def test_openai_tool_call_with_a_sloppy_tool_is_not_a_500(servers):
    # a nameless function, and a property whose "type" is not a string, used to crash the handler
    srv = servers["oai"]
    tool = {"type": "function", "function": {"parameters": {"properties": {"x": {"type": []}}}}}
    status, _, raw = http(
        srv.base_url + "/v1/chat/completions",
        {"model": "gpt-test", "messages": HELLO, "tools": [tool], "tool_choice": "required"},
        headers={"authorization": f"Bearer {OAI_KEY}"},
    )
    assert status == 200, raw
    call = json.loads(raw)["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] is None and json.loads(call["function"]["arguments"]) == {"x": "Paris"}


def test_openai_tool_call_streaming(servers):
    client = oai(servers["oai"])
    chunks = list(
        client.chat.completions.create(
            model="gpt-test", messages=HELLO, tools=[WEATHER_TOOL], tool_choice="required", stream=True
        )
    )
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.tool_calls[0].id.startswith("call_")
    assert first.tool_calls[0].function.name == "get_weather"
    assert first.tool_calls[0].function.arguments == ""
    frags = [c.choices[0].delta.tool_calls[0].function.arguments for c in chunks[1:-1]]
    assert len(frags) > 1 and json.loads("".join(frags)) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    with client.chat.completions.stream(
        model="gpt-test", messages=HELLO, tools=[WEATHER_TOOL], tool_choice="required"
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_openai_embeddings_and_models(servers):
    client = oai(servers["oai"])
    b64 = client.embeddings.create(model="embed-test", input=["alpha", "beta"])  # SDK: base64
    flt = client.embeddings.create(model="embed-test", input=["alpha", "beta"], encoding_format="float")
    assert [len(d.embedding) for d in flt.data] == [8, 8]
    assert flt.data[0].embedding != flt.data[1].embedding
    for got, want in zip(b64.data, flt.data, strict=True):
        assert got.embedding == pytest.approx(want.embedding, abs=1e-6)
    assert sum(v * v for v in flt.data[0].embedding) == pytest.approx(1.0, abs=1e-4)
    assert flt.usage.prompt_tokens == flt.usage.total_tokens == 2
    small = client.embeddings.create(model="embed-test", input="alpha", dimensions=4, encoding_format="float")
    assert len(small.data[0].embedding) == 4
    assert [m.id for m in client.models.list()] == ["gpt-test", "gpt-other", "embed-test"]
    assert client.models.retrieve("gpt-other").id == "gpt-other"


def test_openai_errors(servers):
    srv = servers["oai"]
    with pytest.raises(openai.AuthenticationError) as exc:
        oai(srv, api_key="sk-wrong-key-000000").chat.completions.create(model="gpt-test", messages=HELLO)
    assert exc.value.status_code == 401
    assert exc.value.body["code"] == "invalid_api_key"
    assert exc.value.body["type"] == "invalid_request_error" and exc.value.body["param"] is None
    with pytest.raises(openai.NotFoundError) as exc:
        oai(srv).chat.completions.create(model="gpt-nope", messages=HELLO)
    assert exc.value.body["code"] == "model_not_found"
    status, headers, raw = http(
        srv.base_url + "/v1/chat/completions", b"{not json", {"authorization": f"Bearer {OAI_KEY}"}
    )
    err = json.loads(raw)["error"]
    assert status == 400 and err["type"] == "invalid_request_error"
    assert set(err) == {"message", "type", "param", "code"}
    assert headers["x-request-id"].startswith("req_")
    status, _, raw = http(srv.base_url + "/v1/nope", {})
    assert status == 404 and json.loads(raw)["error"]["type"] == "invalid_request_error"


# --- OpenAI faults ------------------------------------------------------------


def test_fault_status_429_with_retry_after(servers):
    srv = servers["oai"]
    faults(srv, {"mode": "status", "status": 429, "retry_after": 7})
    with pytest.raises(openai.RateLimitError) as exc:
        oai(srv, max_retries=0).chat.completions.create(model="gpt-test", messages=HELLO)
    assert exc.value.response.headers["retry-after"] == "7"
    assert exc.value.body["code"] == "rate_limit_exceeded"
    # Fault consumed; the SDK honours a short Retry-After and then succeeds.
    faults(srv, {"mode": "status", "status": 429, "retry_after": 0.6})
    start = time.monotonic()
    done = oai(srv, max_retries=1).chat.completions.create(model="gpt-test", messages=HELLO)
    assert time.monotonic() - start >= 0.55 and done.choices[0].message.content
    assert [r["fault"] for r in control(srv, "/_control/requests")] == ["status", "status", None]


def test_fault_status_500_times_and_recording(servers):
    srv = servers["oai"]
    faults(srv, {"mode": "status", "status": 500, "times": 2})
    with pytest.raises(openai.InternalServerError):
        oai(srv, max_retries=0).chat.completions.create(model="gpt-test", messages=HELLO)
    done = oai(srv, max_retries=2).chat.completions.create(model="gpt-test", messages=HELLO)
    assert done.choices[0].finish_reason == "stop"
    reqs = control(srv, "/_control/requests")
    assert [r["fault"] for r in reqs] == ["status", "status", None]
    assert reqs[0]["method"] == "POST" and reqs[0]["path"] == "/v1/chat/completions"
    assert reqs[0]["headers"]["authorization"] == f"Bearer {OAI_KEY}"
    assert reqs[0]["body"]["messages"] == HELLO
    assert control(srv, "/_control/stats") == {"gpt-test": 3}
    control(srv, "/_control/reset", {})
    assert control(srv, "/_control/requests") == [] and control(srv, "/_control/stats") == {}


def test_fault_drop(servers):
    srv = servers["oai"]
    faults(srv, {"mode": "drop"})
    with pytest.raises(openai.APIConnectionError) as exc:
        oai(srv, max_retries=0).chat.completions.create(model="gpt-test", messages=HELLO)
    assert not isinstance(exc.value, openai.APITimeoutError)
    faults(srv, {"mode": "drop"})
    conn = http_client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("POST", "/v1/chat/completions", json.dumps({"model": "gpt-test"}))
    with pytest.raises(http_client.RemoteDisconnected):  # not a single byte came back
        conn.getresponse()
    conn.close()
    assert oai(srv, max_retries=0).chat.completions.create(model="gpt-test", messages=HELLO)


def test_fault_cut_stream(servers):
    srv = servers["oai"]
    faults(srv, {"mode": "cut_stream", "after_chunks": 3})
    got = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai(srv, max_retries=0).chat.completions.create(model="gpt-test", messages=HELLO, stream=True):
            got.append(chunk)
    assert len(got) == 3
    # Raw view: K events then a hang-up; the terminator is withheld even when K
    # exceeds the stream (role + 5 pieces + finish = 7 events before [DONE]).
    for after, expected in ((2, 2), (50, 7)):
        faults(srv, {"mode": "cut_stream", "after_chunks": after})
        conn = http_client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request(
            "POST",
            "/v1/chat/completions",
            json.dumps({"model": "gpt-test", "messages": HELLO, "stream": True}),
            {"authorization": f"Bearer {OAI_KEY}", "content-type": "application/json"},
        )
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http_client.IncompleteRead) as exc:
            resp.read()
        conn.close()
        assert exc.value.partial.count(b"data: ") == expected
        assert b"[DONE]" not in exc.value.partial
    # A cut non-streaming response is a truncated body.
    faults(srv, {"mode": "cut_stream", "after_chunks": 0})
    with pytest.raises(openai.APIConnectionError):
        oai(srv, max_retries=0).chat.completions.create(model="gpt-test", messages=HELLO)


def test_fault_slow_and_model_filter(servers):
    srv = servers["oai"]
    faults(srv, {"mode": "slow", "delay_s": 1.0})
    with pytest.raises(openai.APITimeoutError):
        oai(srv, max_retries=0, timeout=0.3).chat.completions.create(model="gpt-test", messages=HELLO)
    faults(
        srv,
        {"mode": "status", "status": 503, "model": "gpt-other"},
        {"mode": "status", "status": 429, "path": "/v1/embeddings"},
    )
    client = oai(srv, max_retries=0)
    assert client.chat.completions.create(model="gpt-test", messages=HELLO)
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="embed-test", input="x")
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="gpt-other", messages=HELLO)
    assert exc.value.status_code == 503 and exc.value.body["type"] == "server_error"
    assert control(srv, "/_control/faults") == []


def test_bad_fault_rejected_and_apps_isolated(servers):
    status, _, raw = http(servers["oai"].base_url + "/_control/faults", {"faults": [{"mode": "explode"}]})
    assert status == 400 and b"mode" in raw
    faults(servers["oai"], {"mode": "status", "status": 500})
    # The other app has its own queue.
    assert oai(servers["oai_slow"], api_key="x", max_retries=0).chat.completions.create(
        model="gpt-test", messages=HELLO
    )
    assert len(control(servers["oai"], "/_control/faults")) == 1


def test_simulated_capability_fails_tagged_tasks_as_drawn_and_starves_small_allowances(servers):
    srv = servers["oai"]
    status, _, raw = http(srv.base_url + "/_control/capability", {"profiles": {"gpt-test": {"fail": {"hard": 1}}}})
    assert status == 400 and b"profiles.gpt-test: fail maps classes" in raw
    cap = {"seed": 1, "profiles": {"gpt-test": {"fail": {"complex": 1.0}, "starve_below": 100}}}
    assert control(srv, "/_control/capability", cap) == {"models": ["gpt-test"]}
    client = oai(srv)

    def ask(level: str, max_tokens: int = 500, **kw: Any) -> Any:
        tag = f"[[standin task=T-{level} class={level} answer_tokens=40]]"
        return client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": f"{tag} go"}], max_tokens=max_tokens, **kw
        )

    done = ask("simple")  # not failed: an answer of the task's length
    assert done.choices[0].finish_reason == "stop" and done.usage.completion_tokens == 40
    assert len(done.choices[0].message.content.split()) == 40
    bad = ask("complex")  # always failed: empty, or all reasoning
    msg = bad.choices[0].message
    assert not msg.content and (bad.choices[0].finish_reason == "length") == bool(
        msg.model_extra.get("reasoning_content")
    )
    calls = ask("complex", tools=[WEATHER_TOOL], tool_choice="required").choices[0].message.tool_calls or []
    ok = ask("simple", tools=[WEATHER_TOOL], tool_choice="required").choices[0].message.tool_calls
    assert json.loads(ok[0].function.arguments) == {"city": "Paris"}  # every required argument
    if calls:  # a call with arguments cut off (not JSON) or without its required ones
        args = calls[0].function.arguments
        assert args == "{}" or not args.endswith("}"), args
    starved = ask("simple", max_tokens=50)  # below starve_below: thinks through its whole allowance
    assert starved.choices[0].finish_reason == "length" and starved.choices[0].message.content is None
    assert starved.usage.completion_tokens == 50
    untagged = client.chat.completions.create(model="gpt-test", messages=HELLO, max_tokens=500)
    assert untagged.choices[0].message.content.startswith("[oai-a] ")  # the usual fake model
    control(srv, "/_control/reset", {})
    assert ask("complex").choices[0].message.content  # reset: no capability, the usual answers


# --- Anthropic ----------------------------------------------------------------


def test_anthropic_create(servers):
    client = anth(servers["anth"])
    raw = client.messages.with_raw_response.create(model="claude-test", max_tokens=100, messages=HELLO)
    assert raw.headers["request-id"].startswith("req_")
    msg = raw.parse()
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == "claude-test" and msg.stop_reason == "end_turn"
    assert msg.stop_sequence is None
    assert msg.content[0].type == "text" and msg.content[0].text.startswith("[anth-a] ")
    assert msg.usage.input_tokens == 5
    assert msg.usage.output_tokens == len(msg.content[0].text.split())
    short = client.messages.create(model="claude-test", max_tokens=2, messages=HELLO)
    assert short.stop_reason == "max_tokens" and len(short.content[0].text.split()) == 2
    word = msg.content[0].text.split()[3]
    stopped = client.messages.create(model="claude-test", max_tokens=100, messages=HELLO, stop_sequences=[word])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == word
    with_system = client.messages.create(model="claude-test", max_tokens=100, messages=HELLO, system="x" * 40)
    assert with_system.usage.input_tokens == (22 + 40) // 4


def test_anthropic_streaming(servers):
    client = anth(servers["anth"])
    whole = client.messages.create(model="claude-test", max_tokens=100, messages=HELLO)
    with client.messages.stream(model="claude-test", max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text == whole.content[0].text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == 5
    events = [e.type for e in client.messages.create(model="claude-test", max_tokens=100, messages=HELLO, stream=True)]
    assert events == ["message_start", "content_block_start"] + ["content_block_delta"] * 5 + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_anthropic_stream_wire_format(servers):
    status, headers, raw = http(
        servers["anth"].base_url + "/v1/messages?beta=true",
        {"model": "claude-test", "max_tokens": 50, "messages": HELLO, "stream": True},
        {"x-api-key": ANTH_KEY, "anthropic-version": "2023-06-01"},
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw)
    for name, data in events:
        assert json.loads(data)["type"] == name
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = json.loads(events[0][1])["message"]
    assert start["content"] == [] and start["usage"]["output_tokens"] == 1
    delta = json.loads(events[-2][1])
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert control(servers["anth"], "/_control/requests")[0]["path"] == "/v1/messages?beta=true"


def test_anthropic_tool_use(servers):
    client = anth(servers["anth"])
    for kw, msgs in (({"tool_choice": {"type": "any"}}, HELLO), ({}, [{"role": "user", "content": "please USE TOOL"}])):
        msg = client.messages.create(
            model="claude-test", max_tokens=100, messages=msgs, tools=[ANTH_WEATHER, ANTH_CLOCK], **kw
        )
        block = msg.content[0]
        assert msg.stop_reason == "tool_use" and block.type == "tool_use"
        assert block.id.startswith("toolu_") and block.name == "get_weather"
        assert block.input == {"city": "Paris"}
    named = client.messages.create(
        model="claude-test",
        max_tokens=100,
        messages=HELLO,
        tools=[ANTH_WEATHER, ANTH_CLOCK],
        tool_choice={"type": "tool", "name": "get_time"},
    )
    assert named.content[0].name == "get_time" and named.content[0].input == {"tz": "UTC"}
    followup = [
        {"role": "user", "content": "use tool"},
        {"role": "assistant", "content": [block.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "use tool again? no: sunny"}],
        },
    ]
    answer = client.messages.create(model="claude-test", max_tokens=100, messages=followup, tools=[ANTH_WEATHER])
    assert answer.stop_reason == "end_turn" and answer.content[0].type == "text"
    with client.messages.stream(
        model="claude-test", max_tokens=100, messages=HELLO, tools=[ANTH_WEATHER], tool_choice={"type": "any"}
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].input == {"city": "Paris"}
    assert kinds.count("input_json") > 1


def test_anthropic_count_tokens_and_models(servers):
    client = anth(servers["anth"])
    count = client.messages.count_tokens(model="claude-test", messages=HELLO, system="y" * 8)
    assert count.input_tokens == (22 + 8) // 4
    assert [m.id for m in client.models.list()] == ["claude-test", "claude-other"]
    msg = client.beta.messages.create(model="claude-test", max_tokens=10, messages=HELLO)
    assert msg.content[0].text.startswith("[anth-a]")


def test_anthropic_errors(servers):
    srv = servers["anth"]
    with pytest.raises(anthropic.AuthenticationError) as exc:
        anth(srv, api_key="wrong").messages.create(model="claude-test", max_tokens=5, messages=HELLO)
    assert exc.value.body["type"] == "error"
    assert exc.value.body["error"]["type"] == "authentication_error"
    assert exc.value.response.headers["request-id"] == exc.value.body["request_id"]
    with pytest.raises(anthropic.NotFoundError) as exc:
        anth(srv).messages.create(model="claude-nope", max_tokens=5, messages=HELLO)
    assert exc.value.body["error"]["type"] == "not_found_error"
    url, hdrs = srv.base_url + "/v1/messages", {"x-api-key": ANTH_KEY}
    status, _, raw = http(url, {"model": "claude-test", "max_tokens": 5, "messages": HELLO}, hdrs)
    assert status == 400 and b"anthropic-version" in raw
    hdrs["anthropic-version"] = "2023-06-01"
    status, _, raw = http(url, {"model": "claude-test", "messages": HELLO}, hdrs)
    assert status == 400 and json.loads(raw)["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
    status, _, raw = http(url, b"{nope", hdrs)
    assert status == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"
    status, _, raw = http(srv.base_url + "/v1/nope", {})
    assert status == 404 and json.loads(raw)["error"]["type"] == "not_found_error"


def test_anthropic_faults(servers):
    srv = servers["anth"]
    client = anth(srv, max_retries=0)
    call = {"model": "claude-test", "max_tokens": 100, "messages": HELLO}
    faults(srv, {"mode": "status", "status": 529}, {"mode": "status", "status": 429, "retry_after": 3})
    with pytest.raises(anthropic.OverloadedError) as exc:
        client.messages.create(**call)
    assert exc.value.body["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.RateLimitError) as exc:
        client.messages.create(**call)
    assert exc.value.response.headers["retry-after"] == "3"
    assert exc.value.body["error"]["type"] == "rate_limit_error"
    faults(srv, {"mode": "status", "status": 500})
    with pytest.raises(anthropic.InternalServerError) as exc:
        client.messages.create(**call)
    assert exc.value.body["error"]["type"] == "api_error"
    faults(srv, {"mode": "drop"})
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(**call)
    faults(srv, {"mode": "slow", "delay_s": 1.0})
    with pytest.raises(anthropic.APITimeoutError):
        anth(srv, max_retries=0, timeout=0.3).messages.create(**call)
    faults(srv, {"mode": "cut_stream", "after_chunks": 4, "model": "claude-test"})
    assert anth(srv).messages.create(**{**call, "model": "claude-other"})  # filter skips it
    seen = []
    # This SDK surfaces a mid-stream hang-up as the raw transport error.
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        for event in client.messages.create(**call, stream=True):
            seen.append(event.type)
    # 4 events written: message_start, content_block_start, ping (skipped by SDK), delta.
    assert seen == ["message_start", "content_block_start", "content_block_delta"]
    assert client.messages.create(**call).stop_reason == "end_turn"
    assert control(srv, "/_control/stats") == {"claude-test": 7, "claude-other": 1}


# --- CLI ----------------------------------------------------------------------


def test_cli_ready_line_and_sigterm():
    cmd = [
        sys.executable,
        "-m",
        "tiergate.standins",
        "--protocol",
        "anthropic",
        "--name",
        "cli",
        "--model",
        "c1",
        "--model",
        "c2",
        "--api-key",
        "k",
        "--stream-chunks",
        "3",
    ]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        timer = threading.Timer(15, proc.kill)
        timer.start()
        try:
            line = proc.stdout.readline()
            timer.cancel()
            assert line.startswith("READY "), line or proc.stderr.read()
            port = int(line.split()[1])
            client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="k")
            msg = client.messages.create(model="c2", max_tokens=10, messages=HELLO)
            assert msg.content[0].text.startswith("[cli] ")
            with client.messages.stream(model="c1", max_tokens=50, messages=HELLO) as stream:
                assert len(list(stream.text_stream)) == 3
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            assert proc.stdout.read() == ""  # READY was the only line
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
