#!/usr/bin/env bash
# Build release vmwarden + the /proc/drbd generator, then compare against node_exporter's drbd
# collector on the same generated file. Results go to stdout as JSON (copy into docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/vmwarden/target}"
export CARGO_TARGET_DIR
cargo build --release --locked --bin vmwarden --example gen_proc_drbd
python3 benches/node_exporter_compare.py "$CARGO_TARGET_DIR/release/vmwarden" \
  "$CARGO_TARGET_DIR/release/examples/gen_proc_drbd" "$@"
