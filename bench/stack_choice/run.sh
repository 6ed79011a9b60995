#!/usr/bin/env bash
# One command for the HTTP stack choice benchmark (see README.md):
#   bash bench/stack_choice/run.sh [runner.py options, e.g. --rounds 3 --duration 3]
# Installs wrk, nginx and the nginx echo module (Debian packages) when missing,
# builds a separate virtualenv for the candidates (never the project's .venv),
# then runs runner.py, which prints markdown tables.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${STACKBENCH_VENV:-/tmp/stackbench-venv}"
PY="${STACKBENCH_PYTHON:-python3}"

"$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/debian-packages.sh" \
  wrk=wrk nginx=nginx-light /usr/lib/nginx/modules/ngx_http_echo_module.so=libnginx-mod-http-echo taskset=util-linux

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
# candidate 5 only: skipped by runner.py when granian has no wheel here
"$VENV/bin/pip" install -q --disable-pip-version-check --only-binary=:all: granian==2.8.7 \
  || echo "granian could not be installed from a wheel: candidate 5 will be skipped" >&2

exec "$VENV/bin/python" "$HERE/runner.py" "$@"
