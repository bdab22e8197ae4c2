#!/usr/bin/env bash
# Runs ctest in each build directory given and prints one closing line: "N passed, N failed".
# Sanitizer runs abort on the first finding so that a leak or UB is a failed test, not a warning.
set -u
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
jobs=${TEST_JOBS:-2}
passed=0
failed=0
for dir in "$@"; do
    echo "== ctest in $dir"
    log=$(mktemp)
    ctest --test-dir "$dir" --output-on-failure -j "$jobs" 2>&1 | tee "$log"
    total=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\2/p' "$log" | tail -1)
    fails=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -1)
    rm -f "$log"
    if [ -z "$total" ]; then
        echo "ctest in $dir did not report a summary"
        failed=$((failed + 1))
        continue
    fi
    passed=$((passed + total - fails))
    failed=$((failed + fails))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
