"""Time to first token under the quality gates' stream modes, side by side in one run.

  .venv/bin/python bench/gateway/gate_ttft.py [--rounds 15] [--chunks 20] [--delay 0.05]

One OpenAI stand-in streams each answer as ``--chunks`` content events ``--delay`` seconds apart (a
model producing tokens). Three gateways on it differ only in ``gates.stream``: off, prefix, hold. The
official openai SDK streams ``model=auto`` through each in turn, round after round (so load hits all
three alike), and the time from the request to the first content the client reads is taken. The
figures are medians in milliseconds, and each mode's is compared with ``off``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))

import openai  # noqa: E402

from procs import MASTER_KEY, start_gateway, start_standin, tiered_config  # noqa: E402

MODES = ("off", "prefix", "hold")


def first_content_ms(client: openai.OpenAI) -> tuple[float, float]:
    """(ms to the first content, ms to the end) of one streamed answer."""
    t0 = time.perf_counter()
    first = None
    for chunk in client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
    ):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None, "no content streamed"
    return (first - t0) * 1000, (end - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--delay", type=float, default=0.05)
    args = ap.parse_args()
    up = start_standin("openai", "local", ["llama-8b"], chunks=args.chunks, chunk_delay=args.delay)
    gateways = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for mode in MODES:
                d = Path(tmp) / mode
                d.mkdir()
                cfg = tiered_config(up, None)
                cfg["gates"] = {"stream": mode}
                gateways[mode] = start_gateway(d, cfg)
            clients = {
                m: openai.OpenAI(base_url=f"{g.base_url}/v1", api_key=MASTER_KEY, max_retries=0)
                for m, g in gateways.items()
            }
            for c in clients.values():  # warm each gateway's connections
                first_content_ms(c)
            ttft: dict[str, list[float]] = {m: [] for m in MODES}
            total: dict[str, list[float]] = {m: [] for m in MODES}
            for _ in range(args.rounds):
                for m in MODES:
                    a, b = first_content_ms(clients[m])
                    ttft[m].append(a)
                    total[m].append(b)
    finally:
        for g in gateways.values():
            g.stop()
        up.stop()
    base = statistics.median(ttft["off"])
    print(f"stream of {args.chunks} content events {args.delay * 1000:.0f} ms apart, {args.rounds} rounds")
    print(f"{'gates.stream':<14}{'first content ms':>18}{'vs off':>10}{'whole answer ms':>18}")
    for m in MODES:
        t = statistics.median(ttft[m])
        print(f"{m:<14}{t:>18.1f}{t / base:>9.2f}x{statistics.median(total[m]):>18.1f}")


if __name__ == "__main__":
    main()
