"""A LiteLLM proxy config served as it is; with no config, tiers built from what runs here, offering only
what they can serve; check-config says every problem of a config at once."""

from __future__ import annotations

import asyncio
import json

import openai

from procs import MASTER_KEY, cli_env, http, run_cli, tiered_config


def test_litellm_config_served_as_is(standins, gateway):
    cheap, front = standins(name="cheap", models=["gpt-4o-mini"]), standins(name="front", models=["gpt-4o"])
    front_key = "sk-front-777"
    litellm = {
        "model_list": [
            {
                "model_name": "fast",
                "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": f"{cheap.base_url}/v1"},
                "model_info": {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7},
            },
            {
                "model_name": "smart",
                "litellm_params": {
                    "model": "openai/gpt-4o",
                    "api_base": f"{front.base_url}/v1",
                    "api_key": "os.environ/FRONT_KEY",
                },
                "model_info": {"input_cost_per_token": 2.5e-6, "output_cost_per_token": 1e-5},
            },
        ],
        "router_settings": {"num_retries": 0, "fallbacks": [{"fast": ["smart"]}]},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    gw = gateway(litellm, env_extra={"FRONT_KEY": front_key, "LITELLM_MASTER_KEY": "sk-litellm-master"})
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="sk-litellm-master", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().choices[0].message.content.startswith("[cheap]")
    assert float(raw.headers["x-tiergate-cost-usd"]) > 0
    cheap.faults({"mode": "status", "status": 500, "times": 5})
    raw = c.chat.completions.with_raw_response.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-tiergate-deployment"] == "smart"
    assert front.requests()[-1]["headers"]["authorization"] == f"Bearer {front_key}"


def test_no_config_discovers_local_runtime_and_cloud_keys(standins, monkeypatch):
    from tiergate.local import autoconfig, discovery

    local = standins(name="ollama", models=["qwen2.5:7b", "llama3.1:8b"])
    monkeypatch.setattr(discovery, "DEFAULT_PORTS", {"ollama": local.port, "llamacpp": 1})
    monkeypatch.setattr(autoconfig, "environment", lambda: {"GROQ_API_KEY": "gsk-x", "TIERGATE_MASTER_KEY": MASTER_KEY})
    cfg, summary = asyncio.run(autoconfig.discover_config())
    deps = {d.name: d for d in cfg.deployments}
    assert deps["ollama/qwen2.5:7b"].tier == 0 and cfg.providers["ollama"].local
    assert deps["groq/llama-3.1-8b-instant"].tier == 1
    assert cfg.aliases["local/fast"] == ["ollama/qwen2.5:7b", "ollama/llama3.1:8b"]
    assert f"ollama at {local.base_url}/v1 (2 models)" in summary and "cloud keys: groq" in summary


def test_zero_config_with_only_a_local_server_lists_only_what_it_serves(standins, gateway, monkeypatch):
    from tiergate.local import autoconfig, discovery

    local = standins(name="llamacpp", models=["qwen2.5-0.5b.gguf"])
    monkeypatch.setattr(discovery, "DEFAULT_PORTS", {"llamacpp": local.port})
    monkeypatch.setattr(autoconfig, "environment", lambda: {"TIERGATE_MASTER_KEY": MASTER_KEY})
    runtimes = asyncio.run(discovery.discover_local_runtimes())
    _, summary = asyncio.run(autoconfig.discover_config())
    assert "tasks left out, no deployment reaches their tier: coding (tier>=1), reasoning (tier>=3)" in summary
    # the gateway serves the config zero-config builds (discovery needs the standard ports, so it is written out)
    raw = autoconfig.build_raw_config(runtimes, {})
    gw = gateway({**raw, "auth": {"master_key": "env:TIERGATE_MASTER_KEY"}})
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    listed = [m.id for m in c.models.list()]
    assert "task/coding" not in listed and "task/reasoning" not in listed
    assert {"auto", "task/classification", "local/fast", "llamacpp/qwen2.5-0.5b"} <= set(listed)
    for name in listed:  # every name offered answers
        reply = c.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content.startswith("[llamacpp]"), name
    # an agent that says it is coding is served by what there is, and told the task is not configured
    coding = c.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], extra_headers={"X-Tiergate-Task": "coding"}
    )
    assert coding.headers["x-tiergate-deployment"] == "llamacpp/qwen2.5-0.5b"
    assert coding.headers["x-tiergate-warning"].startswith("unknown task 'coding'; known: classification, ")


def test_task_names_ignore_case_and_an_unknown_task_is_answered_with_a_warning(standins, gateway):
    local, cheap = standins(name="local", models=["llama-8b"]), standins(name="cheap", models=["gpt-4o-mini"])
    gw = gateway(tiered_config(local, cheap))
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
    msg = [{"role": "user", "content": "fix the bug"}]
    upper = c.chat.completions.with_raw_response.create(
        model="auto", messages=msg, extra_headers={"X-Tiergate-Task": "CODING"}
    )
    assert upper.headers["x-tiergate-deployment"] == "cheap"  # coding needs tier>=1
    assert "task=coding needs tier>=1" in upper.headers["x-tiergate-reason"]
    assert "x-tiergate-warning" not in upper.headers
    typo = c.chat.completions.with_raw_response.create(
        model="auto", messages=msg, extra_headers={"X-Tiergate-Task": "codng"}, stream=True
    )
    assert typo.headers["x-tiergate-deployment"] == "local-8b"
    assert typo.headers["x-tiergate-warning"] == (
        "unknown task 'codng'; known: classification, coding, reasoning; routed as tier>=0"
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in typo.parse() if ch.choices)
    metrics = http("GET", f"{gw.base_url}/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})[2].decode()
    assert "tiergate_unknown_tasks_total 1.0" in metrics
    gw.stop()
    assert [r["task"] for r in gw.ledger_rows("kind='request'")] == ["coding", "codng"]


def test_health_says_when_a_local_model_file_is_missing(standins, gateway, tmp_path):
    cloud = standins(name="cloud", models=["gpt-4o-mini"])
    gone = tmp_path / "deleted.gguf"
    gw = gateway(
        {
            "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
            "local_models": {"budget_mb": 1000, "models": [{"name": "qwen", "gguf": str(gone), "memory_mb": 500}]},
            "providers": {"cloudco": {"api": "openai-chat", "base_url": f"{cloud.base_url}/v1"}},
            "deployments": [
                {"name": "local-qwen", "local_model": "qwen", "tier": 0},
                {"name": "cloud", "provider": "cloudco", "model": "gpt-4o-mini", "tier": 1},
            ],
        }
    )
    health = json.loads(http("GET", f"{gw.base_url}/health")[2])
    assert health["deployments"]["local-qwen"] == {
        "tier": 0,
        "local": True,
        "available": False,
        "note": f"missing file: {gone}",
    }
    assert health["deployments"]["cloud"]["available"] is True


def check_config(tmp_path, text: str, *args: str, env: dict | None = None):
    path = tmp_path / "tiergate.yaml"
    path.write_text(text)
    return path, run_cli("check-config", str(path), *args, check=False, env=env)


def test_check_config_names_the_file_and_line_of_a_yaml_error(tmp_path):
    path, res = check_config(tmp_path, "providers:\n  box:\n    api: openai-chat\n   base_url: x\n")
    assert res.returncode == 2
    assert f"{path}:4:4: not valid YAML: " in res.stderr, res.stderr
    assert "<unicode string>" not in res.stderr and "Traceback" not in res.stderr


def test_check_config_reports_every_problem_in_one_run(tmp_path):
    text = """
providers:
  box: {api: openai-chat, base_url: "http://127.0.0.1:8080/v1", local: true}
deployments:
  - {name: local-8b, provider: box, model: llama, tier: high}
  - {name: other, provider: nope, model: m}
aliases:
  fast: [ghost]
"""
    _, res = check_config(tmp_path, text)
    assert res.returncode == 2
    errors = [ln.strip() for ln in res.stderr.splitlines() if ln.strip().startswith("error:")]
    assert errors == [
        "error: deployments[0].tier: Input should be a valid integer, unable to parse string as an integer",
        "error: deployments[1].provider: unknown provider 'nope'; allowed: box",
        "error: aliases.fast: unknown deployment 'ghost'; allowed: local-8b, other",
    ], res.stderr
    assert res.stderr.splitlines()[-1].endswith("tiergate.yaml: 3 errors")
    # once every field reads, the checks of what validates but cannot work run too
    fixed = text.replace("tier: high", "tier: 0").replace("provider: nope", "provider: box")
    fixed = fixed.replace("[ghost]", "[other]")
    fixed += "tasks: {coding: 1}\nauth: {required: false}\n"
    fixed += "local_models: {budget_mb: 100, models: [{name: q, gguf: /nowhere/q.gguf, memory_mb: 10}]}\n"
    _, res = check_config(tmp_path, fixed)
    assert res.returncode == 2
    lines = [ln.strip() for ln in res.stderr.splitlines()]
    assert lines[:3] == [
        "error: tasks.coding: needs tier>=1, but the highest deployment tier is 0 (local-8b, other): "
        "task/coding and X-Tiergate-Task: coding would get 503",
        "error: local_models.models[0].gguf: file not found: /nowhere/q.gguf",
        "warning: auth.required: false: anyone who can reach 127.0.0.1:4000 may call the gateway "
        "and spend its provider keys",
    ], res.stderr
    assert lines[-1].endswith("tiergate.yaml: 2 errors, 1 warning")


def test_check_config_warnings_pass_unless_strict_and_an_empty_file_fails(tmp_path):
    text = (
        "providers:\n  box: {api: openai-chat, base_url: 'http://127.0.0.1:8080/v1', local: true}\n"
        "deployments:\n  - {name: local-8b, provider: box, model: llama}\n"
    )
    no_key = {k: v for k, v in cli_env().items() if k != "TIERGATE_MASTER_KEY"}
    path, res = check_config(tmp_path, text, env=no_key)
    assert res.returncode == 0, res.stderr
    assert f"{path}: ok (1 warning)" in res.stdout and "warning: auth.master_key: not set" in res.stderr
    assert check_config(tmp_path, text, "--strict", env=no_key)[1].returncode == 2
    assert check_config(tmp_path, text)[1].returncode == 0  # TIERGATE_MASTER_KEY set: auth is on
    path, res = check_config(tmp_path, "# nothing here yet\n")
    assert res.returncode == 2
    assert "error: the config is empty" in res.stderr and f"{path}: 1 error" in res.stderr
