"""CPU per upstream call of HTTP clients, side by side: what tiergate's own client saves.

  .venv/bin/python bench/gateway/client_cost.py [--requests 20000] [--rounds 3] [--conns 4]

One process on core 0 (nginx on core 1, the benchmark's canned chat
completion) makes the same POST with each client in turn, ``--conns``
requests in flight, rounds interleaved; the figure is the process's CPU
time per request (time.process_time, so a client's own threads count too)
and its medians. Clients: tiergate's ``UpstreamHTTP`` (through
``post_for_body``, as adapters call it) and aiohttp's ``ClientSession`` (as
tiergate used it until decision 0004), plus aiosonic and pyreqwest when they
can be imported, e.g. run with a throwaway venv that has them:

  python3 -m venv /tmp/clients && /tmp/clients/bin/pip install -e . aiosonic pyreqwest
  /tmp/clients/bin/python bench/gateway/client_cost.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bodies  # noqa: E402
import upstream  # noqa: E402

sys.path.insert(0, os.path.dirname(HERE))
from benchlib import free_port  # noqa: E402

HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-upstream"}


async def tiergate_client(url: str, body: bytes):
    from tiergate.adapters.base import post_for_body
    from tiergate.adapters.upstream_http import UpstreamHTTP

    client = UpstreamHTTP(connect_timeout_s=5)

    async def one() -> bytes:
        return (await post_for_body(client, url, body, HEADERS, timeout_s=30))[0]

    return one, client.close


async def aiohttp_client(url: str, body: bytes):
    import aiohttp

    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    timeout = aiohttp.ClientTimeout(total=30, connect=5)

    async def one() -> bytes:
        async with session.post(url, data=body, headers=HEADERS, timeout=timeout) as r:
            return await r.read()

    return one, session.close


async def aiosonic_client(url: str, body: bytes):
    import aiosonic

    client = aiosonic.HTTPClient()

    async def one() -> bytes:
        r = await client.post(url, data=body, headers=HEADERS)
        return await r.content()

    async def close() -> None:
        await client.aclose()

    return one, close


async def pyreqwest_client(url: str, body: bytes):
    from pyreqwest.client import ClientBuilder

    client = ClientBuilder().build()
    await client.__aenter__()

    async def one() -> bytes:
        r = await client.post(url).body_bytes(body).headers(HEADERS).build().send()
        return await r.bytes()

    async def close() -> None:
        await client.__aexit__(None, None, None)

    return one, close


CLIENTS = {
    "tiergate": tiergate_client,
    "aiohttp": aiohttp_client,
    "aiosonic": aiosonic_client,
    "pyreqwest": pyreqwest_client,
}


def importable(name: str) -> bool:
    mod = {"tiergate": "tiergate", "aiohttp": "aiohttp", "aiosonic": "aiosonic", "pyreqwest": "pyreqwest"}[name]
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


async def cpu_per_request(make, url: str, body: bytes, n: int, conns: int) -> float:
    one, close = await make(url, body)
    expected = await one()
    assert b"chat.completion" in expected, expected[:200]

    async def worker(k: int) -> None:
        for _ in range(k):
            await one()

    await asyncio.gather(*(worker(200) for _ in range(conns)))  # warm: connections open, code paths hot
    c0 = time.process_time()
    await asyncio.gather(*(worker(n // conns) for _ in range(conns)))
    cpu = time.process_time() - c0
    await close()
    return cpu / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=4)
    args = ap.parse_args()
    if not shutil.which("nginx"):
        print("nginx is missing: bash bench/gateway/run.sh installs it (or apt-get install nginx-light)")
        return 2
    names = [n for n in CLIENTS if importable(n)]
    work = tempfile.mkdtemp(prefix="clientcost-")
    port = free_port()
    ng = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", upstream.write_conf(work, port), "-p", work])
    try:
        time.sleep(0.5)
        os.sched_setaffinity(0, {0})
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = bodies.chat_body("gpt-4o-mini")
        results: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                us = asyncio.run(cpu_per_request(CLIENTS[name], url, body, args.requests, args.conns))
                results[name].append(us)
                print(f"round {r + 1} {name:10s} {us:7.1f} µs/request", flush=True)
        print(f"\nmedians of {args.rounds} rounds, {args.requests:,} requests each, {args.conns} in flight:")
        base = statistics.median(results["tiergate"])
        for name in names:
            m = statistics.median(results[name])
            print(f"  {name:10s} {m:7.1f} µs CPU per request  ({m / base:.1f}x tiergate's client)")
    finally:
        ng.terminate()
        ng.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
