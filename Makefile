# Baton's day-one commands. See README.md.
#   make dev    - a local 3-node cluster with demo workers running a word-count workflow
#   make test   - install missing system packages, then run the whole test suite
#                 and the chaos smoke profile (real processes, seeded faults)
#   make chaos  - one chaos run against a local cluster: make chaos ARGS="--nodes 5 --faults partition"
#   make bench  - print the storage, cluster, workflow, task log, schedule fire lag and TLS cost benchmark figures (docs/benchmarks.md)
#   make compare - Baton vs etcd vs NATS JetStream, one run, ratio table (ARGS=--quick for a short run)
#   make steady - disk, snapshot and memory per node over a long run under a short retention

CARGO ?= cargo

.PHONY: deps dev test bench fmt compare steady chaos chaos-bins chaos-smoke chaos-soak

dev: deps
	$(CARGO) run -q -p baton-coordinator --bin baton -- dev $(ARGS)

deps:
	@./.ci/deps

test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) --no-print-directory chaos-smoke

# The chaos harness finds the `baton` binary next to its own.
chaos-bins:
	$(CARGO) build -q -p baton-coordinator --bin baton -p baton-chaos --bin baton-chaos

chaos-smoke: deps chaos-bins
	$(CARGO) run -q -p baton-chaos --bin baton-chaos -- smoke $(ARGS)

chaos: deps chaos-bins
	$(CARGO) run -q -p baton-chaos --bin baton-chaos -- run $(ARGS)

chaos-soak: deps chaos-bins
	$(CARGO) run -q -p baton-chaos --bin baton-chaos -- soak $(ARGS)

bench: deps
	$(CARGO) bench -p baton-raft-store --bench store --profile dev
	$(CARGO) bench -p baton-coordinator --bench cluster --profile dev
	$(CARGO) bench -p baton-coordinator --bench workflows --profile dev
	$(CARGO) bench -p baton-coordinator --bench logs --profile dev
	$(CARGO) bench -p baton-coordinator --bench schedules --profile dev
	$(CARGO) bench -p baton-coordinator --bench tls --profile dev

compare: deps
	./chaos-tests/bench/compare.sh $(ARGS)

# 3,000,000 single-shard lifecycles kept 60 s; about 10 minutes on 2 cores.
# Writes steady.json, steady.md and three plots to target/bench-steady.
steady: deps
	$(CARGO) build -q -p baton-coordinator --bin baton -p baton-bench --bin baton-bench
	$(CARGO) run -q -p baton-bench --bin baton-bench -- --out target/bench-steady steady --lifecycles 3000000 --retention-ms 60000 $(ARGS)
