#!/usr/bin/env bash
# Runs one libFuzzer target over its checked-in corpus for a bounded time. New inputs go to a
# scratch dir (the repo corpus stays as it is); a crash leaves its input in $FUZZ_ARTIFACTS.
# usage: run.sh FUZZER CORPUS_DIR [libFuzzer options...]
set -eu
fuzzer=$1
corpus=$2
shift 2
scratch=${FUZZ_KEEP:-$(mktemp -d)}
mkdir -p "$scratch"
artifacts=${FUZZ_ARTIFACTS:-$(dirname "$fuzzer")/fuzz-artifacts}
mkdir -p "$artifacts"
cleanup() { [ -n "${FUZZ_KEEP:-}" ] || rm -rf "$scratch"; }
trap cleanup EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# -rss_limit_mb and -malloc_limit_mb catch unbounded memory; -max_len keeps inputs small
# enough to be fast but over every interesting boundary (lines of a few KiB).
"$fuzzer" "$scratch" "$corpus" -artifact_prefix="$artifacts/" -rss_limit_mb=1024 \
    -malloc_limit_mb=512 -max_len=8192 -timeout=10 -print_final_stats=1 "$@" 2>&1 |
    grep -E "^(#[0-9]+ *(DONE|INITED)|stat::number_of_executed_units|==[0-9]+==|SUMMARY|Test unit|artifact|INFO: Running|.*ERROR)" || true
test "${PIPESTATUS[0]}" -eq 0
