# headfuse: the two commands of the README, and a few more.
#   make demo   set up, build, and run the main job on an embedded default model
#   make test   set up, build, and pass the tests (then again under ASan+UBSan, SANITIZE_SKIP aside)
BUILD ?= build
BUILD_SAN ?= build-san
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
# Compiler warnings are errors in CI (which sets CI=true); WERROR=ON asks for it anywhere.
WERROR ?= $(if $(CI),ON,OFF)

.PHONY: all setup build demo test test-fast test-sanitize format format-check bench fuzz install clean

all: build

setup:
	@scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DHEADFUSE_WERROR=$(WERROR) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

demo: build
	@scripts/demo.sh $(BUILD)

test: format-check test-fast test-sanitize

# The house style (.clang-format): `make format` applies it, `make format-check` fails on any difference.
format:
	@git ls-files '*.h' '*.cpp' | xargs clang-format -i

format-check: setup
	@git ls-files '*.h' '*.cpp' | xargs clang-format --dry-run -Werror

test-fast: build
	@ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

# The suite again under AddressSanitizer and UndefinedBehaviorSanitizer, but for the tests whose time goes to
# llama.cpp (Node.js, or libllama's quantizer, neither instrumented) or to measuring scaling, and whose headfuse
# code runs under the sanitizers in other tests: the encoders in EncodeRow/EncodeNewTypes/DecodeEveryType, the
# fuse paths in ShapeTest, parsing in Corrupt/FuzzReplay, export in TokenizerFiles and the llama2 round trip.
SANITIZE_SKIP ?= ^(Types/JudgeType|Families/JudgeShape|Shapes/KQuantFiles|HostileScale|VocabRulesJudged|WeightTypeMixes|Shipped/TokenizerFilesRoundTrip.*llama3)
# -O1 -g1 (line tables, enough for the sanitizers' reports): compiles in about 60% of the time -O2 -g takes.
SANITIZE_FLAGS ?= "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG"
test-sanitize: setup
	@cmake -S . -B $(BUILD_SAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(SANITIZE_FLAGS) -DHEADFUSE_BUILD_BENCH=OFF \
	  -DHEADFUSE_SANITIZE="address;undefined" -DHEADFUSE_WERROR=$(WERROR) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_SAN) -j$(JOBS)
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --test-dir $(BUILD_SAN) --output-on-failure -j$(JOBS) -LE no-sanitize -E '$(SANITIZE_SKIP)'

bench: build
	@bench/run.sh $(BUILD)

fuzz: setup
	@CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHEADFUSE_BUILD_FUZZ=ON \
	  -DHEADFUSE_BUILD_TESTS=OFF -DHEADFUSE_BUILD_BENCH=OFF >/dev/null
	@cmake --build build-fuzz -j$(JOBS)

install: build
	@cmake --install $(BUILD)

clean:
	@rm -rf $(BUILD) $(BUILD_SAN) build-fuzz
