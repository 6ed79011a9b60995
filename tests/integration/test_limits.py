"""Rate and concurrency limits through the real gateway, driven by the official openai and anthropic SDKs.

Stand-ins play the upstream (slow ones hold requests open); two gateway
processes on one real Redis show a limit shared across replicas. Redis
tests fail instead of skipping under CI=true when Redis is unreachable.
"""

from __future__ import annotations

import concurrent.futures as cf
import signal
import uuid
from pathlib import Path

import anthropic
import openai
import pytest

from procs import (
    MASTER_KEY,
    http,
    require,
    run_cli,
    tiered_config,
    wait_until,
    write_config,
)

MSG = [{"role": "user", "content": "hi"}]
REDIS_URL = "redis://127.0.0.1:6379/0"


def create_key(tmp_path: Path, cfg: dict, name: str) -> str:
    """A virtual key made before the gateway starts, so every gateway process knows it from the start."""
    return run_cli("keys", "create", "--name", name, "--config", str(write_config(tmp_path, cfg))).stdout.strip()


def oai(gw, key: str = MASTER_KEY, agent: str | None = None) -> openai.OpenAI:
    headers = {"X-Tiergate-Agent": agent} if agent else None
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=key, timeout=30, max_retries=0, default_headers=headers)


def anth(gw, key: str = MASTER_KEY, agent: str | None = None) -> anthropic.Anthropic:
    headers = {"X-Tiergate-Agent": agent} if agent else None
    return anthropic.Anthropic(base_url=gw.base_url, api_key=key, timeout=30, max_retries=0, default_headers=headers)


def status_of(client: openai.OpenAI, **kw) -> int:
    try:
        client.chat.completions.create(model="local-8b", messages=kw.pop("messages", MSG), **kw)
        return 200
    except openai.APIStatusError as exc:
        return exc.status_code


def metrics(gw) -> str:
    return http("GET", f"{gw.base_url}/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})[2].decode()


def retry_after(exc: openai.APIStatusError | anthropic.APIStatusError) -> int:
    return int(exc.response.headers["retry-after"])


def test_rpm_admits_exactly_the_limit_of_a_concurrent_burst_and_refuses_in_each_clients_format(
    standins, gateway, tmp_path
):
    cfg = tiered_config(standins(name="local", models=["llama-8b"]), None)
    cfg["limits"] = [{"scope": "key", "match": "ci-bot", "rpm": 5}]
    key = create_key(tmp_path, cfg, "ci-bot")
    gw = gateway(cfg)
    c = oai(gw, key)

    def one(_):
        try:
            c.chat.completions.create(model="local-8b", messages=MSG)
            return None
        except openai.RateLimitError as exc:
            return exc

    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(24)))
    refused = [r for r in results if r is not None]
    assert len(results) - len(refused) == 5, results
    for exc in refused:
        assert exc.status_code == 429
        assert exc.body["type"] == "rate_limit_error" and exc.body["code"] == "rate_limit_exceeded"
        assert exc.body["message"] == "rate limit: key ci-bot allows 5 requests per minute"
        assert 1 <= retry_after(exc) <= 60
    assert status_of(oai(gw)) == 200  # another key is not limited

    with pytest.raises(anthropic.RateLimitError) as ei:
        anth(gw, key).messages.create(model="local-8b", max_tokens=10, messages=MSG)
    assert ei.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "rate limit: key ci-bot allows 5 requests per minute"},
    }
    assert 1 <= retry_after(ei.value) <= 60

    assert 'tiergate_rate_limited_total{limit="rpm",scope="key"} 20.0' in metrics(gw)
    gw.stop()
    rows = gw.ledger_rows("kind='request' AND key_name='ci-bot'")
    assert sorted(r["status"] for r in rows) == [200] * 5 + [429] * 20
    assert all("allows 5 requests per minute" in r["error"] for r in rows if r["status"] == 429)


def test_a_streams_slot_is_free_by_the_time_its_client_sees_the_end(standins, gateway):
    """One slot; a stream ends and another connection asks at once: never a 429.

    The SDK stops reading at [DONE]; the stand-in ends the body 50 ms after it, as upstreams may.
    """
    local = standins(name="local", models=["llama-8b"], chunks=3, chunk_delay=0.05)
    cfg = tiered_config(local, None)
    cfg["limits"] = [{"scope": "agent", "match": "*", "max_concurrent": 1}]
    gw = gateway(cfg)
    streamer, asker = oai(gw, agent="a"), oai(gw, agent="a")  # two clients: two connection pools
    refused = 0
    for _ in range(8):
        for _chunk in streamer.chat.completions.create(model="local-8b", messages=MSG, stream=True):
            pass
        refused += status_of(asker) == 429
    assert refused == 0


def test_max_concurrent_holds_per_agent_and_frees_slots_when_streams_end_or_clients_leave(standins, gateway):
    local = standins(name="local", models=["llama-8b"], chunks=100, chunk_delay=0.1)  # a stream lasts ~10 s
    cfg = tiered_config(local, None)
    cfg["limits"] = [{"scope": "agent", "match": "*", "max_concurrent": 2}]
    gw = gateway(cfg)
    a, b = oai(gw, agent="a"), oai(gw, agent="b")

    # a slow upstream: of six requests at once, two run and four are refused
    local.faults({"mode": "slow", "delay_s": 3, "times": 2})
    with cf.ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: status_of(a), range(6)))
    assert sorted(statuses) == [200] * 2 + [429] * 4, statuses

    def stream(client: openai.OpenAI, **kw):
        s = client.chat.completions.create(model="local-8b", messages=MSG, stream=True, **kw)
        it = iter(s)
        next(it)  # the stream is running: its slot is held
        return s, it

    s1, it1 = stream(a, max_tokens=2)  # a short answer: about 1.3 s of stream
    s2, _ = stream(a)
    with pytest.raises(openai.RateLimitError) as ei:
        a.chat.completions.create(model="local-8b", messages=MSG)
    assert ei.value.body["message"] == "concurrency limit: agent a allows 2 requests at once (limits line agent:*)"
    assert retry_after(ei.value) == 1
    with pytest.raises(anthropic.RateLimitError) as ai:
        anth(gw, agent="a").messages.create(model="local-8b", max_tokens=10, messages=MSG)
    assert ai.value.body["error"]["type"] == "rate_limit_error" and retry_after(ai.value) == 1
    assert status_of(b) == 200  # every agent has slots of its own

    for _ in it1:  # stream 1 runs to its end: its slot is free again
        pass
    assert status_of(a) == 200
    s3, _ = stream(a)
    assert status_of(a) == 429
    s2.close()  # two clients walk away mid-stream
    s3.close()
    held = []

    def both_slots_taken() -> bool:  # the gateway notices each hang-up at its next chunk: retry until it has
        try:
            held.append(stream(a)[0])
        except openai.RateLimitError:
            return False
        return len(held) == 2

    assert wait_until(both_slots_taken, timeout=5), "the slots of the closed streams never came back"
    for s in held:
        s.close()
    m = metrics(gw)
    assert 'tiergate_rate_limited_total{limit="max_concurrent",scope="agent"}' in m
    gw.stop()
    rows = gw.ledger_rows("kind='request' AND agent='a'")
    assert any(r["status"] == 499 for r in rows)  # the disconnects were recorded as such


def test_tpm_counts_prompts_and_completions_per_key(standins, gateway, tmp_path):
    cfg = tiered_config(standins(name="local", models=["llama-8b"]), None)
    cfg["limits"] = [{"scope": "key", "match": "*", "tpm": 1000}]
    key = create_key(tmp_path, cfg, "other")
    gw = gateway(cfg)
    master = oai(gw)
    # about 492 tokens: 1940 bytes of text at four a token, plus a message's 4 and the reply's 3 (the prompt
    # is counted from the text, not the JSON body); the stand-in's answer adds 25 completion tokens
    big = [{"role": "user", "content": "x" * 1940}]
    assert status_of(master, messages=big) == 200
    # 492 + 25 + 492 > 1000: refused only because the first answer's completion tokens were counted
    with pytest.raises(openai.RateLimitError) as ei:
        master.chat.completions.create(model="local-8b", messages=big)
    msg = ei.value.body["message"]
    assert msg.startswith(
        "rate limit: key master allows 1000 tokens per minute (limits line key:*); this request needs about "
    ), msg
    assert 488 <= int(msg.rsplit(" ", 1)[1]) <= 500, msg
    assert 55 <= retry_after(ei.value) <= 60
    assert status_of(oai(gw, key), messages=big) == 200  # each key has a window of its own
    assert status_of(master) == 200  # a small request still fits: tokens are counted, not requests
    with pytest.raises(anthropic.RateLimitError):
        anth(gw).messages.create(model="local-8b", max_tokens=10, messages=big)
    assert 'tiergate_rate_limited_total{limit="tpm",scope="key"} 2.0' in metrics(gw)


@pytest.fixture
def limits_prefix():
    """A key prefix of its own on the real Redis, deleted afterwards; fails under CI=true when Redis is down."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
    except Exception as exc:  # any failure means no usable Redis
        require(False, f"Redis at {REDIS_URL} is needed for limits shared by gateways: {exc}")
    prefix = f"tiergate-limits-{uuid.uuid4().hex[:10]}:"
    yield prefix
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_two_gateways_on_one_redis_enforce_one_limit_and_a_dead_ones_slots_come_back(
    standins, gateway, tmp_path, limits_prefix
):
    local = standins(name="local", models=["llama-8b"], chunks=300, chunk_delay=0.1)  # streams last ~30 s
    cfg = tiered_config(local, None)
    cfg.update(state=REDIS_URL, state_prefix=limits_prefix)
    cfg["limits"] = [
        {"scope": "key", "match": "ci-bot", "rpm": 6},
        {"scope": "agent", "match": "*", "max_concurrent": 2},
    ]
    key = create_key(tmp_path, cfg, "ci-bot")
    gw1, gw2 = gateway(cfg), gateway(cfg)
    clients = [oai(gw1, key), oai(gw2, key)]
    with cf.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda i: status_of(clients[i % 2]), range(30)))
    assert statuses.count(200) == 6 and statuses.count(429) == 24, statuses  # 6 together, not 6 each

    # two streams through gateway 1 hold the fleet agent's two slots: gateway 2 sees them taken
    held = []
    for _ in range(2):
        s = oai(gw1, agent="fleet").chat.completions.create(model="local-8b", messages=MSG, stream=True)
        next(iter(s))
        held.append(s)
    fleet2 = oai(gw2, agent="fleet")
    assert status_of(fleet2) == 429
    gw1.proc.kill()  # gateway 1 dies holding both slots and never releases them
    gw1.proc.wait()
    assert status_of(fleet2) == 429  # the leases are still live ...
    assert wait_until(lambda: status_of(fleet2) == 200, timeout=45, interval=1)  # ... and expire within 30 s
    for s in held:
        s.close()
    assert gw2.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
def test_redis_outage_follows_on_outage_limits_and_never_counts_per_process(standins, gateway, limits_prefix, mode):
    from tcp_cut import CuttableProxy

    proxy = CuttableProxy("127.0.0.1", 6379).start()
    try:
        cfg = tiered_config(standins(name="local", models=["llama-8b"]), None)
        cfg.update(state=f"redis://127.0.0.1:{proxy.port}/0", state_prefix=limits_prefix, on_outage={"limits": mode})
        cfg["limits"] = [{"scope": "key", "match": "*", "rpm": 3}]
        gw = gateway(cfg)
        c = oai(gw)
        assert [status_of(c) for _ in range(4)] == [200, 200, 200, 429]
        proxy.cut()
        during = [status_of(c) for _ in range(3)]
        if mode == "fail_closed":
            assert during == [503] * 3
            with pytest.raises(openai.APIStatusError) as ei:
                c.chat.completions.create(model="local-8b", messages=MSG)
            assert ei.value.status_code == 503
            assert "limits cannot be checked (on_outage.limits: fail_closed)" in ei.value.body["message"]
            with pytest.raises(anthropic.APIStatusError) as ai:
                anth(gw).messages.create(model="local-8b", max_tokens=10, messages=MSG)
            assert ai.value.status_code == 503 and "on_outage.limits: fail_closed" in ai.value.body["error"]["message"]
        else:
            assert during == [200] * 3  # admitted unchecked, not counted in a per-process window
            assert "tiergate_limits_unchecked_total 3.0" in metrics(gw)
            assert sum("without checking rate and concurrency limits" in line for line in gw.log) == 1
        proxy.restore()
        # the shared window still holds the three admitted before the outage: refused again once Redis is back
        assert wait_until(lambda: status_of(c) == 429, timeout=10, interval=0.2)
    finally:
        proxy.stop()
