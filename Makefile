# headfuse: the two commands of the README, and a few more.
#   make demo    set up, build the CLI alone, and run the main job on an embedded default model
#   make test    set up, check the format, build everything, and pass every test once: those labelled judge, slow or
#                install (tests/CMakeLists.txt) in the Release build, the unit and robustness tests under
#                ASan+UBSan; prints its time
#   make check   the unit-labelled tests in the Release build: the quick loop while editing
#   make test-fast   every test in the Release build
BUILD ?= build
BUILD_SAN ?= build-san
JOBS ?= $(shell nproc)
# Tests run two per core: they wait on their subprocesses, on fsync and on Node.js starting, so ctest -j2 leaves a
# 2-core machine idle 8% of the time (the Release tests: 323 s at -j2, 296 s at -j4, the same build side by side).
# The tests that measure time measure CPU time.
TEST_JOBS ?= $(shell echo $$((2 * $$(nproc))))
CMAKE_FLAGS ?=
# Compiler warnings are errors in CI (which sets CI=true); WERROR=ON asks for it anywhere.
WERROR ?= $(if $(CI),ON,OFF)
# A new build folder is configured for Ninja, which starts compiling a target's files while the targets it links
# are still linking (the Makefile generator waits for them, one core idle at each step); a folder already
# configured keeps its generator.
generator = $(if $(wildcard $(1)/CMakeCache.txt),,-G Ninja)

.PHONY: all setup configure build demo check test test-fast test-release test-sanitize format format-check bench fuzz \
	install clean

all: build

setup:
	@scripts/setup.sh

configure: setup
	@cmake $(call generator,$(BUILD)) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DHEADFUSE_WERROR=$(WERROR) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j$(JOBS)

# The demo runs the CLI alone: neither the tests nor the benchmark are compiled for it.
demo: configure
	@cmake --build $(BUILD) -j$(JOBS) --target headfuse_cli
	@scripts/demo.sh $(BUILD)

# The test programs of the unit tests and the CLI (not the benchmark or the example), then the tests labelled unit.
check: configure
	@cmake --build $(BUILD) -j$(JOBS) --target headfuse_tests_unit
	@ctest --test-dir $(BUILD) --output-on-failure -j$(TEST_JOBS) -L '^unit$$'

# The README's full command; its wall time is the last line it prints, whether it passes or fails.
test:
	@start=$$(date +%s); $(MAKE) --no-print-directory format-check test-release test-sanitize; status=$$?; \
	  t=$$(($$(date +%s) - start)); [ $$status -eq 0 ] && verdict=passed || verdict=FAILED; \
	  echo "make test: $$verdict in $$((t / 60)) min $$((t % 60)) s"; exit $$status

# The house style (.clang-format): `make format` applies it, `make format-check` fails on any difference.
format:
	@git ls-files '*.h' '*.cpp' | xargs clang-format -i

format-check: setup
	@git ls-files '*.h' '*.cpp' | xargs clang-format --dry-run -Werror

test-fast: build
	@cmake --build $(BUILD) -j$(JOBS) --target headfuse_tests
	@ctest --test-dir $(BUILD) --output-on-failure -j$(TEST_JOBS)

# make test's Release half: the labels the sanitizer build leaves out. The unit and robustness tests run under the
# sanitizers instead, where a memory error in what they exercise is found (make check runs the unit tests here).
# `all` (the library, the CLI, the benchmark and the example), then only the test programs holding tests of those
# labels, one label at a time (a folder configured for the Makefile generator is not safe with several targets in
# one parallel build).
test-release: build
	@for label in $(subst ;, ,$(SANITIZE_SKIP_LABELS)); do \
	  cmake --build $(BUILD) -j$(JOBS) --target headfuse_tests_$$label || exit 1; done
	@ctest --test-dir $(BUILD) --output-on-failure -j$(TEST_JOBS) -L '^($(subst ;,|,$(SANITIZE_SKIP_LABELS)))$$'

# The tests again under AddressSanitizer and UndefinedBehaviorSanitizer, but for three labels
# (tests/CMakeLists.txt), whose tests this build leaves out: judge (the time goes to Node.js or libllama, neither
# instrumented), slow (measures time, which the sanitizers distort) and install (packaging, not memory safety; an
# instrumented library needs an instrumented consumer).
SANITIZE_SKIP_LABELS ?= judge;slow;install
# The library at -O1 without debug information (its parsers and converters and the CLI at -O0: CMakeLists.txt,
# HEADFUSE_SANITIZE_O0_SOURCES): a report names the functions of its stack, and UBSan's
# the source line (it records its own); add -g1 for ASan's lines (SANITIZE_FLAGS). -g1 costs 15-30% more compile
# time (src/formats/import.cpp: 20-22 s of CPU at -g0, 24-29 s at -g1). The test programs' own code at -O0 -g0
# under AddressSanitizer alone: what they read of the library's results (views, spans, buffers) is checked, while
# the library, the CLI and tests/support/ carry both sanitizers. UBSan's checks of the tests' own arithmetic cost
# 60% more compile time for code that is not shipped (test_tokenizer.cpp: 15 s of CPU with ASan, 24.5 s with both).
SANITIZE_FLAGS ?= "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g0 -DNDEBUG" "-DHEADFUSE_TEST_OPTIONS=-O0;-g0;-fno-sanitize=undefined"
test-sanitize: setup
	@cmake $(call generator,$(BUILD_SAN)) -S . -B $(BUILD_SAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(SANITIZE_FLAGS) -DHEADFUSE_BUILD_BENCH=OFF \
	  -DHEADFUSE_BUILD_EXAMPLES=OFF -DHEADFUSE_SANITIZE="address;undefined" -DHEADFUSE_WERROR=$(WERROR) \
	  "-DHEADFUSE_TEST_SKIP_LABELS=$(SANITIZE_SKIP_LABELS)" $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_SAN) -j$(JOBS) --target headfuse_tests
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --test-dir $(BUILD_SAN) --output-on-failure -j$(TEST_JOBS)

bench: build
	@bench/run.sh $(BUILD)

fuzz:
	@scripts/setup.sh clang
	@CXX=clang++ cmake $(call generator,build-fuzz) -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHEADFUSE_BUILD_FUZZ=ON \
	  -DHEADFUSE_BUILD_TESTS=OFF -DHEADFUSE_BUILD_BENCH=OFF >/dev/null
	@cmake --build build-fuzz -j$(JOBS)

install: build
	@cmake --install $(BUILD)

clean:
	@rm -rf $(BUILD) $(BUILD_SAN) build-fuzz
