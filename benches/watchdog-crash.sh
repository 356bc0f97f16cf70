#!/usr/bin/env bash
# The watchdog in the two-node lab: `kill -9` of a guest's qemu -> running again, RUNS (default
# 20) crashes, median and p95 (docs/benchmarks.md). Root; uses the lab's fixed namespaces (do not
# run it while tests or `make lab` use them).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/vmwarden/target}"
export CARGO_TARGET_DIR
cargo build --release --locked --bin vmwarden
python3 benches/watchdog_crash.py "$CARGO_TARGET_DIR/release/vmwarden" "$@"
