"""Local servers that speak cloud vendors' wire protocols, with fault injection.

Used as fake cloud upstreams by integration tests and as simulated cloud tiers
by ``make demo``. Build an app with :func:`build_openai_standin` or
:func:`build_anthropic_standin` (or :func:`build_ollama_standin`, an Ollama
server's native API), then serve it with :func:`start_standin`;
script failures through the ``/_control`` API (see :mod:`.faults`).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .anthropic_server import build_anthropic_standin
from .azure_server import build_azure_standin
from .bedrock_server import build_bedrock_standin
from .gemini_server import build_gemini_standin
from .ollama_server import build_ollama_standin
from .openai_server import build_openai_standin

__all__ = [
    "RunningStandin",
    "build_anthropic_standin",
    "build_azure_standin",
    "build_ollama_standin",
    "build_bedrock_standin",
    "build_gemini_standin",
    "build_openai_standin",
    "start_standin",
]


@dataclass
class RunningStandin:
    """A served stand-in; ``base_url`` has no ``/v1`` suffix."""

    app: web.Application
    host: str
    port: int
    _runner: web.AppRunner

    @property
    def base_url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(self.host, self.host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        await self._runner.cleanup()


async def start_standin(app: web.Application, *, host: str = "127.0.0.1", port: int = 0) -> RunningStandin:
    """Serve ``app`` on the running loop; ``port=0`` picks a free port."""
    # Short shutdown grace: stand-ins hold no state worth finishing requests for.
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return RunningStandin(app=app, host=host, port=bound, _runner=runner)
