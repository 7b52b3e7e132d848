# The single entry point for epsync development. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := $(CURDIR)/.tools/bin
GRPCURL_VERSION := v1.9.3
GHZ_VERSION := v0.120.0
# buf (lint, breaking, Go generation) and the Go generators, from the Go module proxy.
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
# staticcheck for the Go client (make lint), from the Go module proxy.
STATICCHECK_VERSION := v0.8.2
# Coverage-guided fuzzing of the Rust core needs a nightly compiler (sanitizers) and cargo-fuzz.
FUZZ_NIGHTLY := nightly-2026-05-20
CARGO_FUZZ_VERSION := 0.13.1
FUZZ_SECONDS ?= 600
# `make proto-breaking` compares the protos with this git ref's (the last release; no tags yet).
PROTO_BASELINE ?= 8d8b92c
# etcd for the etcd datastore and its tests: Debian bookworm's etcd-server package, unpacked without root.
ETCD_DEB_VERSION := 3.4.23-4+b4
# The etcd v3 API protos vendored in proto/epsync/etcd/v3 (`make etcd-protos`); 3.5, the nearest to the server.
ETCD_API_VERSION := v3.5.35
ADDR ?= 127.0.0.1:50051
DATA_DIR ?= ./data
CRASH_ROUNDS ?= 100
FUZZ_EXAMPLES ?= 20000
PROTOS := $(wildcard proto/epsync/v1/*.proto) $(wildcard proto/epsync/etcd/v3/*.proto) $(wildcard proto/epsync/internal/v1/*.proto)
PROTO_OUT ?= pysrc
# Where buf generate writes the Go code: clients/go/epsyncv1 under it.
GO_PROTO_OUT ?= .
GO_PROTO_TOOLS := $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
# google/rpc/*.proto, shipped inside the pinned googleapis-common-protos package.
GOOGLEAPIS_PROTOS = $(shell $(BIN)/python -c 'import google.rpc, pathlib; print(pathlib.Path(google.rpc.__path__[0]).parent.parent)')
RUST_SOURCES := $(shell find rust/src -name '*.rs') rust/Cargo.toml Cargo.toml
PY_BUILD_STAMP := $(VENV)/.epsync-built

export PATH := $(TOOLS):$(CURDIR)/$(BIN):$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(VENV)/.deps-installed: requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.txt
	touch $@

$(PY_BUILD_STAMP): $(VENV)/.deps-installed $(RUST_SOURCES) pyproject.toml
	$(BIN)/maturin develop --release --quiet
	touch $@

.PHONY: build
build: $(PY_BUILD_STAMP) ## create the venv, install pinned deps, build the Rust extension

$(TOOLS)/grpcurl:
	GOBIN=$(TOOLS) GOFLAGS=-mod=mod go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

$(TOOLS)/ghz:
	GOBIN=$(TOOLS) GOFLAGS=-mod=mod go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

$(TOOLS)/buf:
	GOBIN=$(TOOLS) GOFLAGS=-mod=mod go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) GOFLAGS=-mod=mod go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) GOFLAGS=-mod=mod go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) GOFLAGS=-mod=mod go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: tools
tools: $(TOOLS)/grpcurl $(TOOLS)/ghz $(GO_PROTO_TOOLS) $(TOOLS)/staticcheck ## install the Go tools the tests use (grpcurl, ghz, buf, the Go generators, staticcheck), pinned

# `apt-get download` needs no root, only the package lists; when they lack the package, root refreshes them.
$(TOOLS)/etcd:
	rm -rf .tools/etcd && mkdir -p .tools/etcd $(TOOLS)
	cd .tools/etcd && { apt-get download -q etcd-server=$(ETCD_DEB_VERSION) \
		|| { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get download -q etcd-server=$(ETCD_DEB_VERSION); } \
		|| { echo "cannot download etcd-server=$(ETCD_DEB_VERSION): run 'apt-get update' as root" >&2; exit 1; }; }
	dpkg-deb -x .tools/etcd/etcd-server_*.deb .tools/etcd/root
	.tools/etcd/root/usr/bin/etcd --version | head -1
	ln -sf ../etcd/root/usr/bin/etcd $@

.PHONY: etcd
etcd: $(TOOLS)/etcd ## install etcd $(ETCD_DEB_VERSION) into .tools/bin from Debian's etcd-server package (no root)

.PHONY: etcd-protos
etcd-protos: $(VENV)/.deps-installed ## re-vendor etcd's v3 API protos ($(ETCD_API_VERSION)) into proto/, then `make proto`
	$(BIN)/python scripts/vendor_etcd_protos.py $(ETCD_API_VERSION)
	$(MAKE) --no-print-directory proto

.PHONY: run
run: build ## start the server on the embedded store ($(ADDR), data in $(DATA_DIR))
	$(BIN)/epsync serve --listen $(ADDR) --data-dir $(DATA_DIR)

.PHONY: proto
proto: $(VENV)/.deps-installed $(GO_PROTO_TOOLS) ## regenerate the checked-in Python (PROTO_OUT=pysrc) and Go (clients/go/epsyncv1) code
	$(BIN)/python -m grpc_tools.protoc -Iproto -I$(GOOGLEAPIS_PROTOS) \
		--python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		--mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) $(PROTOS)
	$(TOOLS)/buf generate -o $(GO_PROTO_OUT)

.PHONY: proto-lint
proto-lint: $(TOOLS)/buf ## buf lint (STANDARD and COMMENTS; the exceptions are justified in buf.yaml)
	$(TOOLS)/buf lint

.PHONY: proto-breaking
# The baseline's proto/ from git (the full history is needed), with today's buf.yaml and third_party/proto,
# which that commit predates.
proto-breaking: $(TOOLS)/buf ## buf breaking (WIRE_JSON): the API against the protos of PROTO_BASELINE ($(PROTO_BASELINE))
	rm -rf .tools/proto-baseline && mkdir -p .tools/proto-baseline
	git archive $(PROTO_BASELINE) proto | tar -x -C .tools/proto-baseline
	cp -r buf.yaml third_party .tools/proto-baseline/
	$(TOOLS)/buf breaking --against .tools/proto-baseline

.PHONY: test
# The Go tests run with -count=1: they drive the Python server, whose changes Go's test cache cannot see.
test: build tools etcd $(TOOLS)/cargo-fuzz ## all set-up, then every test (cargo test, pytest, Go, and the load test at tiny sizes)
	cargo test --manifest-path rust/Cargo.toml --quiet
	$(BIN)/pytest --deselect tests/loadtest/test_smoke.py
	cd clients/go && EPSYNC_PYTHON=$(CURDIR)/$(BIN)/python go test -count=1 ./...
	cd bench/agents && go test -count=1 ./...
	$(MAKE) --no-print-directory fuzz-rust FUZZ_SECONDS=10
	$(MAKE) --no-print-directory bench-smoke

.PHONY: bench
bench: build etcd ## the load test: epsync against etcd and a raw gRPC server (under 15 min); results in bench/results/ (bench/README.md)
	$(BIN)/python -m bench.loadtest $(BENCH_ARGS)

.PHONY: test-crash
# make test runs the same test at 3 rounds.
test-crash: build ## kill -9 the server at random moments under write load, CRASH_ROUNDS rounds (default 100, a few minutes): no acknowledged write lost
	EPSYNC_CRASH_ROUNDS=$(CRASH_ROUNDS) $(BIN)/pytest -q -s tests/test_crash.py

.PHONY: fuzz
# make test runs the same fuzzers briefly (300 inputs a test, the Rust property tests, 10 s of each cargo-fuzz target).
fuzz: build $(TOOLS)/cargo-fuzz ## fuzz requests against a real server (FUZZ_EXAMPLES inputs a test, default 20000) and the Rust core with cargo-fuzz (FUZZ_SECONDS a target, default 600)
	EPSYNC_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q tests/test_fuzz_requests.py
	PROPTEST_CASES=$(FUZZ_EXAMPLES) cargo test --manifest-path rust/Cargo.toml --quiet never_panics
	$(MAKE) --no-print-directory fuzz-rust FUZZ_SECONDS=$(FUZZ_SECONDS)

# Each target of rust/fuzz for FUZZ_SECONDS, from its seeds and the corpus earlier runs grew. A failure
# stops with the input in rust/fuzz/artifacts/<target>/: fix the bug, then copy the input into
# rust/fuzz/regressions/<target>/, which `cargo test` replays on the stable toolchain from then on.
.PHONY: fuzz-rust
fuzz-rust: $(TOOLS)/cargo-fuzz ## coverage-guided fuzzing of the selector parser and endpoint validation, FUZZ_SECONDS each
	for target in selector endpoint; do \
		mkdir -p rust/fuzz/corpus/$$target && \
		(cd rust && RUSTUP_TOOLCHAIN=$(FUZZ_NIGHTLY) $(TOOLS)/cargo-fuzz fuzz run $$target \
			fuzz/corpus/$$target fuzz/seeds/$$target -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096) || exit 1; \
	done

$(TOOLS)/cargo-fuzz:
	rustup toolchain install $(FUZZ_NIGHTLY) --profile minimal
	cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked --root .tools

.PHONY: bench-scale
bench-scale: build etcd ## 10,000 node watchers over 500,000 endpoints, epsync against etcd (under 20 min); results in bench/results/scale/
	$(BIN)/python -m bench.loadtest --scale $(BENCH_ARGS)

.PHONY: bench-smoke
bench-smoke: build etcd ## the load test at tiny sizes, every scenario, checked, its summary printed (about a minute; part of make test)
	$(BIN)/pytest -q tests/loadtest/test_smoke.py

.PHONY: bench-micro
bench-micro: build etcd ## the component benchmarks: datastore writes, List, the Rust fan-out core, the write path, validation
	$(BIN)/python -m bench.bench_store
	$(BIN)/python -m bench.bench_store --backend etcd
	$(BIN)/python -m bench.bench_list
	$(BIN)/python -m bench.bench_fanout
	$(BIN)/python -m bench.bench_apply
	$(BIN)/python -m bench.bench_writes
	$(BIN)/python -m bench.bench_validation

.PHONY: lint
lint: build $(TOOLS)/buf $(TOOLS)/staticcheck ## ruff, mypy (strict), stubtest, cargo fmt --check, clippy, buf lint and breaking, go vet, staticcheck
	$(BIN)/ruff check pysrc tests bench
	$(BIN)/ruff format --check pysrc tests bench
	$(BIN)/mypy
	$(BIN)/mypy tests bench
	$(BIN)/python -m mypy.stubtest epsync._core
	cargo fmt --manifest-path rust/Cargo.toml --check
	cargo clippy --manifest-path rust/Cargo.toml --all-targets -- -D warnings
	$(TOOLS)/buf lint
	$(MAKE) --no-print-directory proto-breaking
	cd clients/go && go vet ./...
	cd clients/go && $(TOOLS)/staticcheck ./...
	cd bench/agents && go vet ./... && $(TOOLS)/staticcheck ./...

# Left to `make test`: tests marked slow, and by path the slow files of other layers (the store's model-based
# test, the replicas' property test, the load test at tiny sizes).
CHECK_SKIP := tests/store/test_store_model.py tests/test_cluster_property.py tests/loadtest/test_smoke.py

.PHONY: check
check: lint tools etcd ## lint and the fast tests (under 3 minutes): the edit loop; `make test` runs everything
	$(BIN)/pytest -q -m "not slow" $(addprefix --ignore=,$(CHECK_SKIP))

.PHONY: format
format: $(VENV)/.deps-installed ## apply ruff and cargo fmt
	$(BIN)/ruff check --fix pysrc tests bench
	$(BIN)/ruff format pysrc tests bench
	cargo fmt --manifest-path rust/Cargo.toml

.PHONY: lock
lock: ## re-pin requirements/dev.txt from requirements/dev.in
	rm -rf /tmp/epsync-lock && $(PYTHON) -m venv /tmp/epsync-lock
	/tmp/epsync-lock/bin/pip install --quiet -r requirements/dev.in
	/tmp/epsync-lock/bin/pip freeze > requirements/dev.txt

.PHONY: clean
clean: ## remove build outputs (keeps ./data)
	rm -rf $(VENV) target .tools .pytest_cache .mypy_cache .ruff_cache
