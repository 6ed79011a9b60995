"""A real Prometheus scrapes a real gateway; the alert rules pass promtool; the Grafana JSON's metrics exist.

The Prometheus binary and promtool come from Debian's ``prometheus`` package (the Makefile's test
target installs it); missing, these tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import stat
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from procs import MASTER_KEY, REPO, http, require, tiered_config, wait_until

DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "tiergate-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tiergate-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "tiergate-dashboard.json"
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def binary(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is needed (Debian package prometheus: scripts/debian-packages.sh)")
    assert path is not None
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake_nvidia_smi(tmp_path: Path) -> Path:
    """A GPU host's nvidia-smi, answering the one query tiergate makes: GPU series end to end."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-smi"
    exe.write_text("#!/bin/sh\necho '0, 2048, 24576, 42'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def observed_config(local, cheap) -> dict:
    """Local tier as an attached local model (memory series), a priced cloud tier, a budget with a limit."""
    cfg = tiered_config(local, cheap)
    cfg["providers"].pop("box")
    cfg["deployments"][0] = {"name": "local-8b", "local_model": "box", "tier": 0}
    cfg["local_models"] = {
        "budget_mb": 4096,
        "models": [{"name": "box", "attach": f"{local.base_url}/v1", "memory_mb": 1024}],
    }
    cfg["budgets"] = [{"name": "daily", "scope": "global", "window": "day", "limit_usd": 5}]
    cfg["observability"] = {"metrics": {"max_label_values": 3}}  # four agents: the fourth is "other"
    return cfg


@pytest.fixture
def observed_gateway(standins, gateway, tmp_path):
    import os

    local, cheap = standins(name="local", models=["box"]), standins(name="cheap", models=["gpt-4o-mini"])
    path = f"{fake_nvidia_smi(tmp_path)}:{os.environ.get('PATH', '')}"
    return gateway(observed_config(local, cheap), env_extra={"CHEAP_KEY": "sk-cheap-secret", "PATH": path})


def burst(gw, n: int = 12) -> None:
    """Requests from a few agents and tasks, to both tiers."""
    for i in range(n):
        task = "coding" if i % 3 else "classification"
        body = {"model": "auto", "messages": [{"role": "user", "content": f"question {i} " * (i + 1)}]}
        headers = {**AUTH, "Content-Type": "application/json", "X-Tiergate-Agent": f"agent-{i % 4}"}
        status, _, out = http(
            "POST",
            f"{gw.base_url}/v1/chat/completions",
            body=json.dumps(body).encode(),
            headers={**headers, "X-Tiergate-Task": task},
        )
        assert status == 200, out


def metric_names_in_scrape(text: str) -> set[str]:
    """Every name a PromQL query may use: sample names, and the families a scrape declares (with no sample yet)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, keywords, label names."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, printf formats)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    out = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        word, rest = m.group(0), expr[m.end() :].lstrip()
        if word in PROMQL_WORDS or rest.startswith("(") or re.fullmatch(r"\d.*|e\d+|Inf|NaN", word):
            continue
        out.add(word)
    return out


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("sum by (tier) (rate(tiergate_cost_usd_total[5m])) * 3600", {"tiergate_cost_usd_total"}),
        ('histogram_quantile(0.95, sum by (le) (rate(x_bucket{a="b"}[1m])))', {"x_bucket"}),
        ("a / on (d) group_left (t) b and c > 0", {"a", "b", "c"}),
        ('max by (deployment) (up{job="tiergate"}) == 1', {"up"}),
    ],
)
def test_promql_names_are_read_out(expr, want):
    assert promql_metric_names(expr) == want


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_every_metric_of_the_dashboard_and_the_alerts_exists_in_tiergates_metrics(observed_gateway):
    gw = observed_gateway
    burst(gw, 3)
    status, _, body = http("GET", f"{gw.base_url}/metrics", headers=AUTH)
    assert status == 200
    have = metric_names_in_scrape(body.decode())
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    rules = yaml.safe_load(RULES.read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = set().union(*map(promql_metric_names, exprs))
    assert {"tiergate_cost_usd_total", "tiergate_gpu_utilization_ratio", "tiergate_budget_remaining_usd"} <= used
    assert used - have == set()


def test_promtool_checks_and_unit_tests_the_alert_rules():
    promtool = binary("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=RULE_TESTS.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def start_prometheus(tmp_path: Path, target_port: int) -> tuple[subprocess.Popen, int]:
    prometheus = binary("prometheus")
    key = tmp_path / "scrape-key"
    key.write_text(MASTER_KEY)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "tiergate",
                "authorization": {"type": "Bearer", "credentials_file": str(key)},
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "w"),
    )
    return proc, port


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        status, _, body = http("GET", url, timeout=10)
    except OSError:
        return []
    if status != 200:
        return []
    return json.loads(body)["data"]["result"]


def test_prometheus_scrapes_spend_that_matches_the_ledger(observed_gateway, tmp_path):
    gw = observed_gateway
    burst(gw)
    rows = gw.rows_when("kind='request' AND status=200", 12)
    assert len(rows) == 12
    spent = sum(r["cost_usd"] for r in rows)
    by_agent: dict[str, float] = {}
    for r in rows:  # in the order they were paid: past three names, a new one is "other"
        if r["cost_usd"]:
            agent = r["agent"] if r["agent"] in by_agent or len(by_agent) < 3 else "other"
            by_agent[agent] = by_agent.get(agent, 0.0) + r["cost_usd"]
    assert spent > 0 and "other" in by_agent and len({r["agent"] for r in rows}) == 4
    proc, port = start_prometheus(tmp_path, gw.port)
    try:

        def scraped_total():
            result = query(port, "sum(tiergate_cost_usd_total)")
            return result and abs(float(result[0]["value"][1]) - spent) < 1e-9

        assert wait_until(scraped_total, timeout=60, interval=0.5), (
            query(port, "sum(tiergate_cost_usd_total)"),
            spent,
            (tmp_path / "prometheus.log").read_text()[-2000:],
        )
        agents = {r["metric"]["agent"]: float(r["value"][1]) for r in query(port, "tiergate_agent_cost_usd_total")}
        assert agents == pytest.approx(by_agent, abs=1e-12)
        (tier,) = query(port, 'sum by (tier) (tiergate_cost_usd_total{tier="1"})')
        assert float(tier["value"][1]) == pytest.approx(spent, abs=1e-12)  # the local tier is free
        (remaining,) = query(port, 'tiergate_budget_remaining_usd{budget="daily"}')
        assert float(remaining["value"][1]) == pytest.approx(5 - spent, abs=1e-6)
        (memory,) = query(port, 'tiergate_local_model_memory_bytes{model="box"}')
        assert float(memory["value"][1]) == 1024 * 1024 * 1024
        (gpu,) = query(port, "tiergate_gpu_utilization_ratio")
        assert float(gpu["value"][1]) == pytest.approx(0.42)
        assert wait_until(lambda: query(port, "ALERTS") == [] and query(port, "up") != [], timeout=30)

        def rules_evaluated() -> list[dict]:
            status, _, body = http("GET", f"http://127.0.0.1:{port}/api/v1/rules", timeout=10)
            rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]] if status == 200 else []
            return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else []

        assert wait_until(rules_evaluated, timeout=30)
        rules = rules_evaluated()
        # every rule evaluated against tiergate's real series without an error, none firing
        assert (
            len(rules) == 6 and {r["health"] for r in rules} == {"ok"} and {r["state"] for r in rules} == {"inactive"}
        )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scraped(gw) -> dict[tuple[str, tuple], float]:
    status, _, body = http("GET", f"{gw.base_url}/metrics", headers=AUTH)
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_scrape_time_series_follow_the_gateways_state(standins, gateway):
    """Queue depth while requests wait for a max_concurrent slot; sessions, deployments up, local throughput."""
    import concurrent.futures as cf

    local = standins(name="local", models=["llama-8b"])
    local.faults({"mode": "slow", "delay_s": 2, "times": 3})
    cfg = tiered_config(local, None)
    cfg["limits"] = [{"scope": "agent", "match": "q-*", "max_concurrent": 1, "queue_timeout": "60s"}]
    gw = gateway(cfg)
    queued = ("tiergate_queue_depth", (("queue", "concurrency_limit"),))

    def ask(i: int) -> int:
        body = {"model": "auto", "messages": [{"role": "user", "content": f"hi {i}"}]}
        headers = {**AUTH, "Content-Type": "application/json", "X-Tiergate-Agent": "q-a"}
        return http("POST", f"{gw.base_url}/v1/chat/completions", body=json.dumps(body).encode(), headers=headers)[0]

    with cf.ThreadPoolExecutor(3) as pool:
        answers = [pool.submit(ask, i) for i in range(3)]
        assert wait_until(lambda: scraped(gw).get(queued) == 2, timeout=30), scraped(gw).get(queued)
        assert [a.result(timeout=60) for a in answers] == [200, 200, 200]
    after = scraped(gw)
    assert after[queued] == 0
    assert after[("tiergate_sessions", (("state", "live"),))] >= 1
    assert after[("tiergate_sessions", (("state", "killed"),))] == 0
    assert after[("tiergate_deployment_up", (("deployment", "local-8b"), ("local", "true"), ("tier", "0")))] == 1
    assert after[("tiergate_local_tokens_per_second", (("deployment", "local-8b"),))] > 0
    local.faults({"mode": "status", "status": 500, "times": 20})
    for _ in range(5):  # routing.breaker_failures (3 by default) failures in a row open its breaker
        ask(9)
    down = scraped(gw)
    assert down[("tiergate_deployment_up", (("deployment", "local-8b"), ("local", "true"), ("tier", "0")))] == 0
    assert down[("tiergate_breaker_open", (("deployment", "local-8b"),))] == 1
