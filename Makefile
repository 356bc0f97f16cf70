# vmwarden — build, run and test. `make run` and `make test` install what they need first
# (scripts/setup.sh, idempotent). Build outputs are cached outside the repository.

CARGO_TARGET_DIR ?= $(HOME)/.cache/vmwarden/target
export CARGO_TARGET_DIR
CARGO ?= cargo
CONFIG ?=

.PHONY: setup build run test lint unit bench clean lab lab-down fault-campaign storage-lab storage-lab-down storage-lab-capture fuzz fuzz-smoke

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

# The agent with the embedded default config (or CONFIG=path/to/vmwarden.toml).
run: build
	$(CARGO_TARGET_DIR)/release/vmwarden run $(if $(CONFIG),--config $(CONFIG))

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Every test, real components included: CI requires them (VMWARDEN_REQUIRE_REAL=1), so a real
# test that cannot reach libvirtd or start sanlock fails instead of skipping.
test: setup
	bash scripts/test-services.sh
	$(MAKE) lint
	VMWARDEN_REQUIRE_REAL=1 $(CARGO) test --locked --all-targets

# Fuzzing (docs/fuzzing.md): every target of fuzz/ for FUZZ_RUNS executions (or FUZZ_TARGETS="a b"
# only); `make fuzz-smoke` runs each for FUZZ_TIME seconds. Results: $(CARGO_TARGET_DIR)/fuzz/out/.
# On a shared machine: nice -n 19 make fuzz.
FUZZ_RUNS ?= 10000000
FUZZ_TIME ?= 20
FUZZ_TARGETS ?=
fuzz: setup
	bash scripts/fuzz.sh --runs $(FUZZ_RUNS) $(FUZZ_TARGETS)

fuzz-smoke: setup
	bash scripts/fuzz.sh --time $(FUZZ_TIME) $(FUZZ_TARGETS)

# Benchmarks (docs/benchmarks.md): parsers; what a scrape costs as a real Prometheus sees it
# (vs node_exporter and prometheus-libvirt-exporter, with real guests); live migration and the
# watchdog's crash -> running (lab).
bench: setup
	bash scripts/test-services.sh
	$(CARGO) bench --locked --bench parsers
	bash benches/prometheus-compare.sh
	bash benches/migration-compare.sh
	bash benches/watchdog-crash.sh

# Two-node lab on this machine (docs/lab.md): n1/n2 with libvirtd, virtlogd, sanlock and a vmwarden agent each.
lab: build
	VMWARDEN_BIN=$(CARGO_TARGET_DIR)/release/vmwarden bash scripts/lab.sh up

lab-down:
	bash scripts/lab.sh down

# The seeded fault campaign in the two-node lab (docs/fault-campaign.md); `make test` runs 20 trials.
TRIALS ?= 200
SEED ?= $(shell date +%s)
fault-campaign: build
	python3 scripts/fault-campaign.py $(CARGO_TARGET_DIR)/release/vmwarden --trials $(TRIALS) --seed $(SEED)

# Storage lab (docs/storage-lab.md): two Debian guests under qemu TCG with real lvmlockd + sanlock on
# a shared LUN and DRBD 8.4 between them. The guest image is cached in ~/.cache/vmwarden/storage-lab.
storage-lab: build
	VMWARDEN_BIN=$(CARGO_TARGET_DIR)/release/vmwarden bash scripts/storage-lab.sh up

storage-lab-down:
	bash scripts/storage-lab.sh down

# Re-capture tests/fixtures/real/ (real lvm, lvmlockd, sanlock and DRBD 8.4 outputs) in a fresh lab.
storage-lab-capture: build
	VMWARDEN_BIN=$(CARGO_TARGET_DIR)/release/vmwarden bash scripts/storage-lab.sh capture

clean:
	$(CARGO) clean
