"""Measuring helpers for the gateway benchmark: pinned processes, wrk runs, stream timing, CPU accounting."""

from __future__ import annotations

import http.client
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # bench/, for benchlib

import bodies  # noqa: E402
import targets as T  # noqa: E402

from benchlib import busy_pct, cpu_times, quiet_wait  # noqa: E402

PROXY_CPU = "0"
LOAD_CPU = "1"
BOTH_CPUS = "0,1"
CLK = os.sysconf("SC_CLK_TCK")
FOREIGN_MAX = 15.0  # % of a core used by other processes before a measurement is redone
SETTINGS = {"nice": 0}  # set from --nice by the runner


def pin(cpu: str) -> list[str]:
    return (["nice", "-n", str(SETTINGS["nice"])] if SETTINGS["nice"] else []) + ["taskset", "-c", cpu]


# ---------------------------------------------------------------- processes


class Proc:
    def __init__(self, name: str, cmd: list[str], cpu: str, logfile: str, env=None, stop_wait: float = 20.0):
        self.name = name
        self.port = 0
        self.logfile = logfile
        self.stop_wait = stop_wait
        self.log = open(logfile, "wb")
        self.p = subprocess.Popen(
            [*pin(cpu), *cmd], stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=HERE
        )

    def alive(self) -> bool:
        return self.p.poll() is None

    def group(self) -> list[int]:
        """Pids of every process in this process group (the target and any workers it spawned)."""
        out = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            rest = s[s.rindex(")") + 2 :].split()
            if int(rest[2]) == self.p.pid:
                out.append(int(pid))
        return out

    def cpu_ticks(self) -> int:
        """utime + stime (/proc/PID/stat) of every process in the group, all threads."""
        total = 0
        for pid in self.group():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            rest = s[s.rindex(")") + 2 :].split()
            total += int(rest[11]) + int(rest[12])
        return total

    def rss_kb(self) -> int:
        """VmRSS (/proc/PID/status) summed over the group."""
        total = 0
        for pid in self.group():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
                            break
            except OSError:
                continue
        return total

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(self.stop_wait)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
            except ProcessLookupError:
                pass
        # a worker that outlived its parent (it should not) is still in the group
        for pid in self.group():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if not self.log.closed:
            self.log.close()

    def tail(self, n: int = 15) -> str:
        try:
            with open(self.logfile, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""


def post(port: int, path: str, body: bytes, headers: list[str], timeout=10.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    for line in headers:
        k, _, v = line.partition(":")
        h[k.strip()] = v.strip()
    try:
        c.request("POST", path, body, h)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


# ---------------------------------------------------------------- lanes: request files per target


class Lanes:
    """Body and header files for every (target, lane)."""

    def __init__(self, work: str, tiergate_key: str):
        self.work = work
        self.key = tiergate_key
        self.files: dict[tuple[str, str], tuple[str, str, str]] = {}

    def _kind(self, target: str) -> str:
        return T.TIERGATE if target.startswith(T.TIERGATE) else target

    def get(self, target: str, lane: str) -> tuple[str, str, str]:
        """(path, body file, headers file)."""
        kind = self._kind(target)
        if (kind, lane) in self.files:
            return self.files[(kind, lane)]
        key = self.key if kind == T.TIERGATE else T.MASTER_KEY
        if lane == "anthropic":
            path = "/v1/messages"
            body = bodies.anthropic_body(T.ANTHROPIC_MODEL)
            headers = T.auth_headers(kind, key, anthropic=True)
            if kind == T.TIERGATE:
                headers += [f"X-Tiergate-Task: {T.TASK}", "X-Tiergate-Agent: bench-agent"]
        elif lane == "responses":
            path = "/v1/responses"
            body = bodies.responses_body("auto" if kind == T.TIERGATE else "chat")
            headers = T.auth_headers(kind, key)
            if kind == T.TIERGATE:
                headers += [f"X-Tiergate-Task: {T.TASK}", "X-Tiergate-Agent: bench-agent"]
        else:
            stream = lane == "stream"
            path, model, headers = T.chat_request(kind, stream=stream)
            body = bodies.chat_body(model, stream=stream)
            headers = headers + T.auth_headers(kind, key)
        bf = os.path.join(self.work, f"{kind}-{lane}.json")
        hf = os.path.join(self.work, f"{kind}-{lane}.headers")
        with open(bf, "wb") as f:
            f.write(body)
        with open(hf, "w") as f:
            f.write("\n".join(headers) + "\n")
        self.files[(kind, lane)] = (path, bf, hf)
        return path, bf, hf

    def headers(self, target: str, lane: str) -> list[str]:
        _, _, hf = self.get(target, lane)
        return [ln for ln in open(hf).read().splitlines() if ln.strip()]

    def body(self, target: str, lane: str) -> bytes:
        _, bf, _ = self.get(target, lane)
        return open(bf, "rb").read()


# ---------------------------------------------------------------- wrk


def wrk(
    port: int,
    path: str,
    body_file: str,
    headers_file: str,
    conns: int,
    duration: int,
    proc: Proc | None,
    nginx: Proc,
    *,
    script: str = "post.lua",
    extra_env=None,
) -> dict:
    env = dict(os.environ, BENCH_BODY=body_file, BENCH_HEADERS=headers_file, **(extra_env or {}))
    cmd = [
        *pin(LOAD_CPU),
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{int(duration)}s",
        "--timeout",
        "5s",
        "-s",
        os.path.join(HERE, script),
        f"http://127.0.0.1:{port}{path}",
    ]
    c0 = cpu_times()
    p0 = proc.cpu_ticks() if proc else 0
    n0 = nginx.cpu_ticks()
    w0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60, cwd=HERE)
    wall = time.monotonic() - t0
    w1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c1 = cpu_times()
    p1 = proc.cpu_ticks() if proc else 0
    n1 = nginx.cpu_ticks()
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    r = json.loads(line.split(" ", 1)[1])
    r["conns"] = conns
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = sum(v for k, v in r.items() if k.startswith("err_"))
    r["core0_busy"] = busy_pct(c0, c1, PROXY_CPU)
    r["core1_busy"] = busy_pct(c0, c1, LOAD_CPU)
    r["proxy_cpu"] = 100.0 * (p1 - p0) / CLK / wall if proc else 0.0
    r["cpu_us_per_req"] = (p1 - p0) / CLK * 1e6 / max(r["requests"], 1) if proc else 0.0
    wrk_s = (w1.ru_utime - w0.ru_utime) + (w1.ru_stime - w0.ru_stime)
    r["load_cpu"] = 100.0 * ((n1 - n0) / CLK + wrk_s) / wall
    # CPU time on either pinned core that neither the target nor nginx+wrk used
    r["foreign"] = max(r["core0_busy"] - r["proxy_cpu"], r["core1_busy"] - r["load_cpu"], 0.0)
    return r


def measure(tries: int, *args, **kw) -> dict:
    """A wrk run, re-run (bounded) while other processes visibly competed for the cores."""
    best = None
    for tried in range(1, tries + 1):
        quiet_wait(3)
        r = wrk(*args, **kw)
        if best is None or r["foreign"] < best["foreign"]:
            best = r
        best["tries"] = tried  # runs so far; the last one is the total
        if r["foreign"] <= FOREIGN_MAX:
            break
    return best


# ---------------------------------------------------------------- streaming lane


def stream_lane(port: int, path: str, body_file: str, headers_file: str, n: int, proc: Proc | None) -> dict:
    cmd = [
        *pin(LOAD_CPU),
        sys.executable,
        os.path.join(HERE, "stream_client.py"),
        str(port),
        path,
        body_file,
        headers_file,
        str(n),
        "5",
    ]
    p0 = proc.cpu_ticks() if proc else 0
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60 + n * 2, cwd=HERE)
    p1 = proc.cpu_ticks() if proc else 0
    if done.returncode != 0:
        raise RuntimeError(f"stream client failed: {done.stderr[-2000:]}")
    runs = json.loads(done.stdout)["runs"]
    bad = [r for r in runs if r["status"] != 200 or not r["done"]]
    first = [r["arrivals_ms"][0] for r in runs if r["arrivals_ms"]]
    content = [r["first_content_ms"] for r in runs if r.get("first_content_ms") is not None]
    last = [r["arrivals_ms"][-1] for r in runs if r["arrivals_ms"]]
    events = statistics.median(r["events"] for r in runs)
    width = max(len(r["arrivals_ms"]) for r in runs)
    per_event = [
        statistics.median(r["arrivals_ms"][i] for r in runs if len(r["arrivals_ms"]) > i) for i in range(width)
    ]
    return {
        "n": len(runs),
        "bad": len(bad),
        "events": events,
        "reads": statistics.median(r["reads"] for r in runs),
        "ttft_p50_ms": pct(first, 50),
        "ttft_p99_ms": pct(first, 99),
        "content_p50_ms": pct(content, 50) if content else None,
        "last_p50_ms": pct(last, 50),
        "spread_p50_ms": statistics.median(b - a for a, b in zip(first, last, strict=True)),
        "per_event_p50_ms": per_event,
        "cpu_us_per_stream": (p1 - p0) / CLK * 1e6 / max(len(runs) + 5, 1) if proc else 0.0,
    }


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# ---------------------------------------------------------------- the run
