#!/usr/bin/env bash
# `make demo`: a private Dovecot with a few hundred sample messages, a first ofsync sync into
# ./demo/Mail, what landed per folder, and a second sync that has nothing to do.
set -euo pipefail

cd "$(dirname "$0")/.."
OFSYNC=${OFSYNC_BIN:-build/ofsync}
PY=(python3 scripts/dovecot.py)
USER_NAME=alice

if [ ! -x "$OFSYNC" ]; then
    echo "demo: $OFSYNC is not built (run make first, or set OFSYNC_BIN)" >&2
    exit 1
fi
case "$OFSYNC" in /*) ;; *) OFSYNC="$PWD/$OFSYNC" ;; esac

DIR=""
cleanup() {
    if [ -n "$DIR" ]; then
        "${PY[@]}" stop "$DIR" || echo "demo: could not stop the Dovecot in $DIR" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

step() { printf '\n== %s\n' "$*"; }

rm -rf demo
mkdir -p demo

step "starting a private Dovecot on 127.0.0.1 (nothing from /etc/dovecot)"
DIR=$("${PY[@]}" start --caps full)
echo "instance: $DIR"
"${PY[@]}" populate "$DIR" "$USER_NAME" --seed 42 \
    --spec "INBOX=150,Archive=60,Archive/2022=90,Lists/dev=70,Sent=40"
"${PY[@]}" counts "$DIR" "$USER_NAME"
"${PY[@]}" config "$DIR" "$USER_NAME" --local demo/Mail --state demo/state.db \
    --out demo/config >/dev/null
echo
echo "demo/config:"
sed 's/^/  /' demo/config

step "ofsync --config demo/config sync   (first sync)"
"$OFSYNC" --config demo/config sync

step "what landed in demo/Mail"
"${PY[@]}" tree demo/Mail --paths
"${PY[@]}" compare "$DIR" "$USER_NAME" demo/Mail

step "ofsync --config demo/config sync   (again: nothing to do)"
"$OFSYNC" --config demo/config sync

echo
echo "demo: done; the mail stays in demo/Mail (the server is stopped now)"
