#!/usr/bin/env bash
# Resync over emulated dial-up (56 kbit/s, 300 ms): ofsync vs mbsync, with the physical limit.
# Usage: bench/links.sh [--messages N] [--rate BITS] [--rtt MS]   (OFSYNC_BIN overrides the binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export OFSYNC_BIN=${OFSYNC_BIN:-$here/../build/ofsync}
command -v mbsync >/dev/null || { echo "links.sh: mbsync not found (apt-get install isync)" >&2; exit 1; }
exec python3 "$here/links.py" "$@"
