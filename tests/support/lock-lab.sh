#!/bin/bash
# Two lab hosts for the src/lock/ real tests, built on scripts/lab-common.sh and
# tests/support/lab-host.sh (reused, not copied): h1 (host_id 1) and h2 (host_id 2), each with a
# real sanlock daemon in its own mount namespace.
#   lock-lab.sh sanlock   one 16 MiB lease file, lockspace LS joined by both hosts (io_timeout 1 s),
#                         resources vm1 (offset 1 MiB) and vm2 (2 MiB) initialised
#   lock-lab.sh lvmlockd  real lvmlockd on both hosts, shared VG vg1 (lock_type sanlock) on a loop
#                         device with LVs vm1 and vm2; lockspace started on both; every lvm command
#                         needs --driverloaded n (this kernel has no device-mapper)
# For each host it writes wrappers WORK/bin-hN/{lvm,lvmlockctl,sanlock} that run the real tool
# inside that host's namespace (so the Rust code under test runs unchanged, only its configured
# command paths differ), prints `KEY=VALUE` lines (WORK, LEASES, ...) followed by `READY` on
# stdout, then waits until its stdin closes (the test finished or died) and cleans everything up:
# daemons, namespaces, loop devices, files.
set -euo pipefail
MODE=${1:?usage: lock-lab.sh sanlock|lvmlockd}
LAB_KIND=lock-$MODE
. "$(dirname "$0")/../../scripts/lab-common.sh"

wrappers() { # wrappers HOST EXTRA_ENV...
  local h=$1 pid d; shift
  eval "pid=\$HOSTPID_$h"
  d=$WORK/bin-$h
  mkdir -p "$d"
  for t in lvm lvmlockctl sanlock; do
    printf '#!/bin/sh\nexec nsenter -t %s -m env %s %s "$@"\n' "$pid" "$*" "$(command -v $t)" >"$d/$t"
    chmod +x "$d/$t"
  done
}

case $MODE in
sanlock)
  start_host h1
  start_host h2
  wrappers h1 LC_ALL=C
  wrappers h2 LC_ALL=C
  L=$WORK/leases
  truncate -s 16M "$L"
  on h1 sanlock client init -s "LS:0:$L:0" -o 1 >/dev/null
  on h1 sanlock client add_lockspace -s "LS:1:$L:0" -o 1 >/dev/null &
  a1=$!
  on h2 sanlock client add_lockspace -s "LS:2:$L:0" -o 1 >/dev/null
  wait $a1
  for r in vm1:1048576 vm2:2097152; do on h1 sanlock client init -r "LS:${r%%:*}:$L:${r#*:}" >/dev/null; done
  echo "LEASES=$L"
  ;;
lvmlockd)
  LOOPS=()
  detach_loops() { local l; for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done; }
  EXTRA_CLEANUP+=(detach_loops)
  truncate -s 768M "$WORK/pv.img"; truncate -s 256M "$WORK/lvmlock.img"
  LPV=$(losetup -f --show "$WORK/pv.img"); LOOPS+=("$LPV")
  LLOCK=$(losetup -f --show "$WORK/lvmlock.img"); LOOPS+=("$LLOCK")
  for i in 1 2; do
    mkdir -p "$WORK/lvm$i"
    cat >"$WORK/lvm$i/lvm.conf" <<EOC
devices { filter = [ "a|^$LPV\$|", "r|.*|" ] use_devicesfile = 0 obtain_device_list_from_udev = 0 }
global { use_lvmlockd = 1 event_activation = 0 }
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
backup { backup = 0 archive = 0 }
EOC
    echo "local { host_id = $i }" >"$WORK/lvm$i/lvmlocal.conf"
  done
  start_host h1 --lvmlockd --mapper "vg1-lvmlock=$LLOCK"
  start_host h2 --lvmlockd --mapper "vg1-lvmlock=$LLOCK"
  wrappers h1 LC_ALL=C LVM_SYSTEM_DIR="$WORK/lvm1" LVM_SUPPRESS_FD_WARNINGS=1
  wrappers h2 LC_ALL=C LVM_SYSTEM_DIR="$WORK/lvm2" LVM_SUPPRESS_FD_WARNINGS=1
  "$WORK/bin-h1/lvm" vgcreate --driverloaded n --shared vg1 "$LPV" >&2
  for n in vm1 vm2; do "$WORK/bin-h1/lvm" lvcreate --driverloaded n -an -L 16M -n $n vg1 >&2; done
  # Without udev the first lock-start on the second host fails once (STORAGE-LAB-NOTES): retry.
  for _ in 1 2 3; do "$WORK/bin-h2/lvm" vgchange --driverloaded n --lock-start vg1 >&2 && break; sleep 1; done
  echo "LVMLOCK_DEV=$LLOCK"
  ;;
*) echo "lock-lab.sh: unknown mode $MODE" >&2; exit 2 ;;
esac
echo "WORK=$WORK"
echo "HOSTPID_h1=$HOSTPID_h1"
echo "HOSTPID_h2=$HOSTPID_h2"
echo READY
# Until the test closes our stdin (or dies): then the EXIT trap of lab-common.sh cleans up.
cat <&0 >/dev/null &
wait $! || true
