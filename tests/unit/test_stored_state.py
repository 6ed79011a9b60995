"""Responses state in isolation: stored input items, and a ledger that cannot store costs nothing but the GET."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from tiergate.api.responses_state import StoredState, input_items
from tiergate.core.types import Identity


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hi", [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]),
        (
            [{"role": "assistant", "content": "ok"}],
            [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}],
        ),
        ([{"type": "function_call_output", "call_id": "c", "output": "x"}], [{"type": "function_call_output"}]),
        ([5, "x", None], []),
        (None, []),
    ],
)
def test_input_items_are_items_with_ids(value, expected):
    items = input_items(value)
    assert len(items) == len(expected)
    for item, want in zip(items, expected, strict=True):
        assert item["id"] and all(item[k] == v for k, v in want.items())


class BrokenLedger:
    def store_response(self, *args, **kwargs):
        raise OSError("disk full")


def test_a_ledger_that_cannot_store_does_not_fail_the_answer():
    gw = SimpleNamespace(ledger=BrokenLedger(), config=SimpleNamespace(responses=SimpleNamespace(store_days=1)))
    state = StoredState(gw, Identity("k"), {"input": "hi"})  # type: ignore[arg-type]

    async def go():
        await state.expand({"input": "hi"})
        await state.keep({"id": "resp_1", "output": []})  # logged, not raised

    asyncio.run(go())


def test_store_false_keeps_nothing_and_bad_types_are_400():
    from tiergate.core.errors import BadRequest

    gw = SimpleNamespace(ledger=BrokenLedger())
    assert StoredState(gw, Identity("k"), {"store": False}).store is False  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        StoredState(gw, Identity("k"), {"store": "yes"})  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        StoredState(gw, Identity("k"), {"previous_response_id": 5})  # type: ignore[arg-type]
