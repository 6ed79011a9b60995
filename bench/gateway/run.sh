#!/usr/bin/env bash
# The gateway benchmark in one command (see bench/README.md):
#   bash bench/gateway/run.sh [--quick] [--soak 600] [--out FILE] [runner.py options; --help]
# Installs what is missing: wrk, nginx-light and the nginx echo module (Debian
# packages), the project's .venv (make's recipe) when absent, and LiteLLM's
# proxy in its own virtualenv (/tmp/tiergate-bench-litellm, from wheels only).
# If LiteLLM cannot be installed the benchmark runs without it and says so.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
LITELLM_VENV="${BENCH_LITELLM_VENV:-/tmp/tiergate-bench-litellm}"
# 1.82.7 and 1.82.8 were a supply-chain compromise (credential stealer, March
# 2026): pinned to a release from before it; bump deliberately and re-run.
LITELLM_SPEC="${BENCH_LITELLM_SPEC:-litellm[proxy]==1.82.6}"
PY="${BENCH_PYTHON:-python3}"

"$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/debian-packages.sh" \
  wrk=wrk nginx=nginx-light /usr/lib/nginx/modules/ngx_http_echo_module.so=libnginx-mod-http-echo taskset=util-linux

if [ ! -x "$REPO/.venv/bin/tiergate" ]; then
  echo "creating the project's .venv (make venv)" >&2
  make -C "$REPO" venv >&2
fi

skip_litellm=0
for a in "$@"; do [ "$a" = "--no-litellm" ] && skip_litellm=1; done
if [ $skip_litellm = 0 ] && [ ! -x "$LITELLM_VENV/bin/litellm" ]; then
  echo "installing $LITELLM_SPEC into $LITELLM_VENV (wheels only)" >&2
  if ! { "$PY" -m venv "$LITELLM_VENV" \
         && "$LITELLM_VENV/bin/pip" install -q --disable-pip-version-check --only-binary=:all: "$LITELLM_SPEC"; }; then
    echo "LiteLLM could not be installed: the benchmark runs without it" >&2
    rm -rf "$LITELLM_VENV"
  fi
fi
if [ -d "$LITELLM_VENV" ] && ls "$LITELLM_VENV"/lib/python*/site-packages/litellm_init.pth >/dev/null 2>&1; then
  echo "refusing to run: $LITELLM_VENV has litellm_init.pth (the compromised 1.82.7/1.82.8 payload)" >&2
  exit 3
fi

exec "$REPO/.venv/bin/python" "$HERE/runner.py" "$@"
