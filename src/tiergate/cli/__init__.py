"""The tiergate command: serve | check-config | import-litellm | migrate | keys | report | explain | models |
emergency | sessions | jobs | eval | recommend. One module per group of commands; ``app`` holds the tree."""

from __future__ import annotations

import sys

from tiergate.cli import config, evals, jobs, keys, ops, reports, serve  # noqa: F401  (each adds its commands)
from tiergate.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
