# Bulwark — two commands on a fresh Debian machine: `make demo` and `make test`.
# Each installs (make deps) and builds (make build) what it needs first.

# make test SAN=1: the whole suite under ASan + UBSan, in a build tree of its own (docs/security.md).
SAN      ?= 0
ifeq ($(SAN),1)
BUILD    ?= build/san
CMAKE_ARGS := -DCMAKE_BUILD_TYPE=Sanitize -DBULWARK_SANITIZE=ON -DBULWARK_BENCH=OFF -DBULWARK_FUZZ_SMOKE=OFF
else
BUILD    ?= build
CMAKE_ARGS := -DCMAKE_BUILD_TYPE=Release
endif
JOBS     ?= 2
DEMO_DIR ?= $(BUILD)/demo
# make fuzz: the clang build of the fuzz targets (fuzz/README.md), seconds per target, which ones.
FUZZ_BUILD   ?= $(BUILD)/clang-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
FUZZ_RUNS    ?=

# Every Debian package the project needs to build, test, benchmark and run its demo.
DEB_PACKAGES := cmake make g++ clang libclang-rt-dev ccache pkg-config zlib1g-dev \
  libtorch-dev python3-torch python3-numpy libopenblas0-pthread dataset-fashion-mnist \
  libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev \
  libcpp-httplib-dev libssl-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc \
  libyaml-cpp-dev libsqlite3-dev libsqlitecpp-dev sqlite3 libpqxx-dev postgresql libgloo-dev \
  prometheus wrk openssl curl libjs-chart.js chromium \
  python3-jsonschema python3-yaml \
  libpng-dev libjpeg62-turbo-dev libzip-dev python3-torchvision python3-pil

# ccache across precompiled headers (see docs/BUILDING.md).
export CCACHE_SLOPPINESS := pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_MAXSIZE ?= 5G

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test demo bench fuzz clean

all: build

# What only `make bench` needs besides: ART's imports (bench/pgd_peers.py).
BENCH_PACKAGES := python3-scipy python3-sklearn python3-tqdm

deps:
	@missing=""; \
	for p in $(DEB_PACKAGES) $(EXTRA_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "make deps: all $(words $(DEB_PACKAGES) $(EXTRA_PACKAGES)) Debian packages present"; fi

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) $(CMAKE_ARGS)

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j$(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

demo: build
	./scripts/demo.sh $(BUILD)/bulwark $(DEMO_DIR)

bench: build
	@$(MAKE) --no-print-directory deps EXTRA_PACKAGES="$(BENCH_PACKAGES)"
	./scripts/bench.sh $(BUILD)

# Each target for FUZZ_SECONDS (or FUZZ_RUNS executions, whichever comes first), one after another; new inputs stay in $(FUZZ_BUILD)/corpus/.
fuzz: deps
	fuzz/fuzz.sh build $(FUZZ_BUILD) $(JOBS)
	FUZZ_RUNS=$(FUZZ_RUNS) fuzz/fuzz.sh run $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

clean:
	rm -rf $(BUILD)
