#!/usr/bin/env bash
# Static checks run as tests: cppcheck (flags below), clang-tidy (.clang-tidy) and clang-format
# (.clang-format), over src/ and the fuzz harnesses (format: all C sources). Any finding fails.
# usage: static-check.sh cppcheck|clang-tidy|clang-format BUILD_DIR
set -eu
tool=$1
build=$2
cd "$(dirname "$0")/.."
files=$(ls src/*/*.c tests/fuzz/*.c)
case "$tool" in
cppcheck)
    # --inline-suppr: a justified `// cppcheck-suppress id` next to the line is the only way out.
    exec cppcheck -q --std=c11 --enable=warning,performance,portability --inline-suppr \
        --error-exitcode=1 -D_GNU_SOURCE -Iinclude -Isrc $files
    ;;
clang-tidy)
    tidy=$(command -v clang-tidy || command -v clang-tidy-14)
    out=$(printf "%s\n" $files | xargs -P "$(nproc)" -n 4 "$tidy" -p "$build" --quiet 2>/dev/null || true)
    if [ -n "$out" ]; then
        printf '%s\n' "$out"
        exit 1
    fi
    echo "clang-tidy: $(echo "$files" | wc -w) files clean"
    ;;
clang-format)
    # The checked-in .clang-format is the style; `make format` applies it.
    all=$(ls include/*.h src/*/*.[ch] tests/unit/*.[ch] tests/fuzz/*.c tests/stress/*.c examples/*.c 2>/dev/null)
    clang-format --dry-run -Werror $all
    echo "clang-format: $(echo "$all" | wc -w) files clean"
    ;;
*)
    echo "usage: $0 cppcheck|clang-tidy|clang-format BUILD_DIR" >&2
    exit 2
    ;;
esac
