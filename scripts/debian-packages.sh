#!/usr/bin/env bash
# Install the Debian packages a command needs, only those missing.
#   scripts/debian-packages.sh CHECK=PACKAGE ...
# CHECK is a command name (looked up on PATH) or an absolute file path.
# Exits 2 when something is missing and this is not root (nothing installed).
set -euo pipefail
missing=()
for spec in "$@"; do
  check="${spec%%=*}"
  pkg="${spec#*=}"
  if [[ "$check" == /* ]]; then
    [ -e "$check" ] || missing+=("$pkg")
  else
    command -v "$check" >/dev/null || missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${missing[*]} (install them as root)" >&2
  exit 2
fi
echo "installing Debian packages: ${missing[*]}" >&2
apt-get update -qq
# a package may start its own system service (nginx on port 80, haproxy): not ours, left alone
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
