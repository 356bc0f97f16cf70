#!/bin/bash
# Capture real LVM + lvmlockd + sanlock outputs into tests/fixtures/lvm/ (and the sanlock view of the
# same locks into tests/fixtures/sanlock/lvmlockd-*): two lab hosts h1 and h2 (own mount namespace,
# real sanlock daemon and real lvmlockd each, host_id 1 and 2) share a loop device holding the
# shared VG vg1 (lock_type sanlock); h1 also has a local VG vg_local on a second loop device.
#
# This kernel has no device-mapper, so every lvm command runs with --driverloaded n (no activation:
# LVs never become "active" in lvs) and the internal lvmlock LV that lvmlockd hands to sanlock is
# stood in for by a third loop device linked as /dev/mapper/vg1-lvmlock in each host's private
# /dev/mapper. The locks themselves are real: lvmlockd takes them in sanlock on that device.
#   vm1: ex on h1        vm2: sh on h1 and h2        vm3: ex on h2        vm4: never activated
# Run as root: scripts/capture-lvm-fixtures.sh [LVM_OUTDIR [SANLOCK_OUTDIR]]
set -euo pipefail
LAB_KIND=lvm-capture
. "$(dirname "$0")/lab-common.sh"
OUT=${1:-$REPO/tests/fixtures/lvm}
SOUT=${2:-$REPO/tests/fixtures/sanlock}
mkdir -p "$OUT" "$SOUT"
for t in lvm lvmlockd lvmlockctl losetup; do
  command -v "$t" >/dev/null || { echo "missing $t (scripts/setup.sh installs lvm2 lvm2-lockd)" >&2; exit 1; }
done

# The exact report command of src/probe/lvm.rs (keep in sync: fullreport_cmd()).
FULLREPORT=(lvm fullreport --reportformat json --units b --nosuffix --binary --shared
  --config 'report { compact_output = 0 }'
  --configreport vg -o vg_name,vg_uuid,vg_lock_type,vg_lock_args,vg_size,vg_free,vg_shared,vg_clustered,vg_attr
  --configreport lv -o vg_name,lv_name,lv_uuid,lv_size,lv_active,lv_active_locally,lv_active_remotely,lv_active_exclusively,lv_lock_args,lv_attr,lv_path,lv_dm_path
  --configreport pv -o pv_name -S 'pv_size<0'
  --configreport pvseg -o pvseg_start -S 'pvseg_start<0'
  --configreport seg -o lv_uuid,devices)

LOOPS=()
detach_loops() { local l; for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done; }
EXTRA_CLEANUP+=(detach_loops)
newloop() { # newloop FILE SIZE -> prints the loop device (caller adds it to LOOPS)
  truncate -s "$2" "$1"
  losetup -f --show "$1"
}
LLOCAL=$(newloop "$WORK/pv-local.img" 256M);   LOOPS+=("$LLOCAL")
LSHARED=$(newloop "$WORK/pv-shared.img" 768M); LOOPS+=("$LSHARED")
LLOCK=$(newloop "$WORK/lvmlock.img" 256M);     LOOPS+=("$LLOCK")
say "loop devices: local $LLOCAL, shared $LSHARED, lvmlock stand-in $LLOCK"

# Each host's LVM sees only the lab's loop devices and keeps no backups or devices file.
for i in 1 2; do
  mkdir -p "$WORK/lvm$i"
  cat >"$WORK/lvm$i/lvm.conf" <<EOF
devices { filter = [ "a|^$LLOCAL\$|", "a|^$LSHARED\$|", "r|.*|" ] use_devicesfile = 0 obtain_device_list_from_udev = 0 }
global { use_lvmlockd = 1 event_activation = 0 }
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
backup { backup = 0 archive = 0 }
EOF
  echo "local { host_id = $i }" >"$WORK/lvm$i/lvmlocal.conf"
done
lv() { # lv HOST CMD...: an lvm command on HOST with the lab config
  local h=$1; shift
  on "$h" env LVM_SYSTEM_DIR="$WORK/lvm${h#h}" LVM_SUPPRESS_FD_WARNINGS=1 "$@"
}
cap() { # cap BASE HOST CMD...: stdout to BASE, stderr to BASE.stderr, exit status to BASE.rc
  local base=$1 host=$2; shift 2
  local rc=0
  lv "$host" "$@" >"$base" 2>"$base.stderr" || rc=$?
  echo "$rc" >"$base.rc"
}

start_host h1 --lvmlockd --mapper "vg1-lvmlock=$LLOCK"
start_host h2 --lvmlockd --mapper "vg1-lvmlock=$LLOCK"

say "h1: vgcreate --shared vg1 (starts lockspace lvm_vg1), vgcreate vg_local, LVs"
lv h1 vgcreate --driverloaded n --shared vg1 "$LSHARED" >&2
lv h1 vgcreate --driverloaded n vg_local "$LLOCAL" >&2
for n in vm1 vm2 vm3 vm4; do lv h1 lvcreate --driverloaded n -an -L 64M -n $n vg1 >&2; done
lv h1 lvcreate --driverloaded n -an -L 100M -n data vg_local >&2
lv h1 lvcreate --driverloaded n -an -L 20M -n scratch vg_local >&2
say "h2: vgchange --lock-start vg1"
lv h2 vgchange --driverloaded n --lock-start vg1 >&2 || { sleep 2; lv h2 vgchange --driverloaded n --lock-start vg1 >&2; }

say "locks: vm1 ex on h1, vm2 sh on both, vm3 ex on h2"
lv h1 lvchange --driverloaded n -aey vg1/vm1 >&2
lv h1 lvchange --driverloaded n -asy vg1/vm2 >&2
lv h2 lvchange --driverloaded n -asy vg1/vm2 >&2
lv h2 lvchange --driverloaded n -aey vg1/vm3 >&2
cap "$OUT/h2-lvchange-aey-vm1-held-by-h1.txt" h2 lvchange --driverloaded n -aey vg1/vm1
for _ in $(seq 1 60); do
  on h1 sanlock client gets -h 1 | grep -q '^h 2 .* LIVE$' && on h2 sanlock client gets -h 1 | grep -q '^h 1 .* LIVE$' && break
  sleep 0.5
done

for h in h1 h2; do
  cap "$OUT/$h-fullreport.json" $h "${FULLREPORT[@]}"
  cap "$OUT/$h-lvmlockctl-info.txt" $h lvmlockctl --info
  cap "$OUT/$h-lvmlockctl-info-dump.txt" $h lvmlockctl --info --dump
  cap "$SOUT/lvmlockd-$h-status-D.txt" $h sanlock client status -D
  cap "$SOUT/lvmlockd-$h-gets-h1.txt" $h sanlock client gets -h 1
done

say "h1 without lvmlockd: what lvm and lvmlockctl say"
kill -KILL "$(cat "$WORK/h1.lvmlockd.pid")"
sleep 1
cap "$OUT/h1-nolockd-fullreport.json" h1 "${FULLREPORT[@]}"
cap "$OUT/h1-nolockd-lvmlockctl-info.txt" h1 lvmlockctl --info

# The .stderr/.rc files of successful, quiet commands carry nothing: keep only what says something.
for f in "$OUT"/*.rc "$SOUT"/lvmlockd-*.rc; do
  base=${f%.rc}
  if [ "$(cat "$f")" = 0 ]; then
    rm -f "$f"
    [ -s "$base.stderr" ] || rm -f "$base.stderr"
  fi
done
{
  echo "captured: $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/capture-lvm-fixtures.sh"
  echo "lvm: $(lvm version 2>/dev/null | sed -n 's/^ *LVM version: *//p') (Debian lvm2 $(dpkg-query -W -f='${Version}' lvm2 2>/dev/null || echo '?'), lvm2-lockd $(dpkg-query -W -f='${Version}' lvm2-lockd 2>/dev/null || echo '?'))"
  echo "sanlock: $(sanlock version 2>&1)"
  echo "kernel: $(uname -r) (no device-mapper: every lvm command ran with --driverloaded n)"
  echo "devices: vg1 on $LSHARED, vg_local on $LLOCAL, lvmlock stand-in $LLOCK"
} >"$OUT/VERSIONS"
say "fixtures written to $OUT (and $SOUT/lvmlockd-*)"
