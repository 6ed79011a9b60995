"""Instructions per chat request, counted by callgrind: a comparison of revisions that load cannot move.

  .venv/bin/python bench/gateway/instructions.py REV [REV ...] [--requests 300]

Timings on this 2-core machine move by ±5-10 % with whatever else runs; the
number of instructions a request executes does not (repeat runs agree to about
1 %: request ids, ledger batch sizes and hash seeds still differ a little).
Each REV (a git revision, or ``worktree``) is served by ``tiergate serve``
under ``valgrind --tool=callgrind`` with instrumentation off until it is warm;
then N sequential keep-alive chat requests (the chat lane's body and headers)
are counted, every thread included (the ledger writer too). Kernel time is not
counted, and a C loop (a bytes scan) counts more instructions per nanosecond
than the interpreter does: confirm a finding with ab.py, which times.

valgrind is a Debian package: ``scripts/debian-packages.sh valgrind=valgrind``.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bodies  # noqa: E402
import targets as T  # noqa: E402
import upstream  # noqa: E402
from ab import REPO, checkout  # noqa: E402

from benchlib import free_port  # noqa: E402  (ab put bench/ on the path)


def wait_healthy(port: int, seconds: float) -> None:
    end = time.monotonic() + seconds
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("GET", "/health")
            c.getresponse().read()
            return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.25)


def count(src: str | None, work: str, up_port: int, n: int) -> float:
    """Instructions per request of the tiergate in ``src`` (None: this checkout)."""
    os.makedirs(work, exist_ok=True)
    env = dict(T.tiergate_env(), PYTHONHASHSEED="0")
    if src is not None:
        env["PYTHONPATH"] = src
    cfg = T.tiergate_config(work, up_port)
    key = subprocess.run(
        [T.TIERGATE_BIN, "keys", "create", "--name", "bench", "--config", cfg],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()[-1]
    port, out = free_port(), os.path.join(work, "callgrind.out")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
        + T.tiergate_cmd(cfg, port),
        env=env,
        stdout=open(os.path.join(work, "tiergate.out"), "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(port, 300)
        path, model, headers = T.chat_request(T.TIERGATE, stream=False)
        h = dict(x.split(": ", 1) for x in headers + T.auth_headers(T.TIERGATE, key))
        h["Content-Type"] = "application/json"
        body = bodies.chat_body(model)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

        def requests(k: int) -> None:
            for _ in range(k):
                c.request("POST", path, body, h)
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    raise RuntimeError(f"chat request answered {r.status}")

        requests(150)  # warm: caches, the upstream connection, the learned ratios
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True, timeout=60)
        requests(n)
        time.sleep(0.5)  # the ledger writer's batch for the last requests
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True, timeout=60)
    finally:
        proc.terminate()
        proc.wait(180)
    total = 0
    for f in glob.glob(out + "*"):
        with open(f, errors="replace") as fh:
            total += sum(int(ln.split()[1]) for ln in fh if ln.startswith("totals:"))
    return total / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("revs", nargs="+", metavar="REV")
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is missing: scripts/debian-packages.sh valgrind=valgrind", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="tiergate-instr-")
    up_port = free_port()
    nginx = subprocess.Popen(["nginx", "-c", upstream.write_conf(tmp, up_port), "-p", tmp])
    srcs: dict[str, str | None] = {}
    try:
        for i, rev in enumerate(args.revs):
            srcs[rev] = None if rev == "worktree" else checkout(rev, os.path.join(tmp, f"rev{i}"))
        base = None
        for i, rev in enumerate(args.revs):
            per = count(srcs[rev], os.path.join(tmp, f"t{i}"), up_port, args.requests)
            base = base or per
            print(f"{rev:>12}: {per / 1000:8.1f} k instructions per chat request  {100 * (per / base - 1):+6.1f} %")
    finally:
        nginx.terminate()
        for src in srcs.values():
            if src is not None:
                subprocess.run(
                    ["git", "-C", REPO, "worktree", "remove", "--force", os.path.dirname(src)], capture_output=True
                )
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
