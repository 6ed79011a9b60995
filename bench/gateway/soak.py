"""The soak lane: tiergate alone under a steady mix for a long run, RSS sampled as it goes.

Kept apart from runner.py (which starts targets and drives the short lanes): it owns the mix
file, the wrk process with soak.lua, RSS sampling and the ledger row count before and after.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from typing import Any

import targets as T
from measure import CLK, LOAD_CPU, pin

from benchlib import log

HERE = os.path.dirname(os.path.abspath(__file__))


def soak(run: Any, seconds: int) -> dict:
    """tiergate alone, a steady mix (3 chat : 1 stream : 1 anthropic), RSS every 10 s."""
    mix = []
    for i, lane in enumerate(("chat", "chat", "stream", "chat", "anthropic")):
        path, bf, hf = run.lanes.get(T.TIERGATE, lane)
        # a few sessions, as a small fleet of agents would have
        shf = os.path.join(run.work, f"soak-{i}.headers")
        with open(shf, "w") as f:
            f.write(open(hf).read() + f"X-Tiergate-Session: soak-session-{i % 3}\n")
        mix.append(f"{path}\t{bf}\t{shf}")
    mix_file = os.path.join(run.work, "soak.mix")
    with open(mix_file, "w") as f:
        f.write("\n".join(mix) + "\n")
    rows_before = ledger_rows(run.tg_ledger)
    p = run.start(T.TIERGATE)
    samples: list[tuple[float, int]] = []
    try:
        idle_kb = p.rss_kb()
        env = dict(os.environ, BENCH_MIX=mix_file, BENCH_DELAY_MS=str(run.args.soak_delay_ms))
        cmd = [
            *pin(LOAD_CPU),
            "wrk",
            "-t1",
            f"-c{run.args.soak_conns}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            os.path.join(HERE, "soak.lua"),
            f"http://127.0.0.1:{p.port}/v1/chat/completions",
        ]
        cpu0, t0 = p.cpu_ticks(), time.monotonic()
        w = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE)
        try:
            deadline = t0 + seconds + 60
            next_t = t0 + 10
            while w.poll() is None and time.monotonic() < deadline:
                time.sleep(max(0.0, min(1.0, next_t - time.monotonic())))
                if time.monotonic() >= next_t and w.poll() is None:
                    samples.append((round(time.monotonic() - t0, 1), p.rss_kb()))
                    next_t += 10
                    if len(samples) % 6 == 0:
                        log(f"soak {samples[-1][0]:.0f} s: RSS {samples[-1][1] / 1024:.1f} MB")
            out, err = w.communicate(timeout=60)
        finally:
            if w.poll() is None:
                w.kill()
                w.wait(5)
        wall = time.monotonic() - t0
        cpu_s = (p.cpu_ticks() - cpu0) / CLK
        end_kb = p.rss_kb()
        line = next((ln for ln in out.splitlines() if ln.startswith("BENCH ")), None)
        if line is None:
            raise RuntimeError(f"soak wrk printed no summary: {out}\n{err}")
        r = json.loads(line.split(" ", 1)[1])
    finally:
        run.stop(p)
    rows = ledger_rows(run.tg_ledger)
    kbs = [kb for _, kb in samples] or [end_kb]
    res = {
        "seconds": seconds,
        "requests": r["requests"],
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "errors": sum(v for k, v in r.items() if k.startswith("err_")),
        "p50_us": r["p50_us"],
        "p99_us": r["p99_us"],
        "cpu_pct": 100 * cpu_s / wall,
        "rss_idle_kb": idle_kb,
        "rss_first_kb": kbs[0],
        "rss_end_kb": end_kb,
        "rss_max_kb": max(kbs + [end_kb]),
        "growth_pct": 100.0 * (end_kb - kbs[0]) / kbs[0] if kbs[0] else 0.0,
        "samples": samples,
        "ledger_rows_total": rows,
        "ledger_rows_soak": rows - rows_before if rows is not None and rows_before is not None else None,
        "mix": "3 chat (auto + task) : 1 stream : 1 anthropic",
        "conns": run.args.soak_conns,
        "delay_ms": run.args.soak_delay_ms,
    }
    log(
        f"soak: {res['requests']:,} requests ({res['rps']:.0f}/s, {res['errors']} errors), RSS "
        f"{res['rss_first_kb'] / 1024:.1f} -> {res['rss_end_kb'] / 1024:.1f} MB "
        f"(max {res['rss_max_kb'] / 1024:.1f}), "
        f"growth {res['growth_pct']:+.1f}%"
    )
    return res


# -- main


def ledger_rows(path: str) -> int | None:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM usage").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return None
