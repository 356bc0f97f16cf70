#!/usr/bin/env bash
# The scrape-cost benchmark (docs/benchmarks.md § What a scrape costs): a real Prometheus scrapes
# vmwarden and its peer (node_exporter's drbd collector; prometheus-libvirt-exporter) side by
# side every second, plus the static-file floor of each payload. Builds the release binary and
# the /proc/drbd generator first; prints JSON (copy the numbers into docs/benchmarks.md).
# As root, with libvirtd running (scripts/test-services.sh): the libvirt pair runs real guests.
#   bash benches/prometheus-compare.sh [--seconds 45] [--minors 1000] [--guests 10] [--pairs drbd,libvirt,all] [--rounds 1]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/vmwarden/target}"
export CARGO_TARGET_DIR
cargo build --release --locked --bin vmwarden --example gen_proc_drbd
python3 benches/prometheus_compare.py "$CARGO_TARGET_DIR/release/vmwarden" \
  "$CARGO_TARGET_DIR/release/examples/gen_proc_drbd" "$@"
