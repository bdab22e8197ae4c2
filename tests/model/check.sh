#!/bin/sh
# check.sh: model-checks the notify handoff with spin: handoff.pml must verify clean (safety:
# assertions + no invalid end state; liveness: no lost wake-up under weak fairness), and
# seed_broken.pml must fail both, so this check breaks if the models stop seeing the bug.
set -u
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/ofs-model-XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
status=0

# run MODEL MODE: prints pan's error count (or "fail" if pan did not complete a full search).
run() {
    model=$1 mode=$2
    dir="$work/$model.$mode"
    mkdir -p "$dir" && cp "$here/$model.pml" "$dir/" && cd "$dir" || { echo fail; return; }
    if ! spin -a "$model.pml" >spin.log 2>&1; then
        echo fail
        return
    fi
    case $mode in
    safety) cc=-DSAFETY' '-DNOCLAIM pan_args= ;;
    liveness) cc= pan_args='-a -f -N no_lost_wakeup' ;;
    esac
    # shellcheck disable=SC2086
    if ! gcc -O2 -w $cc -o pan pan.c >gcc.log 2>&1; then
        echo fail
        return
    fi
    # shellcheck disable=SC2086
    ./pan $pan_args >pan.log 2>&1
    if grep -q 'max search depth too small' pan.log; then
        echo fail
        return
    fi
    errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' pan.log | head -n 1)
    echo "${errors:-fail}"
}

expect() {
    model=$1 mode=$2 want=$3
    got=$(run "$model" "$mode")
    case $want:$got in
    clean:0 | bug:[1-9]*) verdict=ok ;;
    *) verdict=FAIL status=1 ;;
    esac
    printf '%-12s %-9s want %-5s errors: %-5s %s\n' "$model" "$mode" "$want" "$got" "$verdict"
    if [ "$verdict" = FAIL ] || [ "$want" = bug ]; then
        grep -m 1 'pan:1:' "$work/$model.$mode/pan.log" 2>/dev/null | sed 's/^/    /'
    fi
    if [ "$verdict" = FAIL ] && [ "$got" = fail ]; then
        cat "$work/$model.$mode/"*.log >&2
    fi
}

command -v spin >/dev/null 2>&1 || { echo "check.sh: spin not found" >&2; exit 1; }
expect handoff safety clean
expect handoff liveness clean
expect seed_broken safety bug
expect seed_broken liveness bug
exit $status
