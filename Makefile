# cohort: the two commands a new machine needs are `make run` and `make test`.
# Both install what they need (Debian packages, the tansu test broker) first.

SHELL := /bin/bash
CARGO ?= cargo
# Tests run in the release profile so librdkafka and RocksDB are compiled once
# for tests and the demo (a first build takes ~16 min on 2 cores). Benchmarks
# use the bench profile (fat LTO, as the shipped `dist` build): a build of its own.
PROFILE_FLAGS ?= --release

.PHONY: all setup run test test-core lint fmt bench clean-cache help

all: help

help:
	@echo "make run    the demo on an embedded broker"
	@echo "make test   lint, deploy/ checks (promtool), then every test (unit, property, end-to-end on a real broker)"
	@echo "make lint   cargo fmt --check and clippy with warnings denied"
	@echo "make bench  the benchmarks, with their figures printed"

setup:
	@scripts/setup.sh

run: setup
	$(CARGO) run $(PROFILE_FLAGS) -p cohort -- demo $(ARGS)

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(PROFILE_FLAGS) --workspace --all-targets -- -D warnings

test: lint
	PYTHON=/usr/bin/python3 scripts/check-deploy.sh
	scripts/with-broker.sh $(CARGO) test $(PROFILE_FLAGS) --workspace --no-fail-fast
	@# `make run` builds `-p cohort` alone, whose features can differ from the
	@# workspace's test build (dev-dependencies add some); building it here
	@# means `make run` after `make test` starts at once.
	$(CARGO) build $(PROFILE_FLAGS) -p cohort --bin cohort

# Fast loop for the pure core: builds neither librdkafka nor RocksDB.
test-core:
	$(CARGO) test -p cohort-core

bench: setup
	$(CARGO) bench --workspace
