"""Same-run A/B of tiergate revisions on the chat lane: is a change faster, measured side by side?

  .venv/bin/python bench/gateway/ab.py REV [REV ...] [--bare] [--rounds 4] [--seconds 5]

Each REV is a git revision (``HEAD``, ``main~3``, a sha) or ``worktree`` (the
files as they are now). A revision other than ``worktree`` is checked out into
a temporary git worktree and run with the project's ``.venv`` (its ``src/``
first on ``PYTHONPATH``), so dependencies are the same for all. Every round
starts each variant afresh on core 0 (nginx and wrk on core 1, as runner.py
does), warms it up, then measures p50/p99 at 4 connections and req/s and CPU
per request at 32 and at 4; rounds are interleaved and medians printed.
Single runs on this shared machine move by ±5–10 %: trust differences that
hold across rounds, not one pair.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import runner as R  # noqa: E402
import targets as T  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))


def checkout(rev: str, into: str) -> str:
    """A worktree of ``rev``; returns its src/ directory."""
    subprocess.run(
        ["git", "-C", REPO, "worktree", "add", "--detach", "-f", into, rev], check=True, capture_output=True, text=True
    )
    return os.path.join(into, "src")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("revs", nargs="+", metavar="REV")
    ap.add_argument("--bare", action="store_true", help="also run the bare aiohttp proxy each round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=5, help="per wrk run")
    args = ap.parse_args()
    R.SETTINGS["nice"] = -15 if os.geteuid() == 0 else 0
    tmp = tempfile.mkdtemp(prefix="tiergate-ab-")
    srcs: dict[str, str | None] = {}
    run = R.Run(
        argparse.Namespace(
            tries=1,
            duration=args.seconds,
            streams=0,
            rounds=args.rounds,
            soak=0,
            soak_conns=4,
            soak_delay_ms=6,
            no_litellm=True,
            skip_workers=True,
        )
    )
    variants = [*args.revs, *(["bare"] if args.bare else [])]
    rows: dict[str, list[tuple[float, float, float, float, float]]] = {v: [] for v in variants}
    base_pythonpath = os.environ.get("PYTHONPATH")
    try:
        for i, rev in enumerate(args.revs):
            srcs[rev] = None if rev == "worktree" else checkout(rev, os.path.join(tmp, f"rev{i}"))
        run.setup()
        for rnd in range(args.rounds):
            for v in variants:
                src = srcs.get(v)
                if src is not None:
                    os.environ["PYTHONPATH"] = src  # that revision's tiergate, the project's dependencies
                name = T.BARE if v == "bare" else T.TIERGATE
                p = run.start(name)
                try:
                    run.warm(name, p, "chat")
                    r4 = run.wrk_lane(name, p, "chat", 4, args.seconds, 1)
                    r32 = run.wrk_lane(name, p, "chat", 32, args.seconds, 1)
                finally:
                    run.stop(p)
                    if base_pythonpath is None:
                        os.environ.pop("PYTHONPATH", None)
                    else:
                        os.environ["PYTHONPATH"] = base_pythonpath
                row = (
                    r4["p50_us"] / 1000,
                    r4["p99_us"] / 1000,
                    r32["rps"],
                    r32["cpu_us_per_req"],
                    r4["cpu_us_per_req"],
                )
                rows[v].append(row)
                print(
                    f"round {rnd + 1} {v:>12}: p50 {row[0]:.3f} ms  p99 {row[1]:.3f} ms @4c | "
                    f"{row[2]:,.0f} req/s @32c | CPU {row[3]:.0f} µs/req @32c, {row[4]:.0f} @4c",
                    flush=True,
                )
    finally:
        run.cleanup()
        for src in srcs.values():
            if src is not None:
                subprocess.run(
                    ["git", "-C", REPO, "worktree", "remove", "--force", os.path.dirname(src)], capture_output=True
                )
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nmedians of {args.rounds} rounds (chat lane; p50/p99 at 4 connections, req/s at 32, CPU µs/req at 32 / 4):"
    )
    for v, rs in rows.items():
        if rs:
            med = [statistics.median(r[i] for r in rs) for i in range(5)]
            print(
                f"  {v:>12}: p50 {med[0]:.3f} ms  p99 {med[1]:.3f} ms  {med[2]:,.0f} req/s  "
                f"CPU {med[3]:.0f} / {med[4]:.0f} µs/req"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
