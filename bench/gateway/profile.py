"""Where one target spends its CPU under one lane: per-thread CPU, and py-spy's view.

  .venv/bin/python bench/gateway/profile.py [--target tiergate] [--lane chat|anthropic|stream]
                                            [--seconds 15] [--conns 32] [--py-spy PATH] [--top 25]

Starts the nginx upstream (core 1) and the target (core 0) as runner.py does,
warms it up, then drives the lane (wrk -c32, or sequential streams) while
reading every thread's utime+stime from /proc/PID/task/TID/stat, and, when
py-spy is found, samples the target (py-spy record, raw stacks) and prints the
hottest functions of its main thread. py-spy is not a project dependency;
install it in a venv of its own, e.g.

  python3 -m venv /tmp/tiergate-bench-tools && /tmp/tiergate-bench-tools/bin/pip install py-spy

(the default --py-spy path). Everything runs on 127.0.0.1 and is bounded.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import measure as M  # noqa: E402
import runner as R  # noqa: E402
import targets as T  # noqa: E402


def threads(pid: int) -> dict[str, tuple[str, int]]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2 :].split()
        out[tid] = (s[s.index("(") + 1 : s.rindex(")")], int(rest[11]) + int(rest[12]))
    return out


def summarize(raw: str, top: int) -> str:
    """Self and inclusive shares of the main thread's samples (py-spy raw, --threads)."""
    lines = open(raw).read().splitlines()
    by_thread: collections.Counter = collections.Counter()
    for ln in lines:
        stack, _, n = ln.rpartition(" ")
        by_thread[stack.split(";")[0]] += int(n)
    out = ["samples by thread: " + ", ".join(f"{t} {n}" for t, n in by_thread.most_common())]
    main = next((t for t in by_thread if "MainThread" in t), None)
    if main is None:
        return "\n".join(out)
    selfc: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for ln in lines:
        stack, _, n = ln.rpartition(" ")
        frames = stack.split(";")
        if frames[0] != main:
            continue
        total += int(n)
        selfc[frames[-1]] += int(n)
        for fr in set(frames[1:]):
            incl[fr] += int(n)
    out.append(
        f"main thread, {total} samples; self time (py-spy cannot always tell idle from busy: "
        "EpollSelector.select is the event loop waiting):"
    )
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in selfc.most_common(top)]
    out.append("main thread, inclusive, tiergate's own functions:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common() if "tiergate/" in f][:top]
    return "\n".join(out)


def syscalls_per_request(path: str, n: int) -> str:
    """strace -c's table, as calls per request (strace slows the target: read counts, not times)."""
    out = [f"system calls per request (strace -c -f over {n:,} requests):"]
    for ln in open(path).read().splitlines():
        parts = ln.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            out.append(f"  {parts[-1]:20s} {int(parts[3]) / n:8.2f}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default=T.TIERGATE, choices=[T.TIERGATE, T.BARE, T.LITELLM])
    ap.add_argument("--lane", default="chat", choices=["chat", "anthropic", "stream"])
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--conns", type=int, default=32, help="wrk connections for the chat and anthropic lanes")
    ap.add_argument("--py-spy", default="/tmp/tiergate-bench-tools/bin/py-spy")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument(
        "--keep-raw", metavar="FILE", help="copy py-spy's raw stacks here (for flame graphs or your own cuts)"
    )
    ap.add_argument(
        "--syscalls",
        action="store_true",
        help="count the target's system calls per request with strace -c instead of sampling with py-spy",
    )
    args = ap.parse_args()
    R.SETTINGS["nice"] = -15 if os.geteuid() == 0 else 0
    spy_bin = args.py_spy if os.access(args.py_spy, os.X_OK) else shutil.which("py-spy")
    ns = argparse.Namespace(
        tries=1,
        duration=args.seconds,
        streams=50,
        rounds=1,
        soak=0,
        soak_conns=4,
        soak_delay_ms=6,
        no_litellm=False,
        skip_workers=True,
    )
    run = R.Run(ns)
    try:
        run.setup()
        if args.target == T.LITELLM:
            run.ll_config = T.litellm_config(run.work, run.up_port)
        p = run.start(args.target)
        run.warm(args.target, p, "chat" if args.lane == "stream" else args.lane)
        raw = os.path.join(run.work, "py-spy.raw")
        spy = trace = None
        if args.syscalls:
            trace_out = os.path.join(run.work, "strace.txt")
            trace = subprocess.Popen(
                ["strace", "-c", "-f", "-o", trace_out, "-p", str(p.p.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)
        elif spy_bin:
            spy = subprocess.Popen(
                [
                    spy_bin,
                    "record",
                    "-p",
                    str(p.p.pid),
                    "-d",
                    str(max(1, args.seconds - 1)),
                    "-r",
                    "250",
                    "-f",
                    "raw",
                    "--threads",
                    *([] if os.environ.get("BENCH_PYSPY_BLOCKING") else ["--nonblocking"]),
                    "-o",
                    raw,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        before = threads(p.p.pid)
        path, bf, hf = run.lanes.get(args.target, args.lane)
        if args.lane == "stream":
            r = R.stream_lane(p.port, path, bf, hf, args.seconds * 30, p)
            n, what = r["n"] + 5, f"{r['n']} streams, TTFT p50 {r['ttft_p50_ms']:.2f} ms"
        else:
            r = R.wrk(p.port, path, bf, hf, args.conns, args.seconds, p, run.nginx)
            n, what = (
                r["requests"],
                f"{r['rps']:,.0f} req/s @{args.conns}c, p50 {r['p50_us'] / 1000:.2f} ms, {r['errors']} errors",
            )
        after = threads(p.p.pid)
        names: dict[str, str] = {}
        summary = "py-spy not found: per-thread CPU only (see the docstring to install it)"
        if trace is not None:
            trace.send_signal(signal.SIGINT)
            trace.wait(30)
            summary = syscalls_per_request(trace_out, n)
        if spy is not None:
            spy.wait(args.seconds + 60)
            if os.path.exists(raw):
                summary = summarize(raw, args.top)
                if args.keep_raw:
                    shutil.copyfile(raw, args.keep_raw)
                for ln in open(raw):
                    head = ln.rstrip().rpartition(" ")[0].split(";", 1)[0]  # "thread (TID): NAME"
                    if head.startswith("thread (") and "): " in head:
                        tid, name = head[len("thread (") :].split("): ", 1)
                        names[tid.strip()] = name.strip()
        print(f"{args.target} {args.lane}: {what}")
        print("CPU µs per request, by thread (/proc/PID/task/TID/stat; names from py-spy when it ran):")
        for tid, (name, t) in sorted(after.items(), key=lambda kv: -(kv[1][1] - before.get(kv[0], ("", 0))[1])):
            d = t - before.get(tid, (name, 0))[1]
            if d:
                print(f"  {names.get(tid, name):24s} tid {tid:>7}  {d / M.CLK * 1e6 / n:7.0f}")
        print(summary)
    finally:
        run.cleanup()
        shutil.rmtree(run.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
