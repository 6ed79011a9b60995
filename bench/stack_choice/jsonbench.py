"""Microbenchmark: orjson vs stdlib json on chat request bodies.

Times, per body size, ``loads``, ``dumps`` and the proxy hot path
(loads -> rewrite model -> dumps to bytes). Prints a markdown table, or JSON
with --json. Each figure is the median of REPEAT timeit repeats, in µs/op;
the timed functions take turns repeat by repeat.
"""

from __future__ import annotations

import json
import statistics
import sys
import timeit

import orjson
from payloads import chat_request

REPEAT = 9
TARGET_S = 0.05  # time per repeat


def _number(fn) -> int:
    """Calls per repeat so that one repeat takes about TARGET_S."""
    number = 1
    while True:
        t = timeit.timeit(fn, number=number)
        if t >= TARGET_S / 5:
            return max(1, int(number * TARGET_S / t))
        number *= 10


def _time_interleaved(fns: dict) -> dict:
    """µs/op per function: median of REPEAT repeats, the functions taking
    turns repeat by repeat so that a burst of other work hits all alike."""
    numbers = {k: _number(f) for k, f in fns.items()}
    runs: dict = {k: [] for k in fns}
    for _ in range(REPEAT):
        for k, f in fns.items():
            runs[k].append(timeit.timeit(f, number=numbers[k]) / numbers[k] * 1e6)
    return {k: statistics.median(v) for k, v in runs.items()}


def bench() -> list[dict]:
    rows = []
    std_dumps = json.dumps
    for label, size in (("1.5 KB", 1536), ("50 KB", 51200)):
        raw = orjson.dumps(chat_request(size))
        obj = orjson.loads(raw)
        assert json.loads(raw) == obj
        libs = {
            "orjson": (orjson.loads, orjson.dumps),
            "stdlib json": (json.loads, lambda o: std_dumps(o, separators=(",", ":")).encode()),
        }
        fns = {}
        for lib, (loads, dumps) in libs.items():

            def hot(loads=loads, dumps=dumps, raw=raw):
                o = loads(raw)
                o["model"] = "qwen2.5-7b-instruct-q4_k_m"
                return dumps(o)

            fns[(lib, "loads_us")] = lambda loads=loads, raw=raw: loads(raw)
            fns[(lib, "dumps_us")] = lambda dumps=dumps, obj=obj: dumps(obj)
            fns[(lib, "hot_us")] = hot
        t = _time_interleaved(fns)
        for lib in libs:
            rows.append(
                {
                    "body": label,
                    "bytes": len(raw),
                    "lib": lib,
                    **{k: t[(lib, k)] for k in ("loads_us", "dumps_us", "hot_us")},
                }
            )
    return rows


def markdown(rows: list[dict]) -> str:
    out = [
        "| body | library | loads µs | dumps µs | loads+rewrite+dumps µs | vs orjson |",
        "|---|---|---:|---:|---:|---:|",
    ]
    base = {r["body"]: r["hot_us"] for r in rows if r["lib"] == "orjson"}
    for r in rows:
        out.append(
            f"| {r['body']} ({r['bytes']} B) | {r['lib']} | {r['loads_us']:.1f} | "
            f"{r['dumps_us']:.1f} | {r['hot_us']:.1f} | "
            f"{r['hot_us'] / base[r['body']]:.1f}x |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    rows = bench()
    print(json.dumps(rows) if "--json" in sys.argv else markdown(rows))
