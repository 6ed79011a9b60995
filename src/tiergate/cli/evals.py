"""``tiergate eval SUITE.yaml --targets A,B``: run a suite's tasks on each target through the running gateway.

Each target (a deployment, an alias, ``auto``, ``task/<type>``) gets every task ``runs`` times, one
request after another (a latency figure under no load of its own). Results per target: pass rate,
quality-gate failures, requests that another deployment served (a target that fell back), latency
p50/p95, tokens and cost (the gateway's own ``X-Tiergate-Cost-USD``). Printed as a table, or as JSON
or Markdown. Requests carry ``X-Tiergate-Agent: eval``, so the ledger and reports keep them apart.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

import typer

from tiergate.api.eval_chat import eval_request, read_answer
from tiergate.cli.app import app
from tiergate.cli.common import ConfigOpt, fail, load_config_or_fail
from tiergate.config.evals import EvalSuite, EvalTask, load_suite
from tiergate.core.errors import ConfigError
from tiergate.core.evals import RunResult, TargetSummary, check_answer, summarize


def _one(url: str, key: str, task: EvalTask, target: str, timeout_s: float) -> RunResult:
    body = eval_request(task, target)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "X-Tiergate-Agent": "eval"}
    if task.task:
        headers["X-Tiergate-Task"] = task.task
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(), headers=headers)
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            reply, h = resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        detail = exc.read(2000).decode("utf-8", "replace")
        return RunResult(target, task.name, False, [f"HTTP {exc.code}"], None, 0.0, error=f"{exc.code} {detail}")
    except (urllib.error.URLError, OSError) as exc:
        return RunResult(target, task.name, False, ["no answer"], None, 0.0, error=str(exc))
    ms = (time.perf_counter() - t0) * 1000
    try:
        view, gate, prompt, completion = read_answer(body, reply)
    except ValueError as exc:
        return RunResult(target, task.name, False, [str(exc)], None, ms, error=str(exc))
    failures = check_answer(view, [c.check() for c in task.checks])
    return RunResult(
        target,
        task.name,
        not failures and gate is None,
        failures + ([str(gate)] if gate else []),
        gate.gate if gate else None,
        ms,
        prompt,
        completion,
        float(h.get("X-Tiergate-Cost-USD") or 0),
        h.get("X-Tiergate-Deployment"),
    )


def _table(suite: EvalSuite, rows: list[TargetSummary], markdown: bool) -> str:
    head = [
        "target",
        "pass rate",
        "passed",
        "gate failures",
        "served elsewhere",
        "p50 ms",
        "p95 ms",
        "tokens in/out",
        "cost $",
    ]
    lines = []
    for s in rows:
        gates = ", ".join(f"{g} {n}" for g, n in sorted(s.gate_failures.items())) or "-"
        lines.append(
            [
                s.target,
                f"{s.pass_rate:.0%}",
                f"{s.passed}/{s.runs}",
                gates,
                str(s.served_elsewhere),
                f"{s.latency_p50_ms:.0f}",
                f"{s.latency_p95_ms:.0f}",
                f"{s.prompt_tokens}/{s.completion_tokens}",
                f"{s.cost_usd:.6f}",
            ]
        )
    if markdown:
        out = [f"### {suite.name}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([f"{suite.name}:", fmt.format(*head), *(fmt.format(*r) for r in lines)])


@app.command("eval")
def eval_suite(
    suite_path: Path = typer.Argument(..., help="the suite file (evals/starter.yaml ships with tiergate)"),
    targets: str = typer.Option(..., "--targets", "-t", help="comma-separated models: deployments, aliases, auto"),
    runs: int | None = typer.Option(None, "--runs", "-n", min=1, max=1000, help="runs per task (default the suite's)"),
    as_json: bool = typer.Option(False, "--json", help="results as JSON (summaries and every run)"),
    markdown: bool = typer.Option(False, "--markdown", help="the table as Markdown"),
    timeout_s: float = typer.Option(300.0, "--timeout", help="seconds per request"),
    config: Path | None = ConfigOpt,
) -> None:
    """Run an eval suite on each target through the running gateway: pass rate, gates, latency, cost."""
    from rich.progress import Progress

    try:
        suite = load_suite(suite_path)
    except ConfigError as exc:
        fail(str(exc))
    names = [t.strip() for t in targets.split(",") if t.strip()]
    if not names:
        fail("--targets: name at least one model (a deployment, an alias, auto)")
    cfg, _ = load_config_or_fail(config)
    key = cfg.auth.master_key.get_secret_value() if cfg.auth.master_key else ""
    url = f"http://{cfg.server.host}:{cfg.server.port}"
    n = runs or suite.runs
    results: list[RunResult] = []
    with Progress(transient=True, disable=as_json) as progress:
        bar = progress.add_task(f"eval {suite.name}", total=len(names) * len(suite.tasks) * n)
        for target in names:
            for task in suite.tasks:
                for _ in range(n):
                    results.append(_one(url, key, task, target, timeout_s))
                    progress.advance(bar)
    if all(r.error is not None and r.error.startswith(("[Errno", "<urlopen")) for r in results):
        fail(f"cannot reach the gateway at {url}; is 'tiergate serve' running?", code=1)
    rows = summarize(results, names, frozenset(d.name for d in cfg.deployments))
    if as_json:
        out = {
            "suite": suite.name,
            "runs_per_task": n,
            "targets": [{**asdict(s), "pass_rate": s.pass_rate} for s in rows],
            "runs": [asdict(r) for r in results],
        }
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(_table(suite, rows, markdown))
