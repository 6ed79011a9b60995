"""The targets of the gateway benchmark: how each is configured and started.

- upstream-direct: wrk straight at nginx (the floor);
- bare-aiohttp: bench/stack_choice's aiohttp + orjson pass-through (candidate
  "aiohttp-orjson"), run by the project's own Python, so aiohttp and orjson
  are tiergate's versions: read body, parse, rewrite model, forward, relay;
- tiergate: ``tiergate serve`` with auth (a virtual key), a tasks table,
  model_map, routing/escalation, the SQLite ledger and Prometheus metrics;
- litellm: LiteLLM proxy, one worker, no database, master key, one model
  per lane pointing at the same upstream.

Every request body names the model the way that target's clients would:
tiergate gets ``auto`` + ``X-Tiergate-Task: coding`` (routed by the tasks
table), LiteLLM gets its model_name.
"""

from __future__ import annotations

import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
REPO = os.path.dirname(BENCH)
STACK = os.path.join(BENCH, "stack_choice")

DIRECT = "upstream-direct"
BARE = "bare-aiohttp"
TIERGATE = "tiergate"
LITELLM = "litellm"

TIERGATE_BIN = os.environ.get("BENCH_TIERGATE", os.path.join(REPO, ".venv", "bin", "tiergate"))
PROJECT_PY = os.environ.get("BENCH_PROJECT_PYTHON", os.path.join(REPO, ".venv", "bin", "python"))
LITELLM_VENV = os.environ.get("BENCH_LITELLM_VENV", "/tmp/tiergate-bench-litellm")
LITELLM_BIN = os.path.join(LITELLM_VENV, "bin", "litellm")

MASTER_KEY = "sk-bench-master-0000000000000000"  # loopback-only benchmark processes
UPSTREAM_KEY = "sk-bench-upstream"
TASK = "coding"
ANTHROPIC_MODEL = "claude-sonnet-4-5"


def tiergate_config(work: str, up_port: int) -> str:
    """A production-shaped config: auth, tiers, tasks, model_map, ledger; metrics are always on."""
    up = f"http://127.0.0.1:{up_port}"
    ledger = os.path.join(work, "tiergate-ledger", "ledger.db")
    os.makedirs(os.path.dirname(ledger), exist_ok=True)
    text = f"""# written by bench/gateway/targets.py
server: {{host: 127.0.0.1, port: 0}}
auth: {{master_key: env:TIERGATE_BENCH_MASTER_KEY}}
ledger: sqlite:///{ledger}
providers:
  box:     {{api: openai-chat, base_url: "{up}/v1", local: true}}
  cloud:   {{api: openai-chat, base_url: "{up}/v1", api_key: env:TIERGATE_BENCH_UPSTREAM_KEY}}
  cloud-sse: {{api: openai-chat, base_url: "{up}/sse-gap/v1", api_key: env:TIERGATE_BENCH_UPSTREAM_KEY}}
deployments:
  - {{name: local-small, provider: box, model: qwen2.5-7b-instruct, tier: 0, context_window: 8192}}
  - {{name: chat, provider: cloud, model: gpt-4o-mini, tier: 1, context_window: 128000,
     price: {{input_per_mtok: 0.15, output_per_mtok: 0.60}}}}
  - {{name: chat-stream, provider: cloud-sse, model: gpt-4o-mini, tier: 2, context_window: 128000,
     price: {{input_per_mtok: 0.15, output_per_mtok: 0.60}}}}
  - {{name: big, provider: cloud, model: gpt-4o, tier: 3, context_window: 128000,
     price: {{input_per_mtok: 2.50, output_per_mtok: 10.0}}}}
aliases: {{local/fast: [local-small]}}
tasks: {{classification: 0, extraction: 0, {TASK}: 1, reasoning: 3}}
model_map: {{"claude-*": auto}}
routing: {{num_retries: 2, breaker_cooldown_s: 30}}
"""
    path = os.path.join(work, "tiergate.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def tiergate_env() -> dict:
    return dict(
        os.environ,
        TIERGATE_BENCH_MASTER_KEY=MASTER_KEY,
        TIERGATE_BENCH_UPSTREAM_KEY=UPSTREAM_KEY,
        PYTHONDONTWRITEBYTECODE="1",
    )


def tiergate_create_key(config: str) -> str:
    """A virtual key (``tiergate keys create``): requests use it, as agents would."""
    out = subprocess.run(
        [TIERGATE_BIN, "keys", "create", "--name", "bench", "--config", config],
        env=tiergate_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1].strip()


def tiergate_cmd(config: str, port: int, workers: int = 1) -> list[str]:
    return [TIERGATE_BIN, "serve", "--config", config, "--port", str(port), "--workers", str(workers)]


def litellm_available() -> bool:
    return os.access(LITELLM_BIN, os.X_OK)


def litellm_config(work: str, up_port: int) -> str:
    up = f"http://127.0.0.1:{up_port}"
    text = f"""# written by bench/gateway/targets.py
model_list:
  - model_name: chat
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{up}/v1", api_key: "{UPSTREAM_KEY}"}}
  - model_name: chat-stream
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{up}/sse-gap/v1", api_key: "{UPSTREAM_KEY}"}}
  - model_name: {ANTHROPIC_MODEL}
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{up}/v1", api_key: "{UPSTREAM_KEY}"}}
litellm_settings:
  telemetry: false
  set_verbose: false
  json_logs: false
  # LiteLLM sends /v1/messages for openai/ models to the Responses API by
  # default; the upstream (like llama.cpp or vLLM) speaks chat/completions
  use_chat_completions_url_for_anthropic_messages: true
general_settings:
  master_key: "{MASTER_KEY}"
"""
    path = os.path.join(work, "litellm.yaml")
    with open(path, "w") as f:
        f.write(text)
    # uvicorn's access log off, as tiergate's is: neither pays for a log line per request
    with open(os.path.join(work, "litellm-log.json"), "w") as f:
        json.dump(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
                "handlers": {
                    "err": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
                },
                "loggers": {
                    "uvicorn": {"handlers": ["err"], "level": "WARNING"},
                    "uvicorn.error": {"level": "WARNING"},
                    "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
                },
            },
            f,
        )
    return path


def litellm_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL")}
    env.update(
        LITELLM_USE_CHAT_COMPLETIONS_URL_FOR_ANTHROPIC_MESSAGES="True",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
        LITELLM_TELEMETRY="False",
        DISABLE_ADMIN_UI="True",
        NO_DOCS="True",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def litellm_cmd(config: str, port: int) -> list[str]:
    return [
        LITELLM_BIN,
        "--config",
        config,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--log_config",
        os.path.join(os.path.dirname(config), "litellm-log.json"),
    ]


def bare_cmd(port: int) -> list[str]:
    return [PROJECT_PY, os.path.join(STACK, "serve.py"), "aiohttp-orjson", str(port)]


def bare_env(up_port: int) -> dict:
    return dict(os.environ, STACKBENCH_UPSTREAM=f"http://127.0.0.1:{up_port}", PYTHONDONTWRITEBYTECODE="1")


# ---------------------------------------------------------------- requests per target and lane


def chat_request(target: str, *, stream: bool) -> tuple[str, str, list[str]]:
    """(path, model, headers) of the OpenAI chat lane for a target."""
    if target == DIRECT or target == BARE:
        path = "/sse-gap/v1/chat/completions" if stream else "/v1/chat/completions"
        return path, "gpt-4o-mini", []
    if target.startswith(TIERGATE):
        return (
            "/v1/chat/completions",
            "chat-stream" if stream else "auto",
            [f"X-Tiergate-Task: {TASK}", "X-Tiergate-Agent: bench-agent"],
        )
    if target == LITELLM:
        return "/v1/chat/completions", "chat-stream" if stream else "chat", []
    raise ValueError(target)


def auth_headers(target: str, key: str, *, anthropic: bool = False) -> list[str]:
    if target in (DIRECT, BARE):
        return []
    if anthropic:
        return [f"x-api-key: {key}", "anthropic-version: 2023-06-01"]
    return [f"Authorization: Bearer {key}"]
