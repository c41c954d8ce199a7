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

# The Debian packages, in three sets (`make deps` installs all three; the image's build stage only the
# first, `make deps-build`; what the image runs is derived from what the binary links, deploy/docker):
# building `bulwark` (the library headers it compiles against and the tools that build it) ...
BUILD_PACKAGES := cmake make g++ ccache pkg-config zlib1g-dev \
  libtorch-dev libcli11-dev nlohmann-json3-dev libcpp-httplib-dev libssl-dev \
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc \
  libyaml-cpp-dev libsqlite3-dev libsqlitecpp-dev libpqxx-dev libgloo-dev \
  libpng-dev libjpeg62-turbo-dev libzip-dev libjs-chart.js
# ... building and running the tests and benchmarks (reference fixtures in PyTorch, the sanitizer and
# fuzz builds, the PostgreSQL registry, the report checked in headless Chromium, manifests' schemas) ...
TEST_PACKAGES := clang libclang-rt-dev libgtest-dev libgmock-dev libbenchmark-dev \
  python3-torch python3-numpy python3-torchvision python3-pil python3-jsonschema python3-yaml \
  sqlite3 postgresql prometheus wrk openssl curl chromium dataset-fashion-mnist
# ... and the demo (its dataset, OpenBLAS rather than the reference BLAS, the loop script's tools).
DEMO_PACKAGES := dataset-fashion-mnist libopenblas0-pthread python3 curl
DEB_PACKAGES := $(sort $(BUILD_PACKAGES) $(TEST_PACKAGES) $(DEMO_PACKAGES))

# ccache across precompiled headers (see docs/BUILDING.md).
export CCACHE_SLOPPINESS := pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_MAXSIZE ?= 5G
# Paths under the checkout are hashed relative to it, so a second clone (a clean-clone check, the
# image test's host binary) hits the cache the first one filled.
export CCACHE_BASEDIR ?= $(CURDIR)

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps deps-build build test demo bench fuzz clean base-image image image-test image-push FORCE

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

# Only what building the binary needs (the image's build stage).
deps-build:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(BUILD_PACKAGES)"

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

# The container image (docs/kubernetes.md): built with the first builder that works here (docker
# with a daemon, podman, buildah; BUILDER= to choose), from DEBIAN (a Debian 12 image; by default
# localhost/debian:12 if `make base-image` made it, else debian:12-slim pulled, else base-image is
# made first, with debootstrap, for machines that cannot pull). Not part of
# `make test`: image-test builds the image, then serves a signed model from inside it.
IMAGE      ?= localhost/bulwark:$(shell awk -F'VERSION ' '/^project/ {split($$2, v, " "); print v[1]}' CMakeLists.txt 2>/dev/null)
DEBIAN     ?=
BUILDER    ?=
IMAGE_DIR  ?= $(BUILD)/image
export IMAGE DEBIAN BUILDER IMAGE_DIR

base-image:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="debootstrap podman buildah"
	./deploy/docker/image.sh base

image:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="buildah podman debootstrap"
	./deploy/docker/image.sh build

# make image-push IMAGE_DEST=registry.example.com/ml/bulwark:0.1.0: build/image/pushed-digest is
# then the digest to pin (bulwark deploy render --image-digest build/image/pushed-digest).
IMAGE_DEST ?=
image-push:
	./deploy/docker/image.sh push "$(IMAGE_DEST)"

# image-test's client side: grpcio and protoc's Python messages, ss (iproute2).
IMAGE_TEST_PACKAGES := python3-grpcio python3-protobuf protobuf-compiler iproute2 curl

# The host binary only (image-test compares the image's answers with it), not the tests.
$(BUILD)/bulwark: deps $(BUILD)/Makefile FORCE
	cmake --build $(BUILD) --target bulwark -j$(JOBS)
FORCE:

image-test: image $(BUILD)/bulwark
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(IMAGE_TEST_PACKAGES)"
	./deploy/docker/image.sh test $(BUILD)/bulwark
