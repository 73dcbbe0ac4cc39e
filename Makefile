# Everything starts here. As root on Debian 12, `make test` installs what is missing, builds
# BoringSSL once into $(CACHE), builds the project twice (Release with g++; ASan+UBSan and
# libFuzzer with clang) and runs every test.
CACHE ?= /var/cache/nodeward
BORINGSSL_CACHE := $(CACHE)/boringssl
RELEASE_DIR ?= build/release
SANITIZE_DIR ?= build/sanitize
JOBS ?= $(shell nproc)
CTEST_FLAGS ?= --output-on-failure --no-tests=error

.PHONY: all deps boringssl build build-sanitize test test-unit demo bench image format clean

all: build

deps:
	@tools/install-deps.sh

boringssl: deps
	@tools/build-boringssl.sh $(BORINGSSL_CACHE)

$(RELEASE_DIR)/build.ninja: | boringssl
	cmake -G Ninja -S . -B $(RELEASE_DIR) -DCMAKE_BUILD_TYPE=Release \
	  -DNODEWARD_BORINGSSL_DIR=$(BORINGSSL_CACHE)/install

$(SANITIZE_DIR)/build.ninja: | boringssl
	cmake -G Ninja -S . -B $(SANITIZE_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DNODEWARD_SANITIZE=ON \
	  -DNODEWARD_BORINGSSL_DIR=$(BORINGSSL_CACHE)/install

build: boringssl $(RELEASE_DIR)/build.ninja
	cmake --build $(RELEASE_DIR) -j $(JOBS)

build-sanitize: boringssl $(SANITIZE_DIR)/build.ninja
	cmake --build $(SANITIZE_DIR) -j $(JOBS)

test: build build-sanitize
	ctest --test-dir $(SANITIZE_DIR) $(CTEST_FLAGS)
	ctest --test-dir $(RELEASE_DIR) $(CTEST_FLAGS)

# Unit tests only, both flavours: quick, needs no root.
test-unit: build build-sanitize
	ctest --test-dir $(SANITIZE_DIR) $(CTEST_FLAGS) -L unit
	ctest --test-dir $(RELEASE_DIR) $(CTEST_FLAGS) -L unit

# The demo cluster (root): up, its traffic matrix under capture, a table of what happened, down.
demo: build
	$(RELEASE_DIR)/bin/nodeward-sandbox demo sandbox/demo/demo.yaml --bin-dir $(RELEASE_DIR)/bin

# The mesh benchmark (root): nodeward against direct TCP and nginx/HAProxy/stunnel mTLS tunnel
# pairs on a two-node sandbox, medians of RUNS runs, as a table with the targets checked.
bench: build
	bench/mesh/run.sh $(RELEASE_DIR)/bin
	bench/gateway/run.sh $(RELEASE_DIR)/bin

# The nodeward image (deploy/Dockerfile's, made without a registry) in podman.
IMAGE ?= localhost/nodeward:0.1.0
image: build
	deploy/image/build-image.sh $(RELEASE_DIR)/bin $(IMAGE)

format:
	find agent bpf common crypto sds policy sandbox tests bench -name '*.h' -o -name '*.cc' | xargs -r clang-format -i

clean:
	rm -rf build
