#!/usr/bin/env bash
# Install what vmwarden needs to build, run and test on a fresh Debian 12 machine. Idempotent:
# a second run installs nothing and returns quickly.
set -euo pipefail

need_root() { if [ "$(id -u)" != 0 ]; then echo "setup.sh: run as root (apt-get)" >&2; exit 1; fi; }

# Build: libvirt-dev (virt crate) + pkg-config. Tests: real libvirtd/qemu, sanlock, promtool,
# prometheus (the scrape benchmark's scraper), node_exporter and prometheus-libvirt-exporter
# (benchmark peers), iproute2 (lab namespaces), lvm2 + lvm2-lockd (real lvm/lvmlockd in the
# storage lab), gcc (builds the sanlock setrlimit shim), util-linux (unshare, nsenter).
# Storage lab (scripts/storage-lab.sh): debootstrap builds the guest image, cpio packs its
# initramfs, e2fsprogs (mkfs.ext4 -d), qemu-utils (qemu-img overlays), python3 (serial command channel).
# Notifications test (tests/notify_smtp.rs): python3-aiosmtpd, a real SMTP server with STARTTLS + AUTH.
# Two-node lab (scripts/lab.sh): tini reaps each node's dead qemu at once, as systemd does on a node.
# Fuzzing (fuzz/, scripts/fuzz.sh): g++ builds libFuzzer (libfuzzer-sys).
# API tests: prometheus-alertmanager (a real Alertmanager posts to the webhook), python3-venv
# (schemathesis from PyPI runs against docs/openapi.yaml; installed in a venv below).
# Dashboards (tests/lab_dashboards.rs, make dashboards-preview): curl queries the lab's Prometheus
# inside a node's namespace; python3-matplotlib renders the panels to PNG.
# Debian package (make deb, tests/deb_package.rs): dpkg-dev (dpkg-shlibdeps, which cargo-deb uses
# for the package's library dependencies), systemd (systemd-analyze verify/security on the unit;
# it is not started).
PKGS=(pkg-config libvirt-dev libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu
      qemu-system-x86 sanlock prometheus prometheus-node-exporter prometheus-libvirt-exporter
      iproute2 procps psmisc
      lvm2 lvm2-lockd gcc util-linux debootstrap cpio e2fsprogs qemu-utils python3
      python3-aiosmtpd tini prometheus-alertmanager python3-venv curl python3-matplotlib dpkg-dev systemd g++)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  need_root
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # Some machines ship qemu-utils from backports, which blocks qemu-system-x86 from bookworm:
  # pin qemu-utils / qemu-block-extra to the same version as qemu-system-x86's candidate.
  qv=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
  pins=()
  if [ -n "$qv" ] && [ "$qv" != "(none)" ]; then
    pins=("qemu-utils=$qv" "qemu-block-extra=$qv")
    # qemu-utils is in PKGS too (qemu-img, the storage lab): name it once, pinned.
    rest=(); for p in "${missing[@]}"; do [ "$p" = qemu-utils ] || rest+=("$p"); done
    missing=("${rest[@]}")
  fi
  # Don't let package postinst scripts start daemons on a machine without systemd.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -q --no-install-recommends --allow-downgrades "${pins[@]}" "${missing[@]}"
  rm -f /usr/sbin/policy-rc.d
fi

# schemathesis (tests/api_openapi.rs) from PyPI, pinned, in its own venv (never the system Python).
SCHEMATHESIS_VERSION=4.32.5
venv="${VMWARDEN_VENV:-$HOME/.cache/vmwarden/venv}"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

# cargo-deb (make deb, tests/deb_package.rs), pinned, from crates.io into ~/.cargo/bin (kept there:
# a second run finds it and does nothing). Building it takes a few minutes once.
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION\|$CARGO_DEB_VERSION"; then
  if ! timeout 120 cargo info --quiet "cargo-deb@$CARGO_DEB_VERSION" >/dev/null 2>&1; then
    echo "setup.sh: crates.io does not answer: cannot install cargo-deb $CARGO_DEB_VERSION (make deb and tests/deb_package.rs need it); retry when it does" >&2
    exit 1
  fi
  cargo install --locked "cargo-deb@$CARGO_DEB_VERSION"
fi

# Rust toolchain components used by the quality gates.
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
# Fuzzing (fuzz/, scripts/fuzz.sh, docs/fuzzing.md): cargo-fuzz from crates.io, pinned.
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
echo "setup.sh: dependencies present"
