"""Never down because one provider is: retries, Retry-After, breakers, fallback, stream failover."""

from __future__ import annotations

import socket
import time

import openai
import pytest

from procs import MASTER_KEY, tiered_config

MSG = [{"role": "user", "content": "extract the date from: due 2026-12-01"}]


def client(gw, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0, **kw)


def dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_500_retries_then_escalates_and_ledger_records_every_attempt(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    local.faults({"mode": "status", "status": 500, "times": 5})
    gw = gateway(tiered_config(local, cheap, num_retries=1))
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=MSG)
    assert raw.parse().choices[0].message.content.startswith("[cheap]")
    assert raw.headers["x-tiergate-deployment"] == "cheap"
    assert "after local-8b" in raw.headers["x-tiergate-reason"]
    assert len(local.requests()) == 2  # first try + one retry
    gw.stop()
    attempts = gw.ledger_rows("kind='attempt'")
    assert [(a["deployment"], a["status"]) for a in attempts] == [("local-8b", 500), ("local-8b", 500)]
    req = gw.ledger_rows("kind='request'")[0]
    assert req["deployment"] == "cheap" and req["fallbacks"] == 2 and req["status"] == 200


def test_429_retry_after_is_honoured_on_the_same_deployment(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    local.faults({"mode": "status", "status": 429, "retry_after": 1})
    gw = gateway(tiered_config(local, None, num_retries=2, retry_backoff_s=0.01))
    t0 = time.perf_counter()
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=MSG)
    elapsed = time.perf_counter() - t0
    assert raw.headers["x-tiergate-deployment"] == "local-8b"
    assert elapsed >= 0.95  # waited as told, rather than the 10 ms backoff
    assert len(local.requests()) == 2


def test_retry_after_longer_than_allowed_moves_on_at_once(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    local.faults({"mode": "status", "status": 429, "retry_after": 120})
    gw = gateway(tiered_config(local, cheap, max_retry_after_s=5))
    t0 = time.perf_counter()
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=MSG)
    assert raw.headers["x-tiergate-deployment"] == "cheap"
    assert time.perf_counter() - t0 < 5
    assert len(local.requests()) == 1


def test_dropped_connection_falls_over(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    local.faults({"mode": "drop", "times": 3})
    gw = gateway(tiered_config(local, cheap, num_retries=0))
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=MSG)
    assert raw.headers["x-tiergate-deployment"] == "cheap"


def test_slow_upstream_hits_attempt_timeout_then_falls_over(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    local.faults({"mode": "slow", "delay_s": 5})
    gw = gateway(tiered_config(local, cheap, num_retries=0, attempt_timeout_s=0.5))
    t0 = time.perf_counter()
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=MSG)
    assert raw.headers["x-tiergate-deployment"] == "cheap"
    assert time.perf_counter() - t0 < 3


def test_total_request_timeout_bounds_everything(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    local.faults({"mode": "slow", "delay_s": 10})
    cheap.faults({"mode": "slow", "delay_s": 10})
    gw = gateway(tiered_config(local, cheap, request_timeout_s=1.5))
    t0 = time.perf_counter()
    with pytest.raises(openai.APIStatusError) as ei:
        client(gw).chat.completions.create(model="auto", messages=MSG)
    assert ei.value.status_code == 503
    assert time.perf_counter() - t0 < 4


def test_dead_local_server_costs_one_attempt_per_cooldown(standins, gateway):
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    cfg = tiered_config(None, cheap)
    cfg["providers"]["box"] = {"api": "openai-chat", "base_url": f"http://127.0.0.1:{dead_port()}/v1", "local": True}
    cfg["deployments"].insert(0, {"name": "local-8b", "provider": "box", "model": "llama-8b", "tier": 0})
    gw = gateway(cfg)
    c = client(gw)
    first = c.chat.completions.with_raw_response.create(model="auto", messages=MSG)
    assert first.headers["x-tiergate-deployment"] == "cheap"
    for _ in range(5):
        r = c.chat.completions.with_raw_response.create(model="auto", messages=MSG)
        assert r.headers["x-tiergate-deployment"] == "cheap"
    gw.stop()
    attempts = gw.ledger_rows("kind='attempt'")
    assert len(attempts) == 1 and "refused" in attempts[0]["error"]


def test_everything_down_is_a_503_listing_each_candidate(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    local.faults({"mode": "status", "status": 500, "times": 10})
    cheap.faults({"mode": "status", "status": 503, "times": 10})
    gw = gateway(tiered_config(local, cheap, num_retries=0))
    with pytest.raises(openai.APIStatusError) as ei:
        client(gw).chat.completions.create(model="auto", messages=MSG)
    err = ei.value
    assert err.status_code == 503
    assert "local-8b: 500" in err.message and "cheap: 503" in err.message
    assert err.body["code"] == "all_candidates_failed"


def test_upstream_400_is_returned_not_failed_over(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    local.faults({"mode": "status", "status": 400})
    gw = gateway(tiered_config(local, cheap))
    with pytest.raises(openai.BadRequestError):
        client(gw).chat.completions.create(model="auto", messages=MSG)
    assert cheap.requests() == []


def test_privacy_local_only_never_reaches_the_cloud(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    local.faults({"mode": "status", "status": 500, "times": 10})
    gw = gateway(tiered_config(local, cheap, num_retries=0))
    c = client(gw, default_headers={"X-Tiergate-Privacy": "local-only"})
    with pytest.raises(openai.APIStatusError) as ei:
        c.chat.completions.create(model="auto", messages=MSG)
    assert ei.value.status_code == 503
    with pytest.raises(openai.APIStatusError) as ei:  # local now behind an open breaker? still no cloud
        c.chat.completions.create(model="task/reasoning", messages=MSG)
    assert cheap.requests() == []


def test_stream_failing_before_first_byte_fails_over_transparently(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    local.faults({"mode": "cut_stream", "after_chunks": 0})
    gw = gateway(tiered_config(local, cheap, num_retries=0))
    text = "".join(
        ch.choices[0].delta.content or ""
        for ch in client(gw).chat.completions.create(model="auto", messages=MSG, stream=True)
        if ch.choices
    )
    assert text.startswith("[cheap]")


def test_stream_cut_midway_ends_with_an_error_event_and_is_recorded(standins, gateway):
    # events spaced in time, as a model produces them, so the first ones reach the client before the cut
    local = standins(name="local", models=["llama-8b"], chunk_delay=0.05)
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    local.faults({"mode": "cut_stream", "after_chunks": 4})
    # gates off for streams: with them, a cut before the first visible text is caught while held (below)
    gw = gateway({**tiered_config(local, cheap, num_retries=0), "gates": {"stream": "off"}})
    got = []
    with pytest.raises(openai.APIError) as ei:
        for ch in client(gw).chat.completions.create(model="auto", messages=MSG, stream=True):
            got.append(ch)
    assert "upstream stream failed" in str(ei.value)
    assert 1 <= len(got) <= 4 and cheap.requests() == []  # bytes reached the client: no silent switch
    assert gw.stop() == 0
    row = gw.ledger_rows("kind='request'")[0]
    assert row["status"] == 502 and row["deployment"] == "local-8b" and row["error"]


def test_a_stream_cut_before_its_first_visible_text_fails_over_and_the_cut_part_is_billed(standins, gateway):
    local = standins(name="local", models=["llama-8b"])
    cheap = standins(name="cheap", models=["gpt-4o-mini"])
    local.faults({"mode": "cut_stream", "after_chunks": 1})  # the role chunk, then the connection drops
    gw = gateway(tiered_config(local, cheap, num_retries=0))  # gates on for auto: streams are prefixed
    text = "".join(
        ch.choices[0].delta.content or ""
        for ch in client(gw).chat.completions.create(model="auto", messages=MSG, stream=True)
        if ch.choices
    )
    assert text and len(cheap.requests()) == 1
    [row] = gw.rows_when("kind='request'", 1)
    assert row["status"] == 200 and row["deployment"] == "cheap"
    [att] = gw.ledger_rows("kind='attempt'")
    assert att["deployment"] == "local-8b" and att["error"].startswith("gate incomplete"), att


def test_litellm_style_fallbacks_are_honoured(standins, gateway):
    local, cheap, front = (
        standins(name="local", models=["llama-8b"]),
        standins(name="cheap", models=["gpt-4o-mini"]),
        standins(name="front", models=["gpt-4o"]),
    )
    local.faults({"mode": "status", "status": 500, "times": 10})
    gw = gateway(
        tiered_config(local, cheap, front, num_retries=0, escalate=False, fallbacks={"local-8b": ["frontier"]})
    )
    raw = client(gw).chat.completions.with_raw_response.create(model="local-8b", messages=MSG)
    assert raw.headers["x-tiergate-deployment"] == "frontier"
    assert "fallback frontier for local-8b" in raw.headers["x-tiergate-reason"]
    assert cheap.requests() == []
