# vmwarden — build, run and test. `make run` and `make test` install what they need first
# (scripts/setup.sh, idempotent). Build outputs are cached outside the repository.

CARGO_TARGET_DIR ?= $(HOME)/.cache/vmwarden/target
export CARGO_TARGET_DIR
CARGO ?= cargo
CONFIG ?=

.PHONY: setup build run test lint unit bench load-test clean deb deb-test lab lab-down fault-campaign storage-lab storage-lab-down storage-lab-capture storage-lab-lifecycle dashboards-preview fuzz fuzz-smoke

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

# The agent with the embedded default config (or CONFIG=path/to/vmwarden.toml).
run: build
	$(CARGO_TARGET_DIR)/release/vmwarden run $(if $(CONFIG),--config $(CONFIG))

# The Debian package (docs/packaging.md): $(CARGO_TARGET_DIR)/debian/vmwarden_<version>-1_<arch>.deb.
# alerts/ and dashboards/ (whatever they hold now; dashboards/ may not exist) are copied to a
# staging directory that Cargo.toml's asset glob ships as /usr/share/vmwarden/: cargo-deb refuses a
# glob that matches nothing, and this one always matches the alert rules. Needs only cargo-deb:
# setup.sh runs when it is missing. DEB_ARGS go to cargo deb: tests/deb_package.rs runs this recipe
# with its own CARGO_TARGET_DIR holding the dev binary cargo test built and
# DEB_ARGS="--no-build --output DIR", so the package test costs no release build.
DEB_SHARE = $(CARGO_TARGET_DIR)/release/vmwarden-share
DEB_ARGS ?=
deb:
	@$(CARGO) deb --version >/dev/null 2>&1 || bash scripts/setup.sh
	rm -rf $(DEB_SHARE)
	mkdir -p $(DEB_SHARE)
	cp -R alerts $(DEB_SHARE)/alerts
	if [ -d dashboards ]; then cp -R dashboards $(DEB_SHARE)/dashboards; fi
	$(CARGO) deb --locked $(DEB_ARGS)

# The package test alone (also part of `make test`): build the package from the test's own dev
# binary, dpkg -i, verify, dpkg -r, dpkg --purge, for real (root; docs/packaging.md § The test).
deb-test: setup
	VMWARDEN_REQUIRE_REAL=1 $(CARGO) test --locked --test deb_package -- --nocapture

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Every test, real components included: CI requires them (VMWARDEN_REQUIRE_REAL=1), so a real
# test that cannot reach libvirtd or start sanlock fails instead of skipping.
# Then every fuzz target briefly (FUZZ_CI_TIME seconds each, unoptimised ASAN build of its own under
# $(CARGO_TARGET_DIR)/fuzz, seeded from tests/fixtures; docs/fuzzing.md § CI): a crash, hang or leak
# fails the test with the reproducer's path printed.
FUZZ_CI_TIME ?= 5
test: setup
	bash scripts/test-services.sh
	$(MAKE) lint
	VMWARDEN_REQUIRE_REAL=1 $(CARGO) test --locked --all-targets
	bash scripts/fuzz.sh --dev --time $(FUZZ_CI_TIME)

# Fuzzing (docs/fuzzing.md): every target of fuzz/ for FUZZ_RUNS executions (or FUZZ_TARGETS="a b"
# only); `make fuzz-smoke` runs each for FUZZ_TIME seconds (optimised build; `make test` runs the
# unoptimised one for FUZZ_CI_TIME). Results: $(CARGO_TARGET_DIR)/fuzz/out/.
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
# watchdog's crash -> running (lab). BENCH_ROUNDS: runs of each scrape pair (their median ratio).
BENCH_ROUNDS ?= 3
bench: setup
	bash scripts/test-services.sh
	$(CARGO) bench --locked --bench parsers
	bash benches/prometheus-compare.sh --rounds $(BENCH_ROUNDS)
	bash benches/migration-compare.sh
	bash benches/watchdog-crash.sh

# Load and hostile clients on the agent's port, loopback only (docs/benchmarks.md): 50 scrapers
# while lvs hangs, 10,000 wrong tokens, slowloris, a 1 GiB body. Also part of `make test`.
load-test: setup
	$(CARGO) test --locked --test agent_load -- --nocapture

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

# create, grow, disks and remove on real lvmlockd in the storage lab (tests/storage_lab_lifecycle.rs):
# 5–16 min of TCG, so outside `make test`.
storage-lab-lifecycle: setup
	VMWARDEN_REQUIRE_REAL=1 VMWARDEN_LONG_TESTS=1 $(CARGO) test --locked --test storage_lab_lifecycle -- --nocapture

storage-lab-down:
	bash scripts/storage-lab.sh down

# Re-capture tests/fixtures/real/ (real lvm, lvmlockd, sanlock and DRBD 8.4 outputs) in a fresh lab.
storage-lab-capture: build
	VMWARDEN_BIN=$(CARGO_TARGET_DIR)/release/vmwarden bash scripts/storage-lab.sh capture

# Every dashboard panel against a real Prometheus scraping the two-node lab (tests/lab_dashboards.rs),
# then each dashboard rendered to PNG from that data (docs/dashboards.md). Output outside git.
PREVIEW_DIR ?= $(HOME)/.cache/vmwarden/dashboards-preview
dashboards-preview: setup
	VMWARDEN_REQUIRE_REAL=1 VMWARDEN_DASHBOARDS_PREVIEW=$(PREVIEW_DIR) $(CARGO) test --locked --test lab_dashboards -- --nocapture
	@echo "previews: $(PREVIEW_DIR)/*.png"

clean:
	$(CARGO) clean
