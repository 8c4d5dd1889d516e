# Baton's day-one commands. See README.md.
#   make test   - install missing system packages, then run the whole test suite
#   make bench  - print the storage benchmark figures (docs/benchmarks.md)

CARGO ?= cargo

.PHONY: deps test bench fmt

deps:
	@./.ci/deps

test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) test --workspace --no-fail-fast

bench: deps
	$(CARGO) bench -p baton-raft-store --bench store --profile dev
