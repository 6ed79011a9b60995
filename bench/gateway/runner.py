"""tiergate against a bare pass-through proxy and LiteLLM: the gateway benchmark.

Usually started by run.sh, which installs what this needs. One run:

1. nginx upstream (one worker) on core 1: canned chat.completion, and 20 SSE
   chunks 1 ms apart (upstream.py).
2. Each target once: does it answer each lane correctly? (A target or lane
   that does not is left out and named under Notes.)
3. ROUNDS rounds, target order rotated each round. Each target is started
   fresh on core 0 and goes through every lane; wrk (1 thread) and the
   streaming client run on core 1 beside nginx:
     chat      wrk -c32 (req/s, CPU per request) and -c4 (p50/p99)
     sweep     wrk -c1, -c16, -c64 (with -c4 and -c32 from "chat")
     stream    N sequential streaming requests: time to first event, when
               every event arrived, in how many reads
     anthropic POST /v1/messages to an OpenAI upstream, wrk -c32 and -c4
               (tiergate and LiteLLM; the bare proxy cannot translate)
     responses POST /v1/responses (store false, as Codex sends) to the same
               OpenAI chat upstream, wrk -c32 and -c4
   then `tiergate serve --workers 1` and `--workers 2`, each allowed both
   cores, on the chat lane.
4. --soak SECONDS: tiergate alone under a steady mix of requests, RSS every
   10 s.

Medians of rounds are reported. Everything is bounded (wrk -d, request
counts, timeouts) and talks to 127.0.0.1 only; every process started here is
stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bodies  # noqa: E402
import tables  # noqa: E402
import targets as T  # noqa: E402
import upstream  # noqa: E402

SWEEP = (1, 16, 64)  # plus 4 and 32 from the chat lane

from measure import (  # noqa: E402
    BOTH_CPUS,
    LOAD_CPU,
    PROXY_CPU,
    SETTINGS,
    Lanes,
    Proc,
    measure,
    post,
    quiet_wait,
    stream_lane,
    wrk,
)
from soak import soak as soak_lane  # noqa: E402

from benchlib import free_port, log  # noqa: E402  (measure put bench/ on the path)


class Run:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="gatewaybench-")
        self.procs: list[Proc] = []
        self.notes: list[str] = []
        self.nginx: Proc | None = None
        self.up_port = 0
        self.tg_config = ""
        self.ll_config = ""
        self.lanes: Lanes | None = None
        self.anthropic_ok: dict[str, bool] = {}
        self.responses_ok: dict[str, bool] = {}

    # -- processes
    def start(self, name: str, *, cpu: str = PROXY_CPU, workers: int = 1) -> Proc | None:
        if name == T.DIRECT:
            return None
        last = ""
        for attempt in range(2):  # a fresh port each time, in case one was taken meanwhile
            port = free_port()
            logfile = os.path.join(self.work, f"{name}-{len(self.procs)}-{attempt}.log")
            if name == T.BARE:
                p = Proc(name, T.bare_cmd(port), cpu, logfile, T.bare_env(self.up_port))
            elif name.startswith(T.TIERGATE):
                p = Proc(name, T.tiergate_cmd(self.tg_config, port, workers), cpu, logfile, T.tiergate_env())
            elif name == T.LITELLM:
                p = Proc(name, T.litellm_cmd(self.ll_config, port), cpu, logfile, T.litellm_env())
            else:
                raise ValueError(name)
            p.port = port
            self.procs.append(p)
            try:
                self.wait_ready(name, p, timeout=90 if name == T.LITELLM else 45)
                return p
            except RuntimeError as e:
                last = f"{e}\n{p.tail()}"
                self.stop(p)
        raise RuntimeError(f"{name} did not start: {last}")

    def stop(self, p: Proc | None) -> None:
        if p is None:
            return
        p.stop()
        if p in self.procs:
            self.procs.remove(p)

    def port_of(self, name: str, p: Proc | None) -> int:
        return self.up_port if p is None else p.port

    def wait_ready(self, name: str, p: Proc, timeout: float) -> None:
        path, _, _ = self.lanes.get(name, "chat")
        body, headers = self.lanes.body(name, "chat"), self.lanes.headers(name, "chat")
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not p.alive():
                raise RuntimeError(f"{name} exited with status {p.p.returncode}")
            try:
                st, _, got = post(p.port, path, body, headers, timeout=5)
                if st == 200 and b'"chat.completion"' in got:
                    return
                last = f"status {st}: {got[:300]!r}"
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready on {p.port} after {timeout:.0f} s: {last}")

    # -- correctness of each lane, once per target
    def check(self, name: str) -> dict:
        p = self.start(name)
        port = self.port_of(name, p)
        out: dict = {}
        try:
            path, _, _ = self.lanes.get(name, "chat")
            st, h, got = post(port, path, self.lanes.body(name, "chat"), self.lanes.headers(name, "chat"))
            obj = json.loads(got)
            out["chat"] = st == 200 and obj.get("object") == "chat.completion"
            if name == T.TIERGATE:
                out["tiergate_headers"] = {k: v for k, v in h.items() if k.startswith("x-tiergate")}
                if h.get("x-tiergate-deployment") != "chat":
                    raise RuntimeError(f"tiergate routed the chat lane to {h.get('x-tiergate-deployment')}, not 'chat'")
            path, bf, hf = self.lanes.get(name, "stream")
            s = stream_lane(port, path, bf, hf, 3, None)
            out["stream"] = s["bad"] == 0 and s["events"] >= 20
            out["stream_events"] = s["events"]
            if name in (T.TIERGATE, T.LITELLM):
                path, _, _ = self.lanes.get(name, "anthropic")
                st, h, got = post(port, path, self.lanes.body(name, "anthropic"), self.lanes.headers(name, "anthropic"))
                ok = st == 200 and b'"type":"message"' in got.replace(b" ", b"")
                self.anthropic_ok[name] = ok
                out["anthropic"] = ok
                if not ok:
                    self.notes.append(
                        f"{name}: POST /v1/messages (Anthropic client, OpenAI upstream) answered "
                        f"{st}: {got[:200]!r}; its translation lane is left out."
                    )
                path, _, _ = self.lanes.get(name, "responses")
                st, h, got = post(port, path, self.lanes.body(name, "responses"), self.lanes.headers(name, "responses"))
                ok = st == 200 and b'"object":"response"' in got.replace(b" ", b"")
                self.responses_ok[name] = ok
                out["responses"] = ok
                if not ok:
                    self.notes.append(
                        f"{name}: POST /v1/responses (Responses client, OpenAI chat upstream) answered "
                        f"{st}: {got[:200]!r}; its translation lane is left out."
                    )
        finally:
            self.stop(p)
        return out

    def wrk_lane(self, name: str, p: Proc | None, lane: str, conns: int, duration: int, tries: int | None = None):
        path, bf, hf = self.lanes.get(name, lane)
        return measure(tries or self.args.tries, self.port_of(name, p), path, bf, hf, conns, duration, p, self.nginx)

    def warm(self, name: str, p: Proc | None, lane: str) -> None:
        path, bf, hf = self.lanes.get(name, lane)
        wrk(self.port_of(name, p), path, bf, hf, 32, 1, p, self.nginx)

    def one_target(self, name: str, rnd: int) -> dict:
        a = self.args
        p = self.start(name)
        r: dict = {}
        try:
            r["rss_start_kb"] = p.rss_kb() if p else 0
            self.warm(name, p, "chat")
            r["c32"] = self.wrk_lane(name, p, "chat", 32, a.duration)
            r["c4"] = self.wrk_lane(name, p, "chat", 4, a.duration)
            r["rss_chat_kb"] = p.rss_kb() if p else 0
            for c in SWEEP:
                r[f"c{c}"] = self.wrk_lane(name, p, "chat", c, a.duration)
            r["rss_sweep_kb"] = p.rss_kb() if p else 0
            path, bf, hf = self.lanes.get(name, "stream")
            quiet_wait(3)
            r["stream"] = stream_lane(self.port_of(name, p), path, bf, hf, a.streams, p)
            r["rss_stream_kb"] = p.rss_kb() if p else 0
            if self.anthropic_ok.get(name):
                self.warm(name, p, "anthropic")
                r["anth_c32"] = self.wrk_lane(name, p, "anthropic", 32, a.duration)
                r["anth_c4"] = self.wrk_lane(name, p, "anthropic", 4, a.duration)
                r["rss_anthropic_kb"] = p.rss_kb() if p else 0
            if self.responses_ok.get(name):
                self.warm(name, p, "responses")
                r["resp_c32"] = self.wrk_lane(name, p, "responses", 32, a.duration)
                r["resp_c4"] = self.wrk_lane(name, p, "responses", 4, a.duration)
        finally:
            if p is not None and not p.alive():
                self.notes.append(f"round {rnd + 1}: {name} died during the run: {p.tail(5)}")
            self.stop(p)
        for k in ("c32", "c4", *(f"c{c}" for c in SWEEP), "anth_c32", "anth_c4", "resp_c32", "resp_c4"):
            if k in r and r[k]["errors"]:
                self.notes.append(
                    f"round {rnd + 1} {name} {k}: {r[k]['errors']} wrk errors "
                    f"(non-2xx {r[k]['err_status']}, timeouts {r[k]['err_timeout']})"
                )
        if "stream" in r and r["stream"]["bad"]:
            self.notes.append(
                f"round {rnd + 1} {name} stream: {r['stream']['bad']} of {r['stream']['n']} "
                "streams failed or had no [DONE]"
            )
        s = r.get("stream", {})
        log(
            f"round {rnd + 1} {name:16s} {r['c32']['rps']:8,.0f} req/s @32c {r['c32']['cpu_us_per_req']:5.0f} µs/req | "
            f"p50 {r['c4']['p50_us'] / 1e3:.2f} p99 {r['c4']['p99_us'] / 1e3:.2f} ms @4c | "
            f"TTFT p50 {s.get('ttft_p50_ms', float('nan')):.2f} ms | "
            + (f"anthropic {r['anth_c32']['rps']:,.0f} req/s | " if "anth_c32" in r else "")
            + (f"responses {r['resp_c32']['rps']:,.0f} req/s | " if "resp_c32" in r else "")
            + f"RSS {max(v for k, v in r.items() if k.startswith('rss_')) / 1024:.0f} MB "
            f"(foreign {r['c32']['foreign']:.0f}%/{r['c4']['foreign']:.0f}%)"
        )
        return r

    def workers_lane(self, workers: int, rnd: int) -> dict:
        """tiergate with N workers, allowed both cores (wrk and nginx stay on core 1)."""
        name = f"{T.TIERGATE}-w{workers}"
        a = self.args
        p = self.start(name, cpu=BOTH_CPUS, workers=workers)
        try:
            self.warm(name, p, "chat")
            r = {
                "c32": self.wrk_lane(name, p, "chat", 32, a.duration, tries=1),
                "c4": self.wrk_lane(name, p, "chat", 4, a.duration, tries=1),
                "rss_kb": p.rss_kb(),
                "processes": len(p.group()),
            }
        finally:
            self.stop(p)
        log(
            f"round {rnd + 1} {name:16s} {r['c32']['rps']:8,.0f} req/s @32c {r['c32']['cpu_us_per_req']:5.0f} µs/req "
            f"p50 {r['c4']['p50_us'] / 1e3:.2f} ms @4c, {r['processes']} processes, RSS {r['rss_kb'] / 1024:.0f} MB"
        )
        return r

    def soak(self, seconds: int) -> dict:
        return soak_lane(self, seconds)

    def setup(self) -> None:
        """The nginx upstream (answering), tiergate's config and ledger path, a virtual key and the lanes."""
        body_chat = bodies.chat_body("gpt-4o-mini")
        self.up_port = free_port()
        self.nginx = Proc(
            "nginx",
            ["nginx", "-c", upstream.write_conf(self.work, self.up_port), "-p", self.work],
            LOAD_CPU,
            os.path.join(self.work, "nginx.out"),
            stop_wait=5,
        )
        self.procs.append(self.nginx)
        st = None
        for _ in range(100):
            try:
                st, _, _ = post(self.up_port, "/v1/chat/completions", body_chat, [])
                break
            except OSError:
                time.sleep(0.1)
        if st != 200:
            raise RuntimeError(f"nginx upstream did not start: {self.nginx.tail()}")
        log(f"nginx upstream on 127.0.0.1:{self.up_port} (core {LOAD_CPU}); work dir {self.work}")
        self.tg_config = T.tiergate_config(self.work, self.up_port)
        self.tg_ledger = os.path.join(self.work, "tiergate-ledger", "ledger.db")
        self.lanes = Lanes(self.work, T.tiergate_create_key(self.tg_config))

    def main(self) -> dict:
        a = self.args
        self.setup()
        names = [T.DIRECT, T.BARE, T.TIERGATE]
        if a.no_litellm:
            self.notes.append("LiteLLM left out (--no-litellm).")
        elif not T.litellm_available():
            self.notes.append(
                f"LiteLLM is not installed at {T.LITELLM_VENV} (run.sh installs it; it could not be "
                "installed here): run without it."
            )
        else:
            self.ll_config = T.litellm_config(self.work, self.up_port)
            names.append(T.LITELLM)

        checks: dict = {}
        for name in list(names):
            log(f"check {name}")
            try:
                checks[name] = self.check(name)
            except Exception as e:
                checks[name] = {"error": str(e)[:2000]}
                if name in (T.DIRECT, T.TIERGATE):
                    raise
                self.notes.append(f"{name} did not start or answered wrongly; left out: {str(e)[:500]}")
                names.remove(name)
        log(f"checks: {json.dumps(checks)}")

        res: dict = {n: [] for n in names}
        workers: dict = {}
        soak = None
        started = time.monotonic()
        for rnd in range(a.rounds):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for name in order:
                res[name].append(self.one_target(name, rnd))
            if not a.skip_workers:
                for w in (1, 2) if rnd % 2 == 0 else (2, 1):
                    key_w = f"w{w}"
                    try:
                        workers.setdefault(key_w, []).append(self.workers_lane(w, rnd))
                    except Exception as e:
                        workers.setdefault(f"{key_w}_error", str(e)[:1500])
                        log(f"tiergate --workers {w} failed: {str(e)[:300]}")
        bench_s = time.monotonic() - started
        if a.soak:
            log(f"soak: {a.soak} s")
            soak = self.soak(a.soak)
        return {
            "checks": checks,
            "results": res,
            "workers": workers,
            "soak": soak,
            "bench_seconds": bench_s,
            "names": names,
        }

    def cleanup(self) -> None:
        for p in reversed(list(self.procs)):
            p.stop()
        self.procs.clear()


def tool_version(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except Exception as e:
        return f"unknown ({e})"


def versions() -> dict:
    out = {"python": platform.python_version()}
    out["tiergate"] = tool_version([T.PROJECT_PY, "-c", "import importlib.metadata as m; print(m.version('tiergate'))"])
    out["aiohttp"] = tool_version([T.PROJECT_PY, "-c", "import aiohttp; print(aiohttp.__version__)"])
    out["tiergate_git"] = tool_version(["git", "-C", T.REPO, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", T.REPO, "status", "--porcelain", "src"], capture_output=True, text=True).stdout
    out["src_uncommitted_changes"] = bool(dirty.strip())
    if T.litellm_available():
        out["litellm"] = tool_version(
            [
                os.path.join(T.LITELLM_VENV, "bin", "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ]
        )
    out["nginx"] = tool_version(["nginx", "-v"])
    out["wrk"] = tool_version(["wrk", "-v"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 round, 1 s wrk runs, 50 streams (about 3 minutes)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; --quick 1)")
    ap.add_argument("--duration", type=int, default=None, help="seconds per wrk run (default 3; --quick 1)")
    ap.add_argument(
        "--streams", type=int, default=None, help="streaming requests per target and round (default 200; --quick 50)"
    )
    ap.add_argument("--tries", type=int, default=2, help="max runs of one measurement while other processes compete")
    ap.add_argument(
        "--nice", type=int, default=-15, help="niceness of everything measured (negative needs root; 0 = off)"
    )
    ap.add_argument(
        "--soak", type=int, default=0, metavar="SECONDS", help="soak tiergate this long (0 = off; 600 for the real run)"
    )
    ap.add_argument("--soak-conns", type=int, default=4)
    ap.add_argument("--soak-delay-ms", type=int, default=6, help="pause of each soak connection between its requests")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--skip-workers", action="store_true", help="skip the --workers 1 vs 2 lane")
    ap.add_argument("--out", default=None, help="JSON result file (default bench/results/<date>-gateway.json)")
    args = ap.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (1 if args.quick else 3)
    args.streams = args.streams or (50 if args.quick else 200)
    SETTINGS["nice"] = args.nice if os.geteuid() == 0 or args.nice >= 0 else 0

    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool):
            print(f"missing {tool}: run bench/gateway/run.sh, which installs it", file=sys.stderr)
            return 2
    if not os.access(T.TIERGATE_BIN, os.X_OK):
        print(f"missing {T.TIERGATE_BIN}: run 'make test' or create .venv first", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("needs at least 2 cores (target on core 0, load on core 1)", file=sys.stderr)
        return 2

    today = dt.date.today().isoformat()
    out = args.out or os.path.join(T.BENCH, "results", f"{today}-gateway.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    run = Run(args)
    t0 = time.monotonic()

    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        data = run.main()
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        return 130
    finally:
        run.cleanup()
    data.update(
        {
            "date": today,
            "machine": {
                "node": platform.node(),
                "cores": os.cpu_count(),
                "cpu": tables.cpu_model(),
                "kernel": platform.release(),
            },
            "versions": versions(),
            "notes": run.notes,
            "total_seconds": time.monotonic() - t0,
            "command": " ".join(["bash bench/gateway/run.sh", *sys.argv[1:]]),
            "settings": {
                "rounds": args.rounds,
                "duration_s": args.duration,
                "streams": args.streams,
                "nice": SETTINGS["nice"],
                "tries": args.tries,
                "stream_gap_ms": upstream.GAP_S * 1e3,
                "stream_chunks": upstream.N_CHUNKS,
                "chat_body_bytes": len(bodies.chat_body("auto")),
                "anthropic_body_bytes": len(bodies.anthropic_body(T.ANTHROPIC_MODEL)),
                "responses_body_bytes": len(bodies.responses_body("auto")),
            },
        }
    )
    md = tables.render(data)
    print(md)
    with open(out, "w") as f:
        json.dump(data, f, indent=1)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(md)
    log(f"results: {out} (+ .md)")
    shutil.rmtree(run.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
