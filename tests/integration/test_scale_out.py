"""Three replicas behind HAProxy sharing one PostgreSQL ledger and one Redis behave as one gateway.

Real parts: three `tiergate serve` processes, HAProxy (Debian package) with
the shipped deploy/haproxy.cfg (only its addresses rewritten), PostgreSQL
and Redis on this machine, the official openai SDK. Under CI=true a missing
part fails the test instead of skipping it.
"""

from __future__ import annotations

import concurrent.futures as cf
import shutil
import signal
from pathlib import Path

import openai
import orjson

from procs import MASTER_KEY, http, require, start_gateway, tiered_config, wait_until
from scale_out import HAProxy, shared_state_config

REPO = Path(__file__).resolve().parents[2]
MSG = [{"role": "user", "content": "hi"}]


def test_three_replicas_behind_haproxy_act_as_one_gateway(tmp_path, standins, pg_url, redis_prefix):
    require(shutil.which("haproxy") is not None, "haproxy is not installed (make test installs it from Debian)")
    cloud = standins(name="cheap", models=["gpt-4o-mini"])
    local = standins(name="local", models=["llama-8b"])
    cfg = shared_state_config(local, cloud, pg_url=pg_url, redis_prefix=redis_prefix)
    cfg["budgets"] = [{"scope": "deployment", "match": "cheap", "window": "day", "limit_usd": 0.02, "action": "reject"}]
    cfg["limits"] = [{"scope": "key", "match": "ratelimited", "rpm": 7}]
    replicas = []
    for i in range(3):
        (tmp_path / f"r{i}").mkdir()
        replicas.append(start_gateway(tmp_path / f"r{i}", cfg, env_extra={"CHEAP_KEY": "sk-cheap"}))
    try:
        with HAProxy(REPO / "deploy" / "haproxy.cfg", [r.port for r in replicas], tmp_path) as lb:
            assert wait_until(lambda: lb.healthy() == 3, timeout=15), lb.log()
            front = openai.OpenAI(base_url=f"{lb.base_url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)
            sent = run_scenarios(front, replicas, lb)
        for r in replicas:
            assert r.stop(signal.SIGTERM) == 0
        # exactly one ledger record per request, whichever replica served it
        rows = replicas[0].ledger_rows("kind='request'")
        spent = sum(r["cost_usd"] for r in rows if r["deployment"] == "cheap")
        assert 0 < spent <= 0.02 + 1e-9, spent  # the budget held across the three replicas
        ids = [r["request_id"] for r in rows]
        assert len(ids) == len(set(ids)) == sent, (len(ids), len(set(ids)), sent)
    finally:
        for r in replicas:
            if r.proc.poll() is None:
                r.proc.kill()


def run_scenarios(front: openai.OpenAI, replicas, lb: HAProxy) -> int:
    """Each shared concern, through the balancer; returns how many requests reached a replica."""
    sent = 0

    # 1. global budget on the cloud deployment: settled spend never passes $0.02 across all replicas
    def cloud_call(_):
        try:
            return front.chat.completions.with_raw_response.create(
                model="cheap", messages=MSG, max_tokens=20
            ).headers.get("x-tiergate-deployment")
        except openai.RateLimitError:
            return None

    with cf.ThreadPoolExecutor(24) as pool:
        served = list(pool.map(cloud_call, range(90)))
    sent += 90
    assert "cheap" in served and None in served, served
    spread = lb.requests_by_server()
    assert len(spread) == 3 and min(spread.values()) > 0, f"HAProxy spread the traffic over every replica: {spread}"

    # 2. a per-key rate limit admits its limit across the replicas together
    key = replicas[0].cli("keys", "create", "--name", "ratelimited").stdout.strip()
    limited = openai.OpenAI(base_url=f"{lb.base_url}/v1", api_key=key, max_retries=0, timeout=30)
    assert wait_until(lambda: key_known_everywhere(replicas, key), timeout=10)

    def limited_call(_):
        try:
            limited.chat.completions.create(model="local-8b", messages=MSG)
            return 200
        except openai.RateLimitError as exc:
            assert int(exc.response.headers["retry-after"]) >= 1
            return 429

    with cf.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(limited_call, range(30)))
    sent += 30
    assert statuses.count(200) == 7, statuses

    # 3. a session killed through one replica is refused by the others
    hdr = {"X-Tiergate-Session": "run-42"}
    front.chat.completions.create(model="local-8b", messages=MSG, extra_headers=hdr)
    sent += 1
    answers: list[tuple[int, bytes]] = []

    def kill() -> bool:  # 404 until the ledger has the session's row (about a second), unless replica 0 served it
        code, _, body = http(
            "POST",
            f"{replicas[0].base_url}/admin/sessions/kill",
            body=orjson.dumps({"session": "run-42", "reason": "runaway"}),
            headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
        )
        answers.append((code, body))
        return code != 404

    assert wait_until(kill, timeout=10, interval=0.2)
    code, body = answers[-1]
    assert code == 200 and orjson.loads(body)["killed"] == ["run-42"], body
    for r in replicas[1:]:
        direct = openai.OpenAI(base_url=f"{r.base_url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)

        def refused(direct=direct) -> bool:
            nonlocal sent
            sent += 1
            try:
                direct.chat.completions.create(model="local-8b", messages=MSG, extra_headers=hdr)
                return False
            except openai.APIStatusError as exc:
                return "runaway" in str(exc)

        assert wait_until(refused, timeout=5, interval=0.2)

    # 4. a breaker opened by one replica's failures is seen by the others
    direct0 = openai.OpenAI(base_url=f"{replicas[0].base_url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)
    try:
        direct0.chat.completions.create(model="dead", messages=MSG)
    except openai.APIStatusError:
        pass
    sent += 1
    for r in replicas[1:]:

        def dead_unavailable(r=r) -> bool:
            _, _, body = http("GET", f"{r.base_url}/health")
            return orjson.loads(body)["deployments"]["dead"]["available"] is False

        assert wait_until(dead_unavailable, timeout=5)
    return sent


def key_known_everywhere(replicas, key: str) -> bool:
    for r in replicas:
        code, _, _ = http("GET", f"{r.base_url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        if code != 200:
            return False
    return True


def test_guardian_judges_a_session_on_the_spend_of_every_replica(tmp_path, standins, redis_prefix):
    """session_max_usd $0.012 at ~$0.003 a call: killed after about 4 calls in all, not 4 per replica."""
    local, cloud = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    cfg = tiered_config(local, cloud)
    cfg["deployments"][1]["price"] = {"input_per_mtok": 100, "output_per_mtok": 100}
    cfg["guardian"] = {"session_max_usd": 0.012}
    cfg["state"], cfg["state_prefix"] = "redis://127.0.0.1:6379/0", redis_prefix
    replicas = []
    for i in range(2):
        (tmp_path / f"r{i}").mkdir()
        replicas.append(start_gateway(tmp_path / f"r{i}", cfg, env_extra={"CHEAP_KEY": "sk-cheap"}))
    try:
        clients = [
            openai.OpenAI(
                base_url=f"{r.base_url}/v1",
                api_key=MASTER_KEY,
                max_retries=0,
                timeout=30,
                default_headers={"X-Tiergate-Session": "shared-run"},
            )
            for r in replicas
        ]
        served = 0
        for i in range(12):  # alternate replicas, as a balancer would
            try:
                clients[i % 2].chat.completions.create(model="cheap", messages=MSG, max_tokens=20)
                served += 1
            except openai.PermissionDeniedError as exc:
                assert "session_max_usd" in exc.message
                break
        else:
            raise AssertionError("the guardian never stopped the session")
        for r in replicas:
            assert r.stop(signal.SIGTERM) == 0
        costs = [r["cost_usd"] for r in replicas[0].ledger_rows("kind='request' AND status=200")]
        costs += [r["cost_usd"] for r in replicas[1].ledger_rows("kind='request' AND status=200")]
        # the call that crossed the limit was served (the guardian judges after a request), none after it
        assert served == len(costs) and sum(costs[:-1]) < 0.012 <= sum(costs), costs
    finally:
        for r in replicas:
            if r.proc.poll() is None:
                r.proc.kill()
