"""LocalModelManager on real llama.cpp servers: the bundled SmolLM2 and tiny random Llamas.

Each test runs its own manager on its own event loop. Models are tiny (1 thread, 128-token
slots) so the whole file takes well under a minute on 2 cores shared with other workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client import CollectorRegistry

from procs import bundled_gguf
from tiergate.config.local_models import LocalModelsConfig
from tiergate.core.errors import ModelNotReady
from tiergate.local.manager import LocalModelManager
from tiergate.local.process import LlamaCppProcess
from tiny_gguf import write_tiny_llama

TIMEOUT_S = 45


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory) -> dict[str, Path]:
    smol = bundled_gguf()  # also checks that xllamacpp is importable
    d = tmp_path_factory.mktemp("gguf")
    tiny = {name: write_tiny_llama(d / f"{name}.gguf", seed=i) for i, name in enumerate("abc")}
    return {"smol": smol, **tiny}


def model(name: str, gguf: Path, *, mb: int | None = 100, **kw: Any) -> dict[str, Any]:
    row = {
        "name": name,
        "gguf": str(gguf),
        "context": 128,
        "threads": 1,
        "parallel": 1,
        "extra_args": ["--verbosity", "1"],
        **kw,
    }
    if mb is not None:
        row["memory_mb"] = mb
    return row


class CountingFactory:
    """A LlamaCppProcess factory that records every server it starts."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def __call__(self, **kw: Any) -> LlamaCppProcess:
        self.started.append(kw["alias"])
        return LlamaCppProcess(**kw)


@contextlib.asynccontextmanager
async def running(
    budget_mb: int, *models: dict[str, Any], **cfg: Any
) -> AsyncIterator[tuple[LocalModelManager, CountingFactory]]:
    factory = CountingFactory()
    cfg.setdefault("min_residency_s", 0)  # these tests swap on every request on purpose
    mgr = LocalModelManager(
        LocalModelsConfig.model_validate({"budget_mb": budget_mb, "models": list(models), **cfg}),
        registry=CollectorRegistry(),
        process_factory=factory,
        tick_s=0.1,
    )
    await mgr.start(wait=True)
    try:
        yield mgr, factory
    finally:
        await mgr.stop()


def run(scenario: Callable[[], Any]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT_S))


async def chat(url: str, *, max_tokens: int = 4) -> openai.types.chat.ChatCompletion:
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=30)
    try:
        return await client.chat.completions.create(
            model="local", messages=[{"role": "user", "content": "Say hi."}], max_tokens=max_tokens
        )
    finally:
        await client.close()


async def use(mgr: LocalModelManager, name: str) -> None:
    """One real request through acquire(), waiting for a load if needed."""
    async with mgr.acquire(name, wait_s=30) as url:
        reply = await chat(url)
    assert reply.usage is not None and reply.usage.completion_tokens > 0


async def until(predicate: Callable[[], Any], within_s: float = 20.0, what: str = "") -> Any:
    deadline = asyncio.get_running_loop().time() + within_s
    while not (value := predicate()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.01)
    return value


def rows(mgr: LocalModelManager) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in mgr.status()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def metric(mgr: LocalModelManager, name: str, **labels: str) -> float | None:
    return mgr.registry.get_sample_value(name, labels)


def test_swaps_on_demand_evicting_the_least_recently_used_idle_model(ggufs):
    async def scenario() -> None:
        async with running(250, *(model(n, ggufs[n]) for n in "abc")) as (mgr, factory):
            assert mgr.unavailable() == {"a": "stopped", "b": "stopped", "c": "stopped"}
            await use(mgr, "a")
            await use(mgr, "b")
            await use(mgr, "a")  # a is now the most recently used; b is the LRU
            pid_b, url_b = rows(mgr)["b"]["pid"], mgr.base_url("b")
            await use(mgr, "c")  # 3 x 100 MB > 250: one must go
            st = rows(mgr)
            assert (st["a"]["state"], st["b"]["state"], st["c"]["state"]) == ("ready", "stopped", "ready")
            assert st["b"]["swaps_out"] == 1 and not alive(pid_b)
            assert metric(mgr, "tiergate_local_model_swaps_total", evicted="b", loaded="c") == 1
            await use(mgr, "b")  # now a is the LRU
            st = rows(mgr)
            assert st["a"]["state"] == "stopped" and st["a"]["swaps_out"] == 1
            assert mgr.base_url("b") == url_b == st["b"]["base_url"]  # the same URL across reloads
            assert factory.started == ["a", "b", "c", "b"]
            assert (st["a"]["requests_served"], st["b"]["loads"], st["b"]["requests_served"]) == (2, 2, 2)
            assert st["b"]["load_time_s"] > 0 and st["b"]["last_used"] is not None
            assert metric(mgr, "tiergate_local_model_loads_total", model="b") == 2
            assert metric(mgr, "tiergate_local_model_state", model="b", state="ready") == 1
            assert metric(mgr, "tiergate_local_model_state", model="a", state="ready") == 0
            assert metric(mgr, "tiergate_local_model_load_seconds_count", model="b") == 2
            pids = [r["pid"] for r in mgr.status() if r["pid"]]
        assert pids and not any(alive(p) for p in pids)  # stop() ends every server
        assert set(mgr.unavailable().values()) == {"stopped"}

    run(scenario)


def test_a_model_serving_a_stream_is_never_evicted(ggufs):
    async def scenario() -> None:
        async with running(150, model("a", ggufs["a"], parallel=2), model("b", ggufs["b"])) as (mgr, _):
            await use(mgr, "a")
            pid_a = rows(mgr)["a"]["pid"]
            async with mgr.acquire("a") as url:
                client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
                stream = await client.chat.completions.create(
                    model="local", messages=[{"role": "user", "content": "Tell a story."}], max_tokens=32, stream=True
                )
                chunks = stream.__aiter__()
                await chunks.__anext__()  # the stream is open and flowing
                with pytest.raises(ModelNotReady) as exc:
                    async with mgr.acquire("b", wait_s=0):
                        pass
                assert exc.value.model == "b"
                await until(lambda: "waiting for a" in mgr.unavailable().get("b", ""), what="b waits for a")
                assert mgr.unavailable()["b"] == (
                    "queued to load: waiting for a (1 request in flight) to free memory: needs 100 MB, 50 MB free"
                )
                assert mgr.unavailable()["a"] == "draining for swap to b (1 in flight)"
                with pytest.raises(ModelNotReady, match="a draining for swap to b"):
                    async with mgr.acquire("a", wait_s=0):  # new requests go elsewhere meanwhile
                        pass
                await asyncio.sleep(0.3)
                assert rows(mgr)["a"]["state"] == "busy" and alive(pid_a)
                rest = [c async for c in chunks]
                assert rest, "the held stream kept streaming"
                await client.close()
            await use(mgr, "b")  # the swap happens once the stream is done
            st = rows(mgr)
            assert (st["a"]["state"], st["a"]["swaps_out"], st["b"]["state"]) == ("stopped", 1, "ready")
            assert not alive(pid_a)

    run(scenario)


def test_concurrent_requests_load_a_model_once(ggufs):
    async def scenario() -> None:
        async with running(300, model("a", ggufs["a"])) as (mgr, factory):
            await asyncio.gather(*(use(mgr, "a") for _ in range(10)))
            st = rows(mgr)["a"]
            assert factory.started == ["a"]
            assert (st["loads"], st["requests_served"], st["in_flight"]) == (1, 10, 0)

    run(scenario)


def test_queued_requests_are_served_grouped_by_model(ggufs):
    async def scenario() -> None:
        served: list[str] = []

        async def request(name: str) -> None:
            async with mgr.acquire(name, wait_s=30) as url:
                served.append(name)
                await chat(url, max_tokens=2)

        models = (model("a", ggufs["a"]), model("b", ggufs["b"]), model("c", ggufs["c"]))
        async with running(150, *models, default="a") as (mgr, factory):
            assert factory.started == ["a"]
            tasks = []
            async with mgr.acquire("a"):  # a is busy while requests for b and c queue up, interleaved
                for name in "bcbcbc":
                    tasks.append(asyncio.create_task(request(name)))
                    await asyncio.sleep(0.01)
                await until(
                    lambda: (rows(mgr)["b"]["waiting"], rows(mgr)["c"]["waiting"]) == (3, 3), what="6 queued requests"
                )
            await asyncio.gather(*tasks)
            assert served == ["b", "b", "b", "c", "c", "c"]  # one swap per model, not one per request
            assert factory.started == ["a", "b", "c"]

    run(scenario)


def test_idle_model_unloads_after_its_ttl_and_the_default_comes_back(ggufs):
    async def scenario() -> None:
        # SmolLM2's memory is estimated from its GGUF (about 100 MB at this context): only one model fits.
        models = (model("smol", ggufs["smol"], mb=None), model("b", ggufs["b"], idle_ttl="1s"))
        async with running(150, *models, default="smol") as (mgr, factory):
            st = rows(mgr)["smol"]
            assert st["state"] == "ready" and st["memory_estimated"] and 94 < st["memory_mb"] < 150
            await use(mgr, "smol")
            await use(mgr, "b")
            loop = asyncio.get_running_loop()
            released = loop.time()
            assert rows(mgr)["smol"]["state"] == "stopped"
            await until(lambda: rows(mgr)["b"]["state"] == "stopped", what="b idles out")
            assert loop.time() - released >= 0.9  # not before its TTL
            await until(lambda: rows(mgr)["smol"]["state"] == "ready", what="the default comes back")
            await use(mgr, "smol")
            assert factory.started == ["smol", "b", "smol"]
            assert metric(mgr, "tiergate_local_model_unloads_total", model="b", reason="idle") == 1
            assert metric(mgr, "tiergate_local_model_unloads_total", model="smol", reason="evicted") == 1

    run(scenario)


def test_not_ready_raises_at_once_while_loading_and_waiting_succeeds(ggufs):
    async def scenario() -> None:
        async with running(300, model("smol", ggufs["smol"], mb=200), load_wait_s=0) as (mgr, factory):
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(ModelNotReady) as exc:
                async with mgr.acquire("smol"):  # cfg.load_wait_s = 0: do not wait
                    pass
            assert loop.time() - t0 < 0.2
            assert exc.value.reason == "queued to load" and str(exc.value) == "smol queued to load"
            await until(lambda: mgr.unavailable().get("smol", "").startswith("loading"), what="loading")
            assert mgr.unavailable()["smol"] in ("loading (started 0s ago)", "loading (started 1s ago)")
            with pytest.raises(ModelNotReady, match=r"smol loading \(started \d+s ago\)"):
                async with mgr.acquire("smol", wait_s=0):
                    pass
            async with mgr.acquire("smol", wait_s=30) as url:
                reply = await chat(url, max_tokens=8)
            assert reply.choices[0].message.content
            assert factory.started == ["smol"] and "smol" not in mgr.unavailable()

    run(scenario)


def test_exists_lock_file_makes_local_models_busy_and_large_loads_hold_it(ggufs, tmp_path):
    lock = tmp_path / "gpu.lock"

    async def scenario() -> None:
        models = (model("a", ggufs["a"]), model("smol", ggufs["smol"], mb=200))
        async with running(300, *models, lock_file=str(lock), lock_mode="exists") as (mgr, factory):
            await use(mgr, "a")
            lock.write_text("training job\n")
            busy = f"gpu busy: lock file {lock} exists"
            await until(lambda: mgr.unavailable() == {"a": busy, "smol": busy}, what="busy")
            with pytest.raises(ModelNotReady, match="a gpu busy: lock file"):
                async with mgr.acquire("a", wait_s=0):
                    pass
            with pytest.raises(ModelNotReady, match="gpu busy"):
                async with mgr.acquire("smol", wait_s=0.3):
                    pass
            assert factory.started == ["a"]  # nothing loads while other work has the GPU
            assert metric(mgr, "tiergate_local_gpu_busy") == 1
            lock.unlink()
            await until(lambda: "a" not in mgr.unavailable(), what="a free again")
            # smol needs 200 of 300 MB: its load takes the lock so other GPU work can see it
            with pytest.raises(ModelNotReady):
                async with mgr.acquire("smol", wait_s=0):
                    pass
            await until(lock.exists, what="the lock during a large load")
            assert "tiergate" in lock.read_text() and "loading smol" in lock.read_text()
            assert "a" not in mgr.unavailable()  # our own lock does not make us busy
            await until(lambda: rows(mgr)["smol"]["state"] == "ready", what="smol ready")
            assert not lock.exists()
            await use(mgr, "smol")

    run(scenario)


def test_a_crashed_server_is_restarted(ggufs):
    async def scenario() -> None:
        async with running(300, model("a", ggufs["a"], pinned=True, parallel=2)) as (mgr, factory):
            url = mgr.base_url("a")
            pid = rows(mgr)["a"]["pid"]
            async with mgr.acquire("a") as got:
                assert got == url
                client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
                stream = await client.chat.completions.create(
                    model="local", messages=[{"role": "user", "content": "Go on."}], max_tokens=64, stream=True
                )
                await stream.__aiter__().__anext__()
                os.kill(pid, signal.SIGKILL)  # mid-traffic
                why = await until(lambda: mgr.unavailable().get("a"), what="crash noticed")
                assert why == "failed: crashed (exit code -9); restarting"
                with contextlib.suppress(Exception):
                    async for _ in stream:
                        pass
                await client.close()
            await until(lambda: rows(mgr)["a"]["state"] == "ready", what="restart")  # pinned: back on its own
            st = rows(mgr)["a"]
            assert st["pid"] != pid and alive(st["pid"]) and (st["crashes"], st["loads"]) == (1, 2)
            assert mgr.base_url("a") == url
            await use(mgr, "a")
            assert factory.started == ["a", "a"]
            assert metric(mgr, "tiergate_local_model_unloads_total", model="a", reason="crashed") == 1

    run(scenario)


def test_failures_and_attached_servers_are_explained(ggufs, tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF but not really" * 100)
    missing = tmp_path / "missing.gguf"

    async def scenario() -> None:
        remote = {"name": "remote", "attach": "http://127.0.0.1:9/v1", "memory_mb": 290}
        models = (model("junk", junk, mb=5), model("missing", missing, mb=None), model("big", ggufs["a"], mb=20))
        async with running(300, *models, remote) as (mgr, factory):
            un = mgr.unavailable()
            assert "remote" not in un and un["missing"] == f"failed: gguf not found: {missing}"
            async with mgr.acquire("remote", wait_s=0) as url:  # a server tiergate did not start
                assert url == "http://127.0.0.1:9/v1" == mgr.base_url("remote")
            with pytest.raises(ModelNotReady, match="big failed: cannot fit: needs 20 MB but only 10 MB"):
                async with mgr.acquire("big", wait_s=10):  # never fits beside remote: no point waiting
                    pass
            with pytest.raises(ModelNotReady):
                async with mgr.acquire("junk", wait_s=0):
                    pass
            why = await until(
                lambda: mgr.unavailable()["junk"].startswith("failed") and mgr.unavailable()["junk"], what="junk fails"
            )
            assert why.startswith("failed: llama.cpp server (junk.gguf) failed to start")
            st = rows(mgr)
            assert st["junk"]["state"] == "failed" and "log tail" in st["junk"]["error_detail"]
            assert (st["remote"]["state"], st["remote"]["attached"], st["remote"]["requests_served"]) == (
                "ready",
                True,
                1,
            )
            assert factory.started == ["junk"]
            assert metric(mgr, "tiergate_local_model_load_failures_total", model="junk") == 1

    run(scenario)
