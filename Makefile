# Baton's day-one commands. See README.md.
#   make dev    - a local 3-node cluster with demo workers running a sharded job
#   make test   - install missing system packages, then run the whole test suite
#   make bench  - print the storage and cluster benchmark figures (docs/benchmarks.md)

CARGO ?= cargo

.PHONY: deps dev test bench fmt

dev: deps
	$(CARGO) run -q -p baton-coordinator --bin baton -- dev $(ARGS)

deps:
	@./.ci/deps

test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) test --workspace --no-fail-fast

bench: deps
	$(CARGO) bench -p baton-raft-store --bench store --profile dev
	$(CARGO) bench -p baton-coordinator --bench cluster --profile dev
