#!/bin/sh
# Installs the Debian 12 packages that `make test` and `make demo` need, and only those missing.
# Idempotent and quiet; never starts or disturbs the system Dovecot service.
set -eu

PKGS="build-essential cmake pkg-config libsqlite3-dev libssl-dev zlib1g-dev libcmocka-dev
python3 dovecot-core dovecot-imapd clang spin tmux libclang-rt-14-dev clang-tidy clang-format cppcheck openssl"

missing=""
for p in $PKGS; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = "installed" ] || missing="$missing $p"
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing Debian packages:$missing" >&2
    echo "deps.sh: run as root (sudo scripts/deps.sh) or install them yourself" >&2
    exit 1
fi

# A policy-rc.d that exits 101 stops the packages' maintainer scripts from starting the
# system dovecot service; only ours is removed afterwards, never one the admin put there.
POLICY=/usr/sbin/policy-rc.d
own_policy=0
cleanup() {
    if [ "$own_policy" -eq 1 ]; then
        rm -f "$POLICY"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 0755 "$POLICY"
    own_policy=1
fi

export DEBIAN_FRONTEND=noninteractive
echo "deps.sh: installing:$missing"
apt-get update -qq </dev/null
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    $missing </dev/null >/dev/null
