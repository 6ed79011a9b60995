"""Run one stand-in in the foreground: ``python -m tiergate.standins --protocol ...``.

Prints ``READY <port>`` once listening (so a launcher can wait for it and learn
an OS-picked port) and exits cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from . import (
    build_anthropic_standin,
    build_azure_standin,
    build_bedrock_standin,
    build_gemini_standin,
    build_ollama_standin,
    build_openai_standin,
    start_standin,
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tiergate.standins", description="Serve a fake cloud LLM endpoint.")
    p.add_argument("--protocol", choices=("openai", "anthropic", "azure", "bedrock", "ollama", "gemini"), required=True)
    p.add_argument("--name", required=True, help="tag put at the start of every reply")
    p.add_argument("--model", action="append", required=True, dest="models", help="model id to serve (repeatable)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--api-key", default=None, help="require this key (default: any)")
    p.add_argument("--entra-token", default=None, help="azure: also accept this Bearer token")
    p.add_argument("--aws-region", default="us-east-1", help="bedrock: the region signatures must be scoped to")
    p.add_argument("--aws-access-key", default="AKIDSTANDIN", help="bedrock: the access key id it knows")
    p.add_argument("--aws-secret-key", default="standin-secret", help="bedrock: that key's secret")
    p.add_argument("--aws-session-token", default=None, help="bedrock: require this session token")
    p.add_argument("--stream-chunks", type=int, default=20)
    p.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between SSE events")
    p.add_argument(
        "--capabilities",
        action="append",
        default=[],
        metavar="MODEL=CAP,CAP",
        help="ollama: what /api/show reports for MODEL (repeatable; default: what Ollama reports for its kind)",
    )
    return p.parse_args(argv)


def _capabilities(specs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for spec in specs:
        model, _, caps = spec.partition("=")
        out[model] = [c for c in caps.split(",") if c]
    return out


async def _serve(args: argparse.Namespace) -> None:
    common = {"name": args.name, "models": args.models, "api_key": args.api_key}
    common |= {"stream_chunks": args.stream_chunks, "chunk_delay_s": args.chunk_delay}
    if args.protocol == "azure":
        app = build_azure_standin(**common, entra_token=args.entra_token)
    elif args.protocol == "bedrock":
        app = build_bedrock_standin(
            **common,
            region=args.aws_region,
            access_key=args.aws_access_key,
            secret_key=args.aws_secret_key,
            session_token=args.aws_session_token,
        )
    elif args.protocol == "ollama":
        app = build_ollama_standin(**common, capabilities=_capabilities(args.capabilities))
    else:
        builders = {
            "openai": build_openai_standin,
            "anthropic": build_anthropic_standin,
            "gemini": build_gemini_standin,
        }
        app = builders[args.protocol](**common)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start_standin(app, host=args.host, port=args.port)
    try:
        print(f"READY {running.port}", flush=True)
        await stop.wait()
    finally:
        await running.stop()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(_serve(_parse(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
