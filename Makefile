# Thin wrapper over CMake: the two commands a user needs are `make demo` and `make test`.
# Everything else (build dirs, sanitizer build) lives here so .ci/run stays one line.

BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_FUZZ ?= build-fuzz
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all deps build build-asan build-fuzz test test-unit demo bench bench-links bench-rss clean format torture faults fuzz

all: build

deps:
	@bash scripts/deps.sh

build:
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) -DOFS_WERROR=$(if $(CI),ON,OFF) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan:
	@cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DOFS_SANITIZE=ON -DOFS_WERROR=$(if $(CI),ON,OFF) >/dev/null
	@cmake --build $(BUILD_ASAN) -j $(JOBS)

# clang build with the libFuzzer targets; its tests are short fuzz runs and the static checks.
build-fuzz:
	@CC=clang cmake -S . -B $(BUILD_FUZZ) -DCMAKE_BUILD_TYPE=Debug -DOFS_FUZZ=ON -DOFS_WERROR=$(if $(CI),ON,OFF) >/dev/null
	@cmake --build $(BUILD_FUZZ) -j $(JOBS)

# Runs the whole suite twice (plain build, then ASan+UBSan), then the fuzz targets for a few
# seconds each and the static checks; ends with "N passed, N failed".
test: deps
	@$(MAKE) --no-print-directory build CMAKE_FLAGS="$(CMAKE_FLAGS)" CI=1
	@$(MAKE) --no-print-directory build-asan CI=1
	@$(MAKE) --no-print-directory build-fuzz CI=1
	@bash scripts/run-tests.sh $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)

# Long fuzzing: FUZZ_SECONDS per target (default 600) or FUZZ_RUNS executions, FUZZ_JOBS cores.
fuzz: deps build-fuzz
	@cmake --build $(BUILD_FUZZ) --target fuzz-long

# 1,000 kill points per capability set (tests/torture); prints "kill points: N, lost: 0, ...".
TORTURE_KILLS ?= 1000
torture: deps build
	@for caps in full plain; do \
	  OFSYNC_BIN=$(BUILD)/ofsync OFS_TEST_CAPS=$$caps python3 tests/torture/torture.py \
	    --kills $(TORTURE_KILLS) || exit 1; \
	done

# 1,000 seeded link faults (stalls, cuts, latency spikes) across sync rounds; ends with
# "faults: N, survived: N, lost: 0, duplicated: 0". FAULTS=N and FAULT_SEED=S to vary.
FAULTS ?= 1000
FAULT_SEED ?= 1
faults: build
	@OFSYNC_BIN=$(BUILD)/ofsync python3 tests/links/faults.py --faults $(FAULTS) --seed $(FAULT_SEED)

# Resync over emulated dial-up (linkem, 56 kbit/s, 300 ms) against mbsync, with the link's limit.
bench-links: build
	@OFSYNC_BIN=$(BUILD)/ofsync bash bench/links.sh

demo: deps build
	@OFSYNC_BIN=$(BUILD)/ofsync bash scripts/demo.sh

# Side by side with mbsync on private Dovecot data (bench/RESULTS.md). BENCH_SIZES=10000,100000
BENCH_SIZES ?= 10000
BENCH_PAIRS ?= 3
bench: deps
	@command -v mbsync >/dev/null && [ -x /usr/bin/time ] || { echo "installing isync (mbsync) and time"; DEBIAN_FRONTEND=noninteractive apt-get install -y isync time >/dev/null; }
	@$(MAKE) --no-print-directory build CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Release"
	@python3 bench/bench.py --ofsync $(BUILD)/ofsync --sizes $(BENCH_SIZES) --pairs $(BENCH_PAIRS)

# ofsync alone, peak RSS per scenario on the 100,000-message bench data (RESULTS.md).
RSS_SIZE ?= 100000
RSS_CONNECTIONS ?= 4
bench-rss: deps
	@[ -x /usr/bin/time ] || DEBIAN_FRONTEND=noninteractive apt-get install -y time >/dev/null
	@$(MAKE) --no-print-directory build CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Release"
	@python3 bench/rss.py --ofsync $(BUILD)/ofsync --size $(RSS_SIZE) --connections $(RSS_CONNECTIONS)

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ) demo
