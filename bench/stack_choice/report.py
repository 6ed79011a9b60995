"""Markdown tables for the stack-choice benchmark (kept apart from the runner that measures)."""

from __future__ import annotations

import statistics
import subprocess

from serve import CANDIDATES

DIRECT = "upstream-direct"


def fmt_ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def _med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def table_main(res: dict, direct: str) -> str:
    rows = [
        "| candidate | server | client | JSON | loop | proxy CPU µs/req @32c | req/s @32c | "
        "req/s per round | p50 @4c ms | p99 @4c ms | added p50 ms |",
        "|---|---|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    dp50 = _med(res[direct]["c4"], "p50_us")
    order = [direct] + sorted((n for n in res if n != direct), key=lambda n: _med(res[n]["c32"], "cpu_us_per_req"))
    for name in order:
        r = res[name]
        rps = [x["rps"] for x in r["c32"]]
        p50, p99 = _med(r["c4"], "p50_us"), _med(r["c4"], "p99_us")
        if name == direct:
            label, server, client, js, loop = ("upstream direct (floor)", "nginx", "-", "-", "-")
            added, cpu = "-", "-"
        else:
            _, server, client, js, loop = CANDIDATES[name]
            label = name
            added = f"{(p50 - dp50) / 1000:.2f}"
            cpu = f"**{_med(r['c32'], 'cpu_us_per_req'):.0f}**"
        rows.append(
            f"| {label} | {server} | {client} | {js} | {loop} | {cpu} | "
            f"**{statistics.median(rps):,.0f}** | {' / '.join(f'{x:,.0f}' for x in rps)} | "
            f"{fmt_ms(p50)} | {fmt_ms(p99)} | {added} |"
        )
    return "\n".join(rows)


def table_stream_check(checks: dict) -> str:
    rows = [
        "| candidate | events | first event ms | last event ms | separate arrivals | unbuffered |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, c in checks.items():
        if "error" in c:
            rows.append(f"| {name} | - | - | - | - | error: {c['error']} |")
            continue
        rows.append(
            f"| {name} | {c['events']} | {c['first_ms']:.1f} | {c['last_ms']:.1f} | "
            f"{c['reads']:.0f} | {'yes' if c['unbuffered'] else '**NO**'} |"
        )
    return "\n".join(rows)


def table_stream_load(res: dict) -> str:
    rows = [
        "| candidate | proxy CPU µs/stream @32c | streams/s @32c | per round | "
        "p50 @4c ms (whole stream) | p99 @4c ms |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for name, r in res.items():
        rps = [x["rps"] for x in r["c32"]]
        cpu = "-" if name == DIRECT else f"{_med(r['c32'], 'cpu_us_per_req'):.0f}"
        rows.append(
            f"| {'upstream direct (floor)' if name == DIRECT else name} | {cpu} | "
            f"**{statistics.median(rps):,.0f}** | {' / '.join(f'{x:,.0f}' for x in rps)} | "
            f"{fmt_ms(_med(r['c4'], 'p50_us'))} | {fmt_ms(_med(r['c4'], 'p99_us'))} |"
        )
    return "\n".join(rows)


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in (
        "aiohttp",
        "orjson",
        "uvloop",
        "starlette",
        "uvicorn",
        "httptools",
        "httpx",
        "httpcore",
        "anyio",
        "sniffio",
        "granian",
    ):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} (not installed)")
    return ", ".join(out)


def tool_version(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except Exception as e:
        return f"unknown ({e})"


# ---------------------------------------------------------------- main
