# cohort: the two commands a new machine needs are `make run` and `make test`.
# Both install what they need (Debian packages, PostgreSQL, the tansu test
# broker) first; `make test` runs tansu on a private PostgreSQL cluster
# (scripts/pg.sh), started on 127.0.0.1 if it does not run.

SHELL := /bin/bash
CARGO ?= cargo
# Tests run in the release profile so librdkafka and RocksDB are compiled once
# for tests and the demo (a first build takes ~16 min on 2 cores). Benchmarks
# use the bench profile (fat LTO, as the shipped `dist` build): a build of its own.
PROFILE_FLAGS ?= --release

.PHONY: all setup run test test-core lint fmt bench bench-peers fuzz clean-cache help

all: help

help:
	@echo "make run    the demo on an embedded broker"
	@echo "make test   lint, deploy/ checks (promtool), then every test (unit, property, end-to-end on a real broker)"
	@echo "make lint   cargo fmt --check and clippy with warnings denied"
	@echo "make bench  the benchmarks, with their figures printed"
	@echo "make bench-peers  cohort side by side with a Quix Streams app on one tansu broker (bench-peers/README.md)"
	@echo "make fuzz   every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each"

setup:
	@scripts/setup.sh

run: setup
	$(CARGO) run $(PROFILE_FLAGS) -p cohort -- demo $(ARGS)

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(PROFILE_FLAGS) --workspace --all-targets -- -D warnings

test: lint
	@# The binary `make run` uses (`-p cohort` alone, whose features can differ
	@# from the workspace's test build): built here, `make run` after
	@# `make test` starts at once, and check-deploy checks its live /metrics.
	$(CARGO) build $(PROFILE_FLAGS) -p cohort --bin cohort
	PYTHON=/usr/bin/python3 scripts/check-deploy.sh
	scripts/with-broker.sh $(CARGO) test $(PROFILE_FLAGS) --workspace --no-fail-fast

# Fast loop for the pure core: builds neither librdkafka nor RocksDB.
test-core:
	$(CARGO) test -p cohort-core

bench: setup
	$(CARGO) bench --workspace

# cohort against a Quix Streams app doing part of the same job, alternated on
# the same input (bench-peers/README.md). Installs quixstreams into a venv
# under ~/.cache/cohort once and builds cohort itself (COHORT_BIN to skip);
# PEERS_EVENTS, PEERS_ROUNDS, ... pass through the environment.
bench-peers: setup
	CARGO="$(CARGO)" scripts/bench-peers.sh

# The fuzz targets in fuzz/ (a crate of its own, outside the workspace), each
# for FUZZ_SECONDS, seeded with valid inputs written by fuzz/src/bin/seeds.rs.
# cargo-fuzz passes -Z flags (AddressSanitizer): RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them. A crash is saved in fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= avro_decode confluent_header json_decode partition_meta_decode rules_parse state_decode
FUZZ_TARGET_DIR ?= $(CURDIR)/fuzz/target
FUZZ_CARGO = RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) $(CARGO) fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	$(FUZZ_CARGO) build -O --debug-assertions
	$(FUZZ_TARGET_DIR)/$$(rustc -vV | sed -n 's/^host: //p')/release/seeds fuzz/corpus
	@failed=; for t in $(FUZZ_TARGETS); do \
	  dict=; [ -f fuzz/dicts/$$t.dict ] && dict=-dict=fuzz/dicts/$$t.dict; \
	  ( $(FUZZ_CARGO) run -O --debug-assertions $$t -- -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 $$dict ) \
	    || failed="$$failed $$t"; \
	done; [ -z "$$failed" ] || { echo "fuzz: crashes in$$failed (see fuzz/artifacts/)"; exit 1; }
