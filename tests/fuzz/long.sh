#!/usr/bin/env bash
# `make fuzz`: each target in turn for FUZZ_SECONDS (default 600), or FUZZ_RUNS executions,
# on FUZZ_JOBS cores. Prints the executions per target; exits non-zero on any finding.
set -eu
build=$1
src=$2
secs=${FUZZ_SECONDS:-600}
jobs=${FUZZ_JOBS:-1}
status=0
for t in parse config utf7 names; do
    limit="-max_total_time=$secs"
    [ -n "${FUZZ_RUNS:-}" ] && limit="-runs=$FUZZ_RUNS"
    echo "== fuzz_$t ($limit, $jobs jobs)"
    if [ "$jobs" -gt 1 ]; then
        FUZZ_KEEP="$FUZZ_KEEP/$t" bash "$src/tests/fuzz/run.sh" "$build/fuzz_$t" \
            "$src/tests/fuzz/corpus/$t" "$limit" -fork="$jobs" || status=1
    else
        FUZZ_KEEP="$FUZZ_KEEP/$t" bash "$src/tests/fuzz/run.sh" "$build/fuzz_$t" \
            "$src/tests/fuzz/corpus/$t" "$limit" || status=1
    fi
done
exit $status
