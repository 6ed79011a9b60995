"""Install the agent CLIs the e2e tests drive (tests/procs.py NPM_CLIENTS), one after another, before the
tests start: `make test` runs it, so no test spends its time budget, or its neighbours' CPU, on npm.

A test installs its CLI itself when this did not (the same lock and prefix), so a failure here is a warning.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from procs import agent_cli


def main() -> int:
    if shutil.which("npm") is None:
        print("warning: npm is not installed; the e2e tests of the agent CLIs cannot run")
        return 0
    for name in ("claude", "codex", "gemini", "openclaw"):
        t0 = time.monotonic()
        exe, _ = agent_cli(name)
        print(f"agent CLI {name}: {exe} ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
