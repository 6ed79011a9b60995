"""Streams under the gates (router/gating.py): what is read before release, what is relayed after."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import orjson

from tiergate.adapters.base import UpstreamStream
from tiergate.core.catalog import ReadLimits
from tiergate.core.gates import GatePolicy, GateRule
from tiergate.core.types import Usage
from tiergate.router.gating import RequestGate


@dataclass
class FakeDeployment:
    name: str = "local"
    limits: ReadLimits = field(default_factory=ReadLimits)


def chunk(**delta) -> bytes:
    return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def run_gate(events: list[bytes], *, stream: str, body: dict | None = None, cap: int | None = None, error=None):
    """(events the client would get, the failure, how many events were read before release)."""
    read = []

    async def rest():
        for ev in events[1:]:
            read.append(ev)
            yield ev
        if error:
            s.status.fail(error)

    s = UpstreamStream(events[0], rest(), Usage(), "text/event-stream", 0.0, close=lambda: None)
    gate = RequestGate(GatePolicy(), GateRule(stream=stream), "openai-chat", body or {})
    d = FakeDeployment(limits=ReadLimits(max_response_bytes=cap)) if cap else FakeDeployment()

    async def main():
        out, failure = await gate.hold_stream(d, s)  # type: ignore[arg-type]
        before = len(read)
        relayed = [out.first_event] + [ev async for ev in out.rest]
        return relayed, failure, before

    return asyncio.run(main())


def test_prefix_releases_at_the_first_visible_character_and_relays_everything():
    events = [chunk(role="assistant", content=""), chunk(content="Hel"), chunk(content="lo"), DONE]
    relayed, failure, before = run_gate(events, stream="prefix")
    assert failure is None and relayed == events and before == 1  # only "Hel" was read before release


def test_a_first_event_with_text_is_released_at_once_and_nothing_is_lost():
    events = [chunk(role="assistant", content="Hi"), chunk(content=" there"), DONE]
    relayed, failure, before = run_gate(events, stream="prefix")
    assert failure is None and relayed == events and before == 0


def test_prefix_judges_a_stream_that_ends_without_text():
    events = [chunk(role="assistant", content=""), chunk(reasoning_content="thinking..."), DONE]
    _, failure, _ = run_gate(events, stream="prefix")
    assert failure is not None and failure.gate == "reasoning_starved"


def test_hold_reads_everything_and_judges_the_whole_answer():
    events = [chunk(role="assistant", content=""), chunk(content='{"a": '), chunk(content="1"), DONE]
    relayed, failure, before = run_gate(events, stream="hold", body={"response_format": {"type": "json_object"}})
    assert before == 3 and failure is not None and failure.gate == "invalid_json" and relayed == events
    relayed, failure, _ = run_gate(
        [*events[:3], chunk(content="}"), DONE], stream="hold", body={"response_format": {"type": "json_object"}}
    )
    assert failure is None and len(relayed) == 5


def test_a_held_stream_past_max_response_mb_or_cut_is_incomplete():
    events = [chunk(role="assistant", content="")] + [chunk(content="x" * 100) for _ in range(50)] + [DONE]
    _, failure, before = run_gate(events, stream="hold", cap=1000)
    assert failure is not None and failure.gate == "incomplete" and "max_response_mb" in failure.detail
    assert before < 50  # reading stopped at the cap
    _, failure, _ = run_gate([chunk(role="assistant", content="")], stream="prefix", error="upstream dropped")
    assert failure is not None and failure.gate == "incomplete" and failure.detail == "upstream dropped"


def test_off_touches_nothing():
    events = [chunk(role="assistant", content=""), DONE]
    relayed, failure, before = run_gate(events, stream="off")
    assert failure is None and before == 0 and relayed == events


def test_a_long_held_stream_is_read_in_linear_time():
    """4 MB in 40,000 events: pieces joined once (adding to one string per event would copy ~80 GB)."""
    import time

    events = [chunk(role="assistant", content="")] + [chunk(content="y" * 100)] * 40_000 + [DONE]
    t = time.perf_counter()
    relayed, failure, _ = run_gate(
        events, stream="hold", body={"tools": [{"type": "function", "function": {"name": "f"}}]}
    )
    assert failure is None and len(relayed) == len(events)
    assert time.perf_counter() - t < 60  # about a second here; minutes if quadratic
