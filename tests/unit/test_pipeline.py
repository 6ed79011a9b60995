"""The request pipeline against scripted upstreams, without a socket: retries, breakers, fallback and
escalation order, stream failover, budget holds released and settled, one ledger row per attempt."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_harness import COMPLETION, STREAM, build, chunk, raw_config
from tiergate.adapters.memory_transport import Reply, dropped, refused
from tiergate.adapters.openai_chat import upstream_body
from tiergate.core.errors import (
    AllCandidatesFailed,
    BudgetExceeded,
    UpstreamRejected,
)


def run(coro):
    return asyncio.run(coro)


def status(code: int, retry_after: str | None = None) -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Reply.json(
        {"error": {"message": f"upstream says {code}", "type": "server_error"}}, status=code, headers=headers
    )


BUDGET = {"budgets": [{"scope": "global", "window": "day", "limit_usd": 5.0}]}


# --------------------------------------------------------------------------- retries
@pytest.mark.parametrize(
    ("retry_after", "sleeps", "served_by"),
    [
        (None, [0.25, 0.5], "local-a"),  # exponential backoff from retry_backoff_s
        ("3", [3.0, 3.0], "local-a"),  # Retry-After is honoured when longer than the backoff
        ("0", [0.25, 0.5], "local-a"),  # ... and never shortens the backoff
        ("60", [], "local-b"),  # longer than max_retry_after_s: move on at once
    ],
)
def test_retries_honour_retry_after(retry_after, sleeps, served_by):
    h = build()
    h.script("local-a", status(429, retry_after), status(429, retry_after))
    answer, _ = run(h.ask())
    assert h.sleeps == sleeps
    assert answer.deployment.name == served_by


def test_a_client_fault_is_not_retried_and_reaches_the_client():
    h = build()
    h.script("local-a", status(400))
    with pytest.raises(UpstreamRejected) as err:
        run(h.ask())
    assert err.value.status == 400 and err.value.body is not None  # the vendor's own bytes, same protocol
    assert h.seen == ["local-a"] and h.sleeps == []


# --------------------------------------------------------------------------- order of candidates
@pytest.mark.parametrize(
    ("failing", "expected_seen", "served_by"),
    [
        ((), ["local-a"], "local-a"),
        (("local-a",), ["local-a"] * 3 + ["local-b"], "local-b"),  # same tier first
        (("local-a", "local-b"), ["local-a"] * 3 + ["local-b"] * 3 + ["cheap"], "cheap"),  # then up one tier
        (("local-a", "local-b", "cheap"), ["local-a"] * 3 + ["local-b"] * 3 + ["cheap"] * 3 + ["frontier"], "frontier"),
    ],
)
def test_fallback_goes_through_the_tier_then_up_the_tiers(failing, expected_seen, served_by):
    h = build()
    for name in failing:
        h.script(name, *[status(500)] * 3)
    answer, _ = run(h.ask())
    assert h.seen == expected_seen
    assert answer.deployment.name == served_by
    attempts = h.ledger.usage("attempt")
    assert [a.deployment for a in attempts] == expected_seen[:-1]
    if failing:
        assert "after" in answer.outcome.reason


def test_a_named_deployment_escalates_up_never_down():
    h = build()
    h.script("cheap", refused())
    answer, _ = run(h.ask(model="cheap"))
    assert h.seen == ["cheap", "frontier"] and answer.deployment.name == "frontier"


def test_every_candidate_failing_is_one_request_row_and_one_row_per_attempt():
    h = build()
    for name in ("local-a", "local-b", "cheap", "frontier"):
        h.script(name, refused())
    with pytest.raises(AllCandidatesFailed):
        run(h.ask())
    assert [r.deployment for r in h.ledger.usage("attempt")] == ["local-a", "local-b", "cheap", "frontier"]
    [row] = h.ledger.usage("request")
    assert row.deployment is None and row.status == 503


# --------------------------------------------------------------------------- breakers
def test_breaker_opens_after_the_threshold_and_the_next_request_skips_it():
    h = build(raw_config(routing={"num_retries": 0, "breaker_failures": 2}))
    h.script("local-a", status(500), status(500))
    run(h.ask())  # local-a fails once -> local-b
    run(h.ask())  # local-a fails twice -> open
    h.seen.clear()
    answer, _ = run(h.ask())
    assert h.seen == ["local-b"] and answer.deployment.name == "local-b"
    assert "breaker open" in answer.outcome.reason or "local-a" in answer.outcome.reason
    h.clock[0] += 31  # past the cooldown: one probe goes through, and a success closes the breaker
    h.seen.clear()
    run(h.ask())
    run(h.ask())
    assert h.seen == ["local-a", "local-a"]


def test_a_refused_connection_opens_the_breaker_at_once_without_retrying():
    h = build()
    h.script("local-a", refused())
    run(h.ask())
    assert h.seen == ["local-a", "local-b"] and h.sleeps == []
    h.seen.clear()
    run(h.ask())
    assert h.seen == ["local-b"]


# --------------------------------------------------------------------------- streams
def test_a_stream_failing_before_its_first_event_fails_over():
    h = build()
    h.script("local-a", Reply.sse([dropped()]), status(503), status(503))
    answer, final = run(h.ask(stream=True))
    assert answer.deployment.name == "local-b" and final == 200
    assert answer.stream.status.completed


def test_a_stream_cut_after_its_first_event_does_not_fail_over_and_is_billed_as_far_as_it_got():
    h = build(raw_config(**BUDGET))
    h.script("cheap", Reply.sse([chunk("", role="assistant"), chunk("Hel"), dropped()]))
    answer, final = run(h.ask(model="cheap", stream=True))
    assert h.seen == ["cheap"] and final == 502
    assert answer.stream.status.error is not None and not answer.stream.status.completed
    [row] = h.ledger.usage("request")
    assert row.status == 502 and row.deployment == "cheap"
    assert run(h.reserved_total()) == 0


# --------------------------------------------------------------------------- budget holds
def test_reservations_are_released_on_every_failed_candidate_and_settled_on_success():
    h = build(raw_config(**BUDGET))
    h.script("cheap", status(500), status(500), status(500))
    answer, _ = run(h.ask(model="cheap", max_tokens=100))
    assert answer.deployment.name == "frontier"
    assert run(h.reserved_total()) == 0
    expected = answer.deployment.cost(COMPLETION["usage"]["prompt_tokens"], COMPLETION["usage"]["completion_tokens"])
    assert run(h.spent_total()) == pytest.approx(expected)
    [row] = h.ledger.usage("request")
    assert row.cost_usd == pytest.approx(expected)


def test_a_reject_budget_refuses_before_any_upstream_call_and_holds_nothing():
    h = build(raw_config(budgets=[{"scope": "global", "window": "day", "limit_usd": 0.0001}]))
    with pytest.raises(BudgetExceeded):
        run(h.ask(model="frontier", max_tokens=4000))
    assert h.seen == [] and run(h.reserved_total()) == 0
    [row] = h.ledger.usage("request")
    assert row.status == 429


def test_the_reserved_output_cap_reaches_the_upstream_when_the_client_set_none():
    h = build(raw_config(**BUDGET))
    run(h.ask(model="cheap"))
    sent = h.transport.requests[-1].json
    assert sent.get("max_tokens") or sent.get("max_completion_tokens")


def test_without_budgets_the_body_is_forwarded_without_a_cap():
    h = build()
    run(h.ask(model="cheap"))
    sent = h.transport.requests[-1].json
    assert "max_tokens" not in sent and "max_completion_tokens" not in sent


def test_embeddings_under_a_budget_get_no_output_cap():
    h = build(raw_config(**BUDGET))
    h.script(
        "cheap",
        Reply.json(
            {
                "object": "list",
                "model": "text-embedding-3-small",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.0023, -0.0093]}],
                "usage": {"prompt_tokens": 8, "total_tokens": 8},
            }
        ),
    )
    run(h.ask(model="cheap", protocol="openai-embeddings"))
    sent = h.transport.requests[-1]
    assert sent.url.endswith("/embeddings")
    assert "max_tokens" not in sent.json and "max_completion_tokens" not in sent.json


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("gpt-4o-mini", "max_tokens"),
        ("llama3.1:8b", "max_tokens"),
        ("qwen2.5-coder:7b", "max_tokens"),
        ("o1", "max_completion_tokens"),
        ("o3-mini", "max_completion_tokens"),
        ("o4-mini", "max_completion_tokens"),
        ("gpt-5", "max_completion_tokens"),
        ("gpt-5-mini", "max_completion_tokens"),
        ("openai/o3", "max_completion_tokens"),
    ],
)
def test_the_output_cap_goes_in_the_field_the_model_takes(model, field):
    h = build(raw_config(**BUDGET))
    d = dataclasses.replace(h.catalog.deployments["cheap"], model=model)
    body, _ = upstream_body({"model": "cheap", "messages": []}, d, output_cap=777)
    assert body[field] == 777
    other = ({"max_tokens", "max_completion_tokens"} - {field}).pop()
    assert other not in body
    client_set, _ = upstream_body({"model": "cheap", "messages": [], "max_tokens": 5}, d, output_cap=777)
    assert client_set.get("max_tokens") == 5 and "max_completion_tokens" not in client_set


def test_a_cancelled_request_leaves_nothing_reserved():
    async def main():
        h = build(raw_config(**BUDGET))
        started = asyncio.Event()

        async def slow():
            started.set()
            await asyncio.sleep(3600)
            yield b""

        h.script("cheap", lambda: Reply.sse(slow()))
        task = asyncio.create_task(h.ask(model="cheap", stream=True))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return h, await h.reserved_total()

    h, reserved = run(main())
    assert reserved == 0


# --------------------------------------------------------------------------- property: nothing stays reserved
FAILURES = {
    "500": lambda: status(500),
    "429": lambda: status(429, "1"),
    "503-late": lambda: status(503, "30"),  # longer than max_retry_after_s: moves on at once
    "refused": refused,
    "dropped": dropped,
}
PLAIN = {**FAILURES, "ok": lambda: Reply.json(COMPLETION)}
STREAMED = {
    **FAILURES,
    "ok": lambda: Reply.sse(STREAM),
    "cut": lambda: Reply.sse([chunk("", role="assistant"), chunk("Hel"), dropped()]),
    "cut-before-first": lambda: Reply.sse([dropped()]),
}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(), stream=st.booleans(), model=st.sampled_from(["auto", "cheap", "frontier"]), budgeted=st.booleans()
)
def test_any_sequence_of_upstream_outcomes_leaves_nothing_reserved_and_records_every_attempt(
    data, stream, model, budgeted
):
    outcomes = STREAMED if stream else PLAIN
    script = data.draw(st.lists(st.sampled_from(sorted(outcomes)), max_size=14), label="script")
    h = build(raw_config(**(BUDGET if budgeted else {}), routing={"breaker_failures": 10}))
    queue = list(script)

    def next_answer():
        return outcomes[queue.pop(0)]() if queue else outcomes["ok"]()

    for d in ("local-a", "local-b", "cheap", "frontier"):
        h.script(d, *[next_answer] * 20)
    answered = False
    try:
        answer, final = run(h.ask(model=model, stream=stream))
        answered = True
    except AllCandidatesFailed:
        pass
    upstream_calls = len(h.transport.requests)
    assert run(h.reserved_total()) == 0
    [row] = h.ledger.usage("request")
    assert len(h.ledger.usage("attempt")) == upstream_calls - (1 if answered else 0)
    assert (row.deployment is not None) == answered
    if answered:
        assert row.deployment == answer.deployment.name and row.status == final
    if budgeted:  # the answer, and any answer that failed a gate (a stream cut while held): paid, billed once
        billed = sum(a.cost_usd for a in h.ledger.usage("attempt"))
        assert run(h.spent_total()) == pytest.approx(row.cost_usd + billed)
    assert not h.transport.open_responses


# --------------------------------------------------------------------------- unsupported answers, breakers in flight
@pytest.mark.parametrize("code", [501, 404])
def test_a_not_supported_answer_moves_on_without_retry_and_leaves_the_breaker_alone(code):
    h = build(raw_config(routing={"breaker_failures": 1}))
    h.script("local-a", status(code))
    answer, _ = run(h.ask())
    assert answer.deployment.name == "local-b" and h.sleeps == []
    assert [a.status for a in h.ledger.usage("attempt")] == [code]
    h.seen.clear()
    run(h.ask())  # a breaker opened by "not supported" would send this to local-b
    assert h.seen == ["local-a"]


@pytest.mark.parametrize("in_flight", [16, 64])
def test_once_a_breaker_opens_no_request_in_flight_tries_that_deployment_again(in_flight):
    async def main():
        h = build(raw_config(routing={"num_retries": 2, "breaker_failures": 3}))
        arrived = asyncio.Event()
        first_wave = 0

        async def dead():
            nonlocal first_wave
            first_wave += 1
            if first_wave >= in_flight:
                arrived.set()
            await arrived.wait()  # every request is in flight before the first failure comes back
            return status(500)

        h.script("local-a", *[dead] * (in_flight * 3))
        answers = await asyncio.gather(*(h.ask() for _ in range(in_flight)))
        return h, answers

    h, answers = run(main())
    attempts_on_dead = h.seen.count("local-a")
    assert all(a.deployment.name == "local-b" for a, _ in answers)
    # each in-flight request's first attempt was already sent; retries stop once the breaker is open
    # (at most breaker_failures - 1 of them before that; without the check every request retried twice)
    assert in_flight <= attempts_on_dead <= in_flight + 2, attempts_on_dead


def test_a_request_cancelled_before_any_answer_is_still_recorded():
    async def main():
        h = build()
        started = asyncio.Event()

        async def never():
            started.set()
            await asyncio.sleep(3600)

        h.script("local-a", never)
        task = asyncio.create_task(h.ask())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return h

    h = run(main())
    [row] = h.ledger.usage("request")
    assert row.status == 499 and row.deployment is None and "cancelled" in (row.error or "")
