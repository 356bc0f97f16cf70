#!/usr/bin/env bash
# Live migration in the two-node lab: plain `virsh migrate --live` vs `vmwarden ctl migrate`,
# RUNS (default 10) each, same guest, same run (docs/benchmarks.md). Root; uses the lab's fixed
# namespaces (do not run it while tests or `make lab` use them).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/vmwarden/target}"
export CARGO_TARGET_DIR
cargo build --release --locked --bin vmwarden
python3 benches/migration_compare.py "$CARGO_TARGET_DIR/release/vmwarden" "$@"
