#!/usr/bin/env bash
# Make the real services the tests use available: libvirtd + virtlogd able to run qemu guests.
# Idempotent: a second run changes nothing and returns quickly. Run as root before `cargo test`.
#
#   scripts/test-services.sh                   ensure qemu.conf, virtlogd and libvirtd are up
#   scripts/test-services.sh restart-libvirtd  stop libvirtd and start it again (restart tests)
#   scripts/test-services.sh stop-libvirtd     stop libvirtd (tests of "libvirtd is down")
#
# Without systemd (containers, CI sandboxes) the daemons are started with `-d` and tracked by their
# pid files in /run; where systemd runs (/run/systemd/system exists) systemctl is used instead.
set -euo pipefail

QEMU_CONF=${QEMU_CONF:-/etc/libvirt/qemu.conf}
URI=qemu:///system
WAIT_SECONDS=${WAIT_SECONDS:-30}

say() { echo "test-services: $*"; }
die() { echo "test-services: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it edits $QEMU_CONF and starts libvirtd)"
command -v libvirtd >/dev/null || die "libvirtd is not installed: run scripts/setup.sh"
command -v virsh >/dev/null || die "virsh is not installed: run scripts/setup.sh"

have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# pid from a pid file if that process is alive and is the named program.
live_pid() { # pidfile comm
  local pid
  [ -r "$1" ] || return 1
  pid=$(tr -dc 0-9 <"$1")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}

answers() { timeout 5 virsh -c "$URI" version >/dev/null 2>&1; }

wait_answers() {
  local deadline=$((SECONDS + WAIT_SECONDS))
  until answers; do
    [ "$SECONDS" -lt "$deadline" ] || die "libvirtd did not answer on $URI within ${WAIT_SECONDS}s (see /var/log/libvirt/libvirtd.log)"
    sleep 0.2
  done
}

# Set `key = "value"` in qemu.conf: replace an active line if it differs, else append. Commented
# examples are left alone. Prints "changed" when the file was modified.
set_conf() { # key value
  local key=$1 value=$2 line
  line=$(grep -E "^[[:space:]]*${key}[[:space:]]*=" "$QEMU_CONF" | tail -n1 || true)
  if [ -z "$line" ]; then
    printf '%s = "%s"\n' "$key" "$value" >>"$QEMU_CONF"
    echo changed
  elif ! echo "$line" | grep -qE "^[[:space:]]*${key}[[:space:]]*=[[:space:]]*\"${value}\"[[:space:]]*$"; then
    sed -i -E "s|^[[:space:]]*${key}[[:space:]]*=.*$|${key} = \"${value}\"|" "$QEMU_CONF"
    echo changed
  fi
}

start_virtlogd() {
  if have_systemd; then
    systemctl is-active --quiet virtlogd || { systemctl start virtlogd; say "started virtlogd (systemd)"; }
  elif live_pid /run/virtlogd.pid virtlogd >/dev/null; then
    :
  else
    virtlogd -d
    say "started virtlogd -d"
  fi
}

start_libvirtd() {
  if have_systemd; then
    systemctl is-active --quiet libvirtd || { systemctl start libvirtd; say "started libvirtd (systemd)"; }
  elif live_pid /run/libvirtd.pid libvirtd >/dev/null; then
    :
  else
    libvirtd -d
    say "started libvirtd -d"
  fi
  wait_answers
}

stop_libvirtd() {
  if have_systemd; then
    systemctl stop libvirtd
    say "stopped libvirtd (systemd)"
    return
  fi
  local pid
  pid=$(live_pid /run/libvirtd.pid libvirtd) || { say "libvirtd was not running"; return; }
  kill -TERM "$pid"
  local deadline=$((SECONDS + WAIT_SECONDS))
  while [ -e "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = libvirtd ]; do
    [ "$SECONDS" -lt "$deadline" ] || { kill -KILL "$pid" 2>/dev/null || true; break; }
    sleep 0.1
  done
  say "stopped libvirtd (pid $pid)"
}

ensure() {
  # qemu runs as libvirt-qemu by default and then cannot open /dev/kvm (mode 0600): run it as root.
  [ -f "$QEMU_CONF" ] || die "$QEMU_CONF missing: is libvirt-daemon-driver-qemu installed?"
  local changed
  changed="$(set_conf user root)$(set_conf group root)"
  if [ -n "$changed" ]; then
    say "set user/group = \"root\" in $QEMU_CONF"
    # libvirtd reads qemu.conf at start only.
    if answers; then stop_libvirtd; fi
  fi
  start_virtlogd
  start_libvirtd
  if [ -c /dev/kvm ]; then say "/dev/kvm present (guests may use type='kvm')"; else say "no /dev/kvm (guests use type='qemu')"; fi
  say "libvirtd answers on $URI ($(virsh -c "$URI" version 2>/dev/null | awk '/Running hypervisor/ {print $3, $4}'))"
}

case "${1:-ensure}" in
  ensure) ensure ;;
  restart-libvirtd)
    ensure
    stop_libvirtd
    start_libvirtd
    say "libvirtd restarted"
    ;;
  stop-libvirtd) stop_libvirtd ;;
  *) die "usage: $0 [ensure|restart-libvirtd|stop-libvirtd]" ;;
esac
