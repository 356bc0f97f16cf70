#!/usr/bin/env bash
# The storage lab (docs/storage-lab.md): two small Debian bookworm guests, `sa` and `sb`, booted
# under qemu TCG with Debian's own kernel (device-mapper + in-tree DRBD 8.4), so vmwarden's LVM-lock
# and DRBD paths run against real lvmlockd + sanlock + DRBD. The host kernel has neither.
#
#   scripts/storage-lab.sh build              build the guest image (cached; rebuilt when its inputs change)
#   VMWARDEN_BIN=PATH scripts/storage-lab.sh up   boot sa and sb, start sanlock + lvmlockd, shared VG vg1
#                                             with lv1..lv3, DRBD 8.4 r0 up to Connected Primary/Primary
#   scripts/storage-lab.sh down               stop both guests, remove every file `up` made (keeps the image)
#   scripts/storage-lab.sh exec GUEST 'CMD'   run CMD (sh -c) in sa|sb: prints its output, exits with its status
#   scripts/storage-lab.sh status             what is running
#   scripts/storage-lab.sh drbd-primary       bring r0 to Connected Primary/Primary (part of `up`)
#   scripts/storage-lab.sh agents             start `vmwarden run` in both guests (hook + secret are set by `up`)
#   scripts/storage-lab.sh define-vm          define the nested VM vmt (disk vg1/lv3) on both guests
#   scripts/storage-lab.sh bench-migrate [N]  live migration by hand vs `vmwarden ctl migrate`, N round trips
#   scripts/storage-lab.sh bench-locks [N]    time each lvchange of the lock dance, N rounds (median)
#   VMWARDEN_BIN=PATH scripts/storage-lab.sh capture   re-capture tests/fixtures/real/ (up, capture, down)
#
# Environment: VMWARDEN_STORAGE_LAB (cache + run dir, default ~/.cache/vmwarden/storage-lab),
# STORAGE_LAB_RUN (run dir, default $VMWARDEN_STORAGE_LAB/run), STORAGE_LAB_PORT (127.0.0.1 port of the qemu socket link, default 15577), STORAGE_LAB_DRBD
# (`primary`, the default, or `connected`: up leaves r0 Connected Secondary/Secondary Inconsistent,
# for a test that watches the initial sync), STORAGE_LAB_LIBVIRT=0 (leave libvirt + qemu out of
# the image: they are the groundwork for nested libvirt, docs/storage-lab.md), MIRROR (apt mirror;
# default: the first one of this machine's apt sources).
#
# Nothing leaves the machine: the guests have no network but a qemu socket link between them on
# 127.0.0.1 (DRBD's replication link, 10.99.0.1 <-> 10.99.0.2). Root only (debootstrap, chroot).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB=${VMWARDEN_STORAGE_LAB:-$HOME/.cache/vmwarden/storage-lab}
IMG=$LAB/image
RUN=${STORAGE_LAB_RUN:-$LAB/run}
PORT=${STORAGE_LAB_PORT:-15577}
GUESTS=(sa sb)
CTL=$REPO/scripts/storage_labctl.py

say() { echo "storage-lab: $*" >&2; }
die() { echo "storage-lab: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
phase() { say "[$(since "$T_START") s] $*"; }
T_START=$(now)

hid_of() { case $1 in sa) echo 1 ;; sb) echo 2 ;; *) die "unknown guest $1 (sa|sb)" ;; esac; }
ip_of() { case $1 in sa) echo 10.99.0.1 ;; sb) echo 10.99.0.2 ;; *) die "unknown guest $1" ;; esac; }
other() { case $1 in sa) echo sb ;; sb) echo sa ;; esac; }

# --- build: begin (everything up to "build: end" is hashed into the image stamp)
PKGS_BASE=(lvm2 lvm2-lockd sanlock drbd-utils kmod iproute2 procps util-linux systemd-sysv libvirt0)
PKGS_LIBVIRT=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86)
guest_pkgs() {
  local p=("${PKGS_BASE[@]}")
  [ "${STORAGE_LAB_LIBVIRT:-1}" = 1 ] && p+=("${PKGS_LIBVIRT[@]}")
  (IFS=,; echo "${p[*]}")
}
SUITE=bookworm
# Modules the initramfs loads to find and mount the root disk (modules in Debian's kernel).
INITRD_MODS="kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko
kernel/drivers/virtio/virtio_pci.ko kernel/drivers/block/virtio_blk.ko kernel/lib/crc16.ko
kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko kernel/crypto/crc32c_generic.ko kernel/fs/ext4/ext4.ko"

mirror() {
  if [ -n "${MIRROR:-}" ]; then echo "$MIRROR"; return; fi
  local m
  m=$(grep -h -m1 -o '^URIs: [^ ]*' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | cut -d' ' -f2 || true)
  [ -n "$m" ] || m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -1)
  [ -n "$m" ] || die "no apt mirror found in /etc/apt/sources.list*; set MIRROR="
  echo "$m"
}

kernel_pkg() { # the versioned package linux-image-amd64 depends on (e.g. linux-image-6.1.0-41-amd64)
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# PID 1 of the guests: no systemd. Mounts, host name and sanlock host_id from the kernel command
# line, dm-mod + drbd, the DRBD link address, the vmwarden tools disk; then serves commands on the
# serial console (protocol: scripts/storage_labctl.py).
write_guest_init() { # root
  cat >"$1/sbin/labinit" <<'EOF'
#!/bin/bash
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp; mkdir -p /run/lock /run/lvm /run/sanlock
mount -o remount,rw /
H=lab; ID=1; IP=
for p in $(cat /proc/cmdline); do
  case $p in lab.host=*) H=${p#lab.host=} ;; lab.id=*) ID=${p#lab.id=} ;; lab.ip=*) IP=${p#lab.ip=} ;; esac
done
hostname "$H"; echo "$H" >/etc/hostname
printf '127.0.0.1 localhost\n10.99.0.1 sa\n10.99.0.2 sb\n' >/etc/hosts
sed -i "s/^[# \t]*host_id = .*/\thost_id = $ID/" /etc/lvm/lvmlocal.conf
ip link set lo up
modprobe dm-mod; modprobe drbd; modprobe virtio_net
for _ in $(seq 1 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
ip addr add "$IP/24" dev eth0; ip link set eth0 up
mkdir -p /opt/vmwarden /etc/vmwarden /var/lib/vmwarden
if mount -o ro /dev/vdd /opt/vmwarden; then
  cp "/opt/vmwarden/$H.toml" /etc/vmwarden/vmwarden.toml
  cp /opt/vmwarden/r0.res /etc/drbd.d/r0.res
fi
dmesg -n 1
stty -F /dev/ttyS0 raw -echo 115200
echo "=== [$H] READY" >/dev/ttyS0
# RUN <id> <timeout_s> <base64 of a sh script>  ->  __OUT_<id>__ <base64 of its output>  __END_<id>_<rc>__
while true; do
  while read -r verb id tmo b64; do
    [ "$verb" = RUN ] || continue
    echo "$b64" | base64 -d >"/tmp/.c$id.sh"
    timeout -k 5 "$tmo" sh "/tmp/.c$id.sh" </dev/null >"/tmp/.o$id" 2>&1
    rc=$?
    printf '\n__OUT_%s__ ' "$id"; base64 -w0 "/tmp/.o$id"; printf '\n__END_%s_%s__\n' "$id" "$rc"
    rm -f "/tmp/.c$id.sh" "/tmp/.o$id"
  done </dev/ttyS0 >/dev/ttyS0 2>&1
  sleep 1
done
EOF
  chmod +x "$1/sbin/labinit"
}

write_initramfs_init() { # dir
  cat >"$1/init" <<'EOI'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
K=$(cat /proc/sys/kernel/osrelease)
for m in $(cat /modlist); do insmod /lib/modules/$K/$m || echo "insmod $m failed"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initramfs: cannot mount /dev/vda"; exec sh; }
umount /sys; umount /proc; mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /sbin/labinit
EOI
  chmod +x "$1/init"
}

configure_root() { # root
  local r=$1
  sed -i -e 's/^\t# use_lvmlockd = 0/\tuse_lvmlockd = 1/' -e 's/^\t# udev_sync = 1/\tudev_sync = 0/' \
    -e 's/^\t# udev_rules = 1/\tudev_rules = 0/' -e 's/^\t# monitoring = 1/\tmonitoring = 0/' \
    -e 's/^\t# obtain_device_list_from_udev = 0/\tobtain_device_list_from_udev = 0/' \
    -e 's/^\t# event_activation = 1/\tevent_activation = 0/' "$r/etc/lvm/lvm.conf"
  grep -q '^[[:space:]]*use_lvmlockd = 1' "$r/etc/lvm/lvm.conf" || die "lvm.conf: use_lvmlockd not set (format changed?)"
  sed -i 's/^\t# host_id = 0/\thost_id = 0/' "$r/etc/lvm/lvmlocal.conf"
  sed -i 's/usage-count yes;/usage-count no;/' "$r/etc/drbd.d/global_common.conf"
  # libvirt (STORAGE_LAB_LIBVIRT=1): without libvirt-daemon-system there is no libvirt-qemu user,
  # which libvirtd's qemu driver resolves before it reads qemu.conf; qemu runs as root in the guests.
  if [ -x "$r/usr/sbin/libvirtd" ]; then
    grep -q '^libvirt-qemu:' "$r/etc/group" || echo 'libvirt-qemu:x:64055:' >>"$r/etc/group"
    grep -q '^libvirt-qemu:' "$r/etc/passwd" || echo 'libvirt-qemu:x:64055:64055::/var/lib/libvirt:/usr/sbin/nologin' >>"$r/etc/passwd"
    mkdir -p "$r/etc/libvirt"
    printf 'user = "root"\ngroup = "root"\nnamespaces = []\n' >>"$r/etc/libvirt/qemu.conf"
  fi
  write_guest_init "$r"
}

do_build() {
  local stamp kpkg k t0 t1 dl x
  command -v debootstrap >/dev/null && command -v cpio >/dev/null || die "needs debootstrap and cpio (scripts/setup.sh)"
  kpkg=$(kernel_pkg)
  [ -n "$kpkg" ] || die "apt-cache knows no linux-image-amd64 (apt-get update?)"
  stamp=$( { sed -n '/^# --- build: begin/,/^# --- build: end/p' "${BASH_SOURCE[0]}"; guest_pkgs; echo "$kpkg $SUITE"; } | sha256sum | cut -c1-16)
  if [ -f "$IMG/stamp" ] && [ "$(cat "$IMG/stamp")" = "$stamp" ] && [ -f "$IMG/base.img" ]; then
    phase "image up to date ($IMG, stamp $stamp)"
    return 0
  fi
  say "building the guest image in $IMG (stamp $stamp; kernel $kpkg; packages $(guest_pkgs))"
  t0=$(now)
  dl=$LAB/dl; mkdir -p "$dl" "$IMG"
  k=${kpkg#linux-image-}
  (cd "$dl" && { ls "${kpkg}"_*.deb >/dev/null 2>&1 || apt-get download -q "$kpkg"; } \
    && { ls busybox-static_*.deb >/dev/null 2>&1 || apt-get download -q busybox-static; }) >&2 2>&1
  x=$LAB/kernel; rm -rf "$x"; mkdir -p "$x"
  dpkg-deb -x "$dl/${kpkg}"_*.deb "$x/k"; dpkg-deb -x "$dl"/busybox-static_*.deb "$x/bb"
  [ -f "$x/k/lib/modules/$k/kernel/drivers/block/drbd/drbd.ko" ] || die "$kpkg has no drbd.ko"
  "$x/bb/bin/busybox" depmod -b "$x/k" "$k"
  phase "kernel $k unpacked ($(since "$t0") s)"

  # tiny busybox initramfs: virtio and ext4 are modules in Debian's kernel
  local I=$x/initramfs m
  mkdir -p "$I/bin" "$I/dev" "$I/proc" "$I/sys" "$I/newroot"
  cp "$x/bb/bin/busybox" "$I/bin/"
  for a in sh mount umount switch_root insmod sleep cat; do ln -sf busybox "$I/bin/$a"; done
  for m in $INITRD_MODS; do
    mkdir -p "$I/lib/modules/$k/$(dirname "$m")"; cp "$x/k/lib/modules/$k/$m" "$I/lib/modules/$k/$m"
  done
  echo $INITRD_MODS >"$I/modlist"
  write_initramfs_init "$I"
  (cd "$I" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$IMG/initrd.gz.new"

  # guest root file system: debootstrap is cached on its own (keyed by the package list)
  local root=$LAB/root rstamp
  rstamp="$SUITE $(guest_pkgs) $(mirror)"
  t1=$(now)
  if [ ! -f "$root.stamp" ] || [ "$(cat "$root.stamp")" != "$rstamp" ]; then
    rm -rf "$root" "$root.stamp"
    debootstrap --variant=minbase --include="$(guest_pkgs)" "$SUITE" "$root" "$(mirror)" >"$LAB/debootstrap.log" 2>&1 \
      || { tail -20 "$LAB/debootstrap.log" >&2; die "debootstrap failed (log: $LAB/debootstrap.log)"; }
    rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*_Packages
    echo "$rstamp" >"$root.stamp"
    phase "debootstrap done ($(since "$t1") s)"
  else
    phase "debootstrap cached ($root)"
  fi
  # the image is assembled from a copy, so the cached root stays pristine
  local stage=$LAB/stage
  rm -rf "$stage"; cp -a "$root" "$stage"
  mkdir -p "$stage/lib/modules"; cp -a "$x/k/lib/modules/$k" "$stage/lib/modules/"
  chroot "$stage" depmod "$k"
  configure_root "$stage"
  t1=$(now)
  rm -f "$IMG/base.img.new"; truncate -s 3G "$IMG/base.img.new"
  mkfs.ext4 -q -F -L labroot -d "$stage" "$IMG/base.img.new"
  rm -rf "$stage"
  cp "$x/k/boot/vmlinuz-$k" "$IMG/vmlinuz"
  mv "$IMG/initrd.gz.new" "$IMG/initrd.gz"; mv "$IMG/base.img.new" "$IMG/base.img"
  {
    echo "kernel_pkg=$kpkg"
    echo "packages=$(guest_pkgs)"
    echo "built=$(date -u +%FT%TZ)"
  } >"$IMG/info"
  echo "$stamp" >"$IMG/stamp"
  rm -rf "$x"
  phase "image built: base.img $(du -h --apparent-size "$IMG/base.img" | cut -f1) sparse, $(du -h "$IMG/base.img" | cut -f1) used ($(since "$t1") s for mkfs; build $(since "$t0") s)"
}
# --- build: end

# Whether PID runs and is qemu (never trust a stale pid file).
qemu_pid() { # guest
  local pid
  [ -r "$RUN/$1.pid" ] || return 1
  pid=$(tr -dc 0-9 <"$RUN/$1.pid")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = qemu-system-x86 ] && echo "$pid"
}

G() { python3 "$CTL" "$RUN" "$@"; } # G guest timeout 'cmd'

# Run the same command in both guests concurrently; fails if either fails.
both() { # timeout cmd
  local rc=0 pa pb
  G sa "$1" "$2" >"$RUN/both.sa.out" 2>&1 & pa=$!
  G sb "$1" "$2" >"$RUN/both.sb.out" 2>&1 & pb=$!
  wait "$pa" || rc=1
  wait "$pb" || rc=1
  if [ "$rc" != 0 ]; then
    for g in sa sb; do say "--- $g:"; cat "$RUN/both.$g.out" >&2; done
  fi
  return "$rc"
}

write_guest_files() { # dir
  local d=$1 g peer
  for g in "${GUESTS[@]}"; do
    peer=$(other "$g")
    cat >"$d/$g.toml" <<EOF
# vmwarden in storage-lab guest $g (scripts/storage-lab.sh)
[agent]
# the guest's only network is the private link to the other guest (peers call each other there)
listen = "0.0.0.0:10177"

[libvirt]
# libvirtd runs in the guest (no domains); without it (STORAGE_LAB_LIBVIRT=0) the collector reports libvirt absent.
enabled = true

[lock]
backend = "lvmlockd"

[actions]
# the lab's nested VMs have no OS and ignore ACPI: destroy them soon after asking
shutdown_timeout_seconds = 8
# nested qemu under TCG inside TCG: a `virsh start` can take over a minute on a loaded machine
virsh_timeout_seconds = 240

[cluster]
node = "$g"
host_id = $(hid_of "$g")
secret_file = "/etc/vmwarden/cluster.secret"
state_dir = "/var/lib/vmwarden"
peers = [{ name = "$peer", url = "http://$(ip_of "$peer"):10177", libvirt_uri = "qemu+tcp://$(ip_of "$peer")/system", migrate_uri = "tcp://$(ip_of "$peer")", host_id = $(hid_of "$peer") }]
EOF
  done
  cat >"$d/r0.res" <<'EOF'
resource r0 {
  protocol C;
  handlers {
    split-brain "/opt/vmwarden/vmwarden drbd-handler --config /etc/vmwarden/vmwarden.toml split-brain";
  }
  net { allow-two-primaries yes; }
  # fixed, low resync rate: the 64 MiB initial sync takes ~20 s, so a test can watch it progress
  disk { c-plan-ahead 0; resync-rate 3M; }
  on sa { device /dev/drbd0; disk /dev/vdc; address 10.99.0.1:7789; meta-disk internal; }
  on sb { device /dev/drbd0; disk /dev/vdc; address 10.99.0.2:7789; meta-disk internal; }
}
EOF
}

start_guest() { # guest netdev-socket-args
  local g=$1
  qemu-system-x86_64 -accel tcg,tb-size=256 -m 512 -smp 1 -name "storage-lab-$g" \
    -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.gz" \
    -append "console=ttyS0 quiet lab.host=$g lab.id=$(hid_of "$g") lab.ip=$(ip_of "$g")" \
    -drive "file=$RUN/$g.qcow2,format=qcow2,if=none,id=r" -device virtio-blk-pci,drive=r,addr=0x4,serial=ROOT \
    -drive "file=$RUN/lun.img,format=raw,if=none,id=s,file.locking=off,cache=none" \
    -device virtio-blk-pci,drive=s,share-rw=on,addr=0x5,serial=SHAREDLUN \
    -drive "file=$RUN/drbd-$g.img,format=raw,if=none,id=d,cache=none" -device "virtio-blk-pci,drive=d,addr=0x6,serial=DRBD$g" \
    -drive "file=$RUN/tools.img,format=raw,if=none,id=t,readonly=on" -device virtio-blk-pci,drive=t,addr=0x8,serial=TOOLS \
    -netdev "socket,id=n0,$2" -device "virtio-net-pci,netdev=n0,mac=52:54:00:99:00:0$(hid_of "$g"),addr=0x7" \
    -chardev "socket,id=ser0,path=$RUN/$g.sock,server=on,wait=off,logfile=$RUN/$g.console.log" \
    -serial chardev:ser0 -display none -no-reboot -nic none -pidfile "$RUN/$g.pid" -daemonize
}

do_down() {
  local g pid
  for g in "${GUESTS[@]}"; do
    pid=$(qemu_pid "$g") || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  done
  # only a directory `up` made (marker file): STORAGE_LAB_RUN could name anything
  if [ -e "$RUN" ]; then
    [ -f "$RUN/.storage-lab-run" ] || die "$RUN has no .storage-lab-run marker: not removing it"
    rm -rf "$RUN"
  fi
}

# Whether the output of CMD in GUEST matches PATTERN (grep -E), without a pipe (no SIGPIPE under pipefail).
has() { # guest timeout cmd pattern
  local o
  o=$(G "$1" "$2" "$3" 2>&1) || true
  grep -qE -- "$4" <<<"$o"
}

do_drbd_primary() {
  local t0 i
  t0=$(now)
  has sa 60 'drbdadm cstate r0' '^Connected' || die "r0 is not Connected"
  if ! has sa 30 'cat /proc/drbd' 'ds:UpToDate/UpToDate'; then
    has sa 30 'drbdadm role r0' '^Primary' || G sa 60 'drbdadm primary --force r0' >/dev/null
    for i in $(seq 1 300); do
      has sa 30 'cat /proc/drbd' 'ds:UpToDate/UpToDate' && break
      sleep 1
    done
    has sa 30 'cat /proc/drbd' 'ds:UpToDate/UpToDate' || die "r0 initial sync did not finish"
    phase "r0 initial sync done ($(since "$t0") s)"
  fi
  both 60 'drbdadm primary r0' || die "drbdadm primary failed"
  has sa 30 'cat /proc/drbd' 'cs:Connected ro:Primary/Primary ds:UpToDate/UpToDate' || die "r0 not Primary/Primary"
  phase "r0 Connected Primary/Primary ($(since "$t0") s)"
}

do_up() {
  local bin=${VMWARDEN_BIN:-} t g ok
  [ -n "$bin" ] || die "VMWARDEN_BIN=/path/to/vmwarden is required"
  [ -x "$bin" ] || die "VMWARDEN_BIN $bin is not an executable"
  [ "$(id -u)" = 0 ] || die "run as root"
  do_build
  do_down
  mkdir -p "$RUN"
  touch "$RUN/.storage-lab-run"
  t=$(now)
  # the vmwarden tools disk: binary, per-guest configs, r0.res (read-only in both guests)
  local tools=$RUN/tools
  mkdir -p "$tools"
  cp "$bin" "$tools/vmwarden"
  strip --strip-debug "$tools/vmwarden" 2>/dev/null || true
  write_guest_files "$tools"
  # one cluster secret for both agents (node-to-node calls); it lives only in this run dir and the guests
  (umask 077 && head -c 32 /dev/urandom | base64 >"$tools/cluster.secret")
  truncate -s $(( $(du -sm "$tools" | cut -f1) + 32 ))M "$RUN/tools.img"
  mkfs.ext4 -q -F -L vmwtools -d "$tools" "$RUN/tools.img"
  truncate -s 1G "$RUN/lun.img"
  for g in "${GUESTS[@]}"; do
    qemu-img create -q -f qcow2 -b "$IMG/base.img" -F raw "$RUN/$g.qcow2"
    truncate -s 64M "$RUN/drbd-$g.img"
  done
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then die "127.0.0.1:$PORT is in use (STORAGE_LAB_PORT=)"; fi
  # the only "network": qemu <-> qemu over loopback
  start_guest sa "listen=127.0.0.1:$PORT"
  start_guest sb "connect=127.0.0.1:$PORT"
  for _ in $(seq 1 300); do
    ok=1
    for g in "${GUESTS[@]}"; do
      grep -q "=== \[$g\] READY" "$RUN/$g.console.log" 2>/dev/null || ok=0
      qemu_pid "$g" >/dev/null || die "guest $g died (console: $RUN/$g.console.log)"
    done
    [ "$ok" = 1 ] && break
    sleep 0.5
  done
  [ "$ok" = 1 ] || die "guests did not boot in 150 s (console: $RUN/*.console.log)"
  phase "guests booted ($(since "$t") s)"

  t=$(now)
  # lvmlockd picks its lock manager at start: sanlock must answer first (else vgcreate --shared
  # says "Failed to detect a running lock manager").
  both 60 'sanlock daemon -w 0 || exit 1
    for i in $(seq 100); do sanlock client status >/dev/null 2>&1 && break; sleep 0.1; done
    lvmlockd || exit 1
    for i in $(seq 100); do lvmlockctl --info >/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1' \
    || die "sanlock/lvmlockd did not start"
  phase "sanlock + lvmlockd started ($(since "$t") s)"
  # An image with libvirt (STORAGE_LAB_LIBVIRT=1): start virtlogd + libvirtd, so vmwarden's libvirt
  # collector sees a running libvirt with no domains (installed but not running is a failure that
  # keeps the lock invariants unjudged).
  if has sa 30 'command -v libvirtd' 'libvirtd'; then
    t=$(now)
    # --listen: unauthenticated TCP, reachable only over the guests' private link (10.99.0.0/24
    # between the two qemu processes), for live migration between sa and sb.
    # vmwarden's qemu hook before libvirtd starts (libvirtd reads its hooks at start): a plain
    # `virsh start` then takes the VM's LV lock first, or is refused naming the holder.
    both 150 'mkdir -p /run/libvirt /var/log/libvirt /etc/libvirt/hooks
      ln -sf /opt/vmwarden/vmwarden /etc/libvirt/hooks/qemu
      install -m 600 /opt/vmwarden/cluster.secret /etc/vmwarden/cluster.secret
      grep -q "^listen_tcp = 1" /etc/libvirt/libvirtd.conf 2>/dev/null ||
        printf "listen_tls = 0\nlisten_tcp = 1\nauth_tcp = \"none\"\n" >>/etc/libvirt/libvirtd.conf
      virtlogd -d || exit 1
      LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/libvirtd.log" setsid libvirtd --listen </dev/null >/var/log/libvirt/libvirtd.out 2>&1 &
      for i in $(seq 120); do virsh -c qemu:///system list >/dev/null 2>&1 && exit 0; sleep 0.5; done
      echo "libvirtd did not answer; its output and log:"; tail -5 /var/log/libvirt/libvirtd.out; tail -15 /var/log/libvirt/libvirtd.log; exit 1' \
      || die "libvirtd did not start"
    phase "virtlogd + libvirtd started ($(since "$t") s)"
  fi
  # DRBD first: in `primary` mode its initial sync runs while the VG is created
  t=$(now)
  both 120 'drbdadm create-md --force r0 >/dev/null 2>&1 && drbdadm up r0' || die "drbdadm up failed"
  for _ in $(seq 1 120); do has sa 30 'drbdadm cstate r0' '^Connected' && break; sleep 0.5; done
  has sa 30 'drbdadm cstate r0' '^Connected' || die "r0 did not connect"
  phase "r0 up, Connected Secondary/Secondary ($(since "$t") s)"
  if [ "${STORAGE_LAB_DRBD:-primary}" = primary ]; then
    G sa 60 'drbdadm primary --force r0' >/dev/null || die "drbdadm primary --force failed"
    phase "r0 initial sync started (sa primary)"
  fi
  t=$(now)
  G sa 300 'vgcreate --shared vg1 /dev/vdb' >/dev/null || die "vgcreate --shared failed"
  phase "vgcreate --shared vg1 on sa ($(since "$t") s)"
  t=$(now)
  # without udev the first lock-start on the second host fails once (docs/storage-lab.md): retry
  G sb 300 'for i in 1 2 3; do vgchange --lock-start vg1 && exit 0; sleep 2; done; exit 1' >/dev/null \
    || die "vgchange --lock-start on sb failed"
  phase "vgchange --lock-start vg1 on sb ($(since "$t") s)"
  t=$(now)
  G sa 300 'for lv in lv1 lv2 lv3; do lvcreate -q -an -L 64M -n $lv vg1 || exit 1; done' >/dev/null || die "lvcreate failed"
  phase "lv1..lv3 created, inactive ($(since "$t") s)"

  [ "${STORAGE_LAB_DRBD:-primary}" = primary ] && do_drbd_primary

  phase "storage lab up"
  cat >&2 <<EOF

  scripts/storage-lab.sh exec sa 'lvs; lvmlockctl --info; cat /proc/drbd'
  scripts/storage-lab.sh exec sa '/opt/vmwarden/vmwarden lock exclusive vg1/lv1'   # config: /etc/vmwarden/vmwarden.toml
  scripts/storage-lab.sh exec sb '/opt/vmwarden/vmwarden collect'
  scripts/storage-lab.sh down      (guest consoles: $RUN/sa.console.log, $RUN/sb.console.log)
EOF
}

# vmwarden's agent (`vmwarden run`) in both guests, listening on the private link (10177); log in the
# guest's /var/log/vmwarden.log. Not part of `up`: the lock and DRBD tests drive vmwarden by hand.
do_agents() {
  [ -n "$(qemu_pid sa)" ] && [ -n "$(qemu_pid sb)" ] || die "the lab is not up"
  both 90 'if ! ss -ltn | grep -q ":10177 "; then
      setsid /opt/vmwarden/vmwarden run --config /etc/vmwarden/vmwarden.toml </dev/null >>/var/log/vmwarden.log 2>&1 &
    fi
    for i in $(seq 160); do ss -ltn | grep -q ":10177 " && exit 0; sleep 0.5; done
    echo "the agent did not listen on 10177; its log:"; tail -20 /var/log/vmwarden.log; exit 1' \
    || die "vmwarden agents did not start"
  phase "vmwarden agents listening in sa and sb"
}

# The nested VM `vmt` defined on both guests: OS-less (the BIOS finds nothing to boot and waits),
# its disk the LV vg1/lv3 of the shared VG, cache=none as a live migration between hosts needs.
do_define_vm() {
  both 60 'cat >/tmp/vmt.xml <<EOF
<domain type="qemu">
  <name>vmt</name>
  <uuid>7f1d2a4e-5b3c-4e8f-9a0b-1c2d3e4f5a6b</uuid>
  <memory unit="MiB">32</memory>
  <vcpu>1</vcpu>
  <os><type arch="x86_64">hvm</type></os>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type="block" device="disk">
      <driver name="qemu" type="raw" cache="none"/>
      <source dev="/dev/vg1/lv3"/>
      <target dev="vda" bus="virtio"/>
    </disk>
  </devices>
</domain>
EOF
virsh -c qemu:///system define /tmp/vmt.xml' || die "defining vmt failed"
  phase "vmt (disk vg1/lv3) defined on sa and sb"
}

# vmwarden's qemu hook on|off in both guests; libvirtd reads hooks when it starts, so it restarts
# (running domains survive a libvirtd restart).
set_hook() { # on|off
  local link='rm -f /etc/libvirt/hooks/qemu'
  [ "$1" = on ] && link='ln -sf /opt/vmwarden/vmwarden /etc/libvirt/hooks/qemu'
  both 120 "$link
    pkill -x libvirtd; for i in \$(seq 100); do pgrep -x libvirtd >/dev/null || break; sleep 0.1; done
    LIBVIRT_LOG_OUTPUTS='3:file:/var/log/libvirt/libvirtd.log' setsid libvirtd --listen </dev/null >>/var/log/libvirt/libvirtd.out 2>&1 &
    for i in \$(seq 120); do virsh -c qemu:///system list >/dev/null 2>&1 && exit 0; sleep 0.5; done; exit 1" \
    || die "restarting libvirtd (hook $1) failed"
}

# In-guest wall time of a command, in seconds (the command channel's own cost left out).
timed() { # guest cmd
  local v
  v=$(G "$1" 300 "t=\$(date +%s.%N); { $2; } >/tmp/timed.out 2>&1 || { cat /tmp/timed.out; exit 1; }; awk -v a=\$t -v b=\$(date +%s.%N) 'BEGIN { printf \"%.3f\", b - a }'") \
    || die "[$1] $2 failed: $v"
  echo "$v"
}

median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Live migration of vmt, N round trips: by hand as the seed clusters do it today (the lvchange dance
# around a plain `virsh migrate`, no hook; the sum of the five commands' in-guest times) against
# `vmwarden ctl migrate` (agents, hook, journal, peer calls). The by-hand block first, then vmwarden's.
do_bench_migrate() {
  local n=${1:-5} i src dst t1 t2 t3 t4 t5
  do_agents
  do_define_vm
  rm -f "$RUN"/bmig.*
  set_hook off
  G sa 120 'lvchange -aey vg1/lv3 && virsh -c qemu:///system start vmt' >/dev/null || die "plain start failed"
  for i in $(seq 1 "$n"); do
    for src in sa sb; do
      dst=$(other "$src")
      t1=$(timed "$src" 'lvchange -asy vg1/lv3')
      t2=$(timed "$dst" 'lvchange -asy vg1/lv3')
      t3=$(timed "$src" "virsh -c qemu:///system migrate --live --persistent --undefinesource vmt qemu+tcp://$(ip_of "$dst")/system tcp://$(ip_of "$dst")")
      t4=$(timed "$src" 'lvchange -an vg1/lv3')
      t5=$(timed "$dst" 'lvchange -aey vg1/lv3')
      awk -v a="$t1" -v b="$t2" -v c="$t3" -v d="$t4" -v e="$t5" 'BEGIN { printf "%.3f\n", a + b + c + d + e }' >>"$RUN/bmig.plain"
      echo "$t3" >>"$RUN/bmig.plain-virsh"
      phase "round $i by hand $src -> $dst: $(tail -1 "$RUN/bmig.plain") s (virsh migrate $t3 s)"
    done
  done
  G sa 120 'virsh -c qemu:///system destroy vmt && lvchange -an vg1/lv3' >/dev/null || die "cleanup after the by-hand block failed"
  set_hook on
  G sa 120 '/opt/vmwarden/vmwarden ctl start vmt' >/dev/null || die "vmwarden ctl start failed"
  for i in $(seq 1 "$n"); do
    for src in sa sb; do
      dst=$(other "$src")
      timed "$src" "/opt/vmwarden/vmwarden ctl migrate vmt --to $dst" >>"$RUN/bmig.vmwarden"
      phase "round $i vmwarden $src -> $dst: $(tail -1 "$RUN/bmig.vmwarden") s"
    done
  done
  G sa 120 '/opt/vmwarden/vmwarden ctl stop vmt' >/dev/null || die "vmwarden ctl stop failed"
  local p v
  p=$(median "$RUN/bmig.plain"); v=$(median "$RUN/bmig.vmwarden")
  echo "live migration of vmt (vg1/lv3), $n round trips, medians:"
  echo "  by hand (lvchange dance + virsh migrate): $p s   (virsh migrate alone $(median "$RUN/bmig.plain-virsh") s)   all: $(tr '\n' ' ' <"$RUN/bmig.plain")"
  echo "  vmwarden ctl migrate:                     $v s   all: $(tr '\n' ' ' <"$RUN/bmig.vmwarden")"
  awk -v p="$p" -v v="$v" 'BEGIN { printf "  ratio vmwarden / by hand: %.2f\n", v / p }'
}

do_status() {
  local g pid
  [ -f "$IMG/stamp" ] && say "image $IMG/base.img (stamp $(cat "$IMG/stamp"); $(tr '\n' ' ' <"$IMG/info"))" || say "no image (build)"
  for g in "${GUESTS[@]}"; do
    if pid=$(qemu_pid "$g"); then say "$g: running (qemu pid $pid, host_id $(hid_of "$g"))"; else say "$g: not running"; fi
  done
}

# Time each lvchange of the migration lock dance on real lvmlockd (vg1/lv3, N rounds; median).
# Measured in the guest around the lvchange alone (the serial channel is not counted).
do_bench_locks() {
  local n=${1:-5} i step g flag v
  local steps=("acquire-ex sa -aey" "ex-to-sh sa -asy" "acquire-sh sb -asy" "release-sh sa -an" "sh-to-ex sb -aey" "release-ex sb -an")
  rm -f "$RUN"/bench.*
  for i in $(seq 1 "$n"); do
    for step in "${steps[@]}"; do
      set -- $step
      v=$(G "$2" 120 "t=\$(date +%s.%N); lvchange $3 vg1/lv3 >/tmp/bench.err 2>&1 || { cat /tmp/bench.err; exit 1; }; awk -v a=\$t -v b=\$(date +%s.%N) 'BEGIN { printf \"%.3f\", b - a }'") \
        || die "round $i: $1 ($2 lvchange $3) failed: $v"
      echo "$v" >>"$RUN/bench.$1"
    done
  done
  printf '%-12s %-4s %-10s %8s   %s\n' step host lvchange median "all runs (s)"
  for step in "${steps[@]}"; do
    set -- $step
    printf '%-12s %-4s %-10s %8s   %s\n' "$1" "$2" "$3" \
      "$(sort -n "$RUN/bench.$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')" \
      "$(tr '\n' ' ' <"$RUN/bench.$1")"
  done
}

# The probe's exact `lvm fullreport` argv (src/probe/lvm.rs fullreport_cmd), as one sh line.
FULLREPORT="LVM_SUPPRESS_FD_WARNINGS=1 lvm fullreport --reportformat json --units b --nosuffix --binary --shared \
--config 'report { compact_output = 0 }' \
--configreport vg -o vg_name,vg_uuid,vg_lock_type,vg_lock_args,vg_size,vg_free,vg_shared,vg_clustered,vg_attr \
--configreport lv -o vg_name,lv_name,lv_uuid,lv_size,lv_active,lv_active_locally,lv_active_remotely,lv_active_exclusively,lv_lock_args,lv_attr,lv_path,lv_dm_path \
--configreport pv -o pv_name -S 'pv_size<0' --configreport pvseg -o pvseg_start -S 'pvseg_start<0' \
--configreport seg -o lv_uuid,devices"

# Re-capture tests/fixtures/real/ from a fresh lab: up (r0 left Connected Secondary/Secondary),
# every state in turn, down. Each file is what the command printed (stdout only where a parser
# reads stdout).
do_capture() {
  local out=$REPO/tests/fixtures/real t0 i
  [ -n "${VMWARDEN_BIN:-}" ] || die "VMWARDEN_BIN=/path/to/vmwarden is required"
  t0=$(now)
  trap 'do_down' EXIT
  STORAGE_LAB_DRBD=connected do_up
  mkdir -p "$out"
  C() { # guest file cmd
    G "$1" 120 "$3" >"$out/$2" || die "capture $2 ($1: $3) failed: $(tail -3 "$out/$2")"
  }
  # --- LVM + sanlock: lv1 exclusive on sa
  G sa 120 'lvchange -aey vg1/lv1' >/dev/null || die "lvchange -aey on sa failed"
  C sa lvm-fullreport-lv1-ex.json "$FULLREPORT 2>/dev/null"
  C sa lvmlockctl-info-lv1-ex.txt 'lvmlockctl --info'
  C sa sanlock-status-D-lv1-ex.txt 'sanlock client status -D'
  C sa sanlock-gets-h1.txt 'sanlock client gets -h 1'
  G sb 120 'lvchange -aey vg1/lv1' >"$out/lvchange-aey-held-ex-by-other.txt" && die "sb got lv1 while sa held it ex"
  # lv1 shared on both (sa ex -> sh, sb sh)
  G sa 120 'lvchange -asy vg1/lv1' >/dev/null || die "ex->sh on sa failed"
  G sb 120 'lvchange -asy vg1/lv1' >/dev/null || die "-asy on sb failed"
  C sb lvm-fullreport-lv1-sh.json "$FULLREPORT 2>/dev/null"
  C sb lvmlockctl-info-lv1-sh.txt 'lvmlockctl --info'
  C sb sanlock-status-D-lv1-sh.txt 'sanlock client status -D'
  G sb 120 'lvchange -aey vg1/lv1' >"$out/lvchange-aey-shared-by-both.txt" && die "sb got lv1 ex while sa held it sh"
  both 120 'lvchange -an vg1/lv1' || die "release failed"

  # --- DRBD 8.4
  C sa proc-drbd-connected-secondary-inconsistent.txt 'cat /proc/drbd'
  G sa 60 'drbdadm primary --force r0' >/dev/null || die "drbdadm primary --force failed"
  sleep 4
  C sa proc-drbd-syncsource.txt 'cat /proc/drbd'
  C sb proc-drbd-synctarget.txt 'cat /proc/drbd'
  C sa drbdsetup-events2-now-syncsource.txt 'drbdsetup events2 --now'
  grep -q SyncSource "$out/proc-drbd-syncsource.txt" || die "no SyncSource captured (sync too fast?)"
  for i in $(seq 1 300); do has sb 30 'cat /proc/drbd' 'ds:UpToDate/UpToDate' && break; sleep 1; done
  G sb 60 'drbdadm primary r0' >/dev/null || die "primary on sb failed"
  C sa proc-drbd-connected-primary-primary.txt 'cat /proc/drbd'
  C sa drbdsetup-events2-now-primary-primary.txt 'drbdsetup events2 --now'
  C sa drbdsetup-status-primary-primary.txt 'drbdsetup status r0 --color=never --verbose --statistics'
  G sa 60 'drbdadm disconnect r0' >/dev/null || die "disconnect failed"
  sleep 2
  C sa proc-drbd-standalone.txt 'cat /proc/drbd'
  C sb proc-drbd-wfconnection.txt 'cat /proc/drbd'
  C sb drbdsetup-events2-now-wfconnection.txt 'drbdsetup events2 --now'
  # split brain: both primaries write while disconnected, then reconnect
  both 60 'dd if=/dev/urandom of=/dev/drbd0 bs=4k count=16 oflag=direct 2>/dev/null'
  G sa 60 'drbdadm connect r0' >/dev/null || die "connect failed"
  for i in $(seq 1 60); do
    has sb 30 'cat /proc/drbd' 'cs:StandAlone' && has sa 30 'cat /proc/drbd' 'cs:StandAlone' && break
    sleep 1
  done
  C sa proc-drbd-split-brain-sa.txt 'cat /proc/drbd'
  C sb proc-drbd-split-brain-sb.txt 'cat /proc/drbd'
  C sa dmesg-split-brain-sa.txt "dmesg | grep -E 'drbd|block drbd' | sed -n '/Split-Brain\\|split-brain/,\$p' | sed 's/^\\[ *[0-9.]*\\] //'"
  C sa VERSIONS.sa 'echo "kernel: $(uname -r) ($(cat /proc/version))"; echo "drbd module: $(head -1 /proc/drbd)"; echo "lvm: $(lvm version | head -3 | tr "\n" ";")"; echo "sanlock: $(sanlock version 2>&1 | head -1)"; dpkg-query -W -f "package \${Package} \${Version}\n" lvm2 lvm2-lockd sanlock drbd-utils'
  { echo "Captured by scripts/storage-lab.sh capture on $(date -u +%F) (kernel package $(sed -n 's/^kernel_pkg=//p' "$IMG/info"), Debian 12 guests)."
    echo "Guests sa (sanlock host_id 1) and sb (host_id 2); shared VG vg1 on the lab LUN; DRBD r0 64 MiB."
    cat "$out/VERSIONS.sa"; } >"$out/VERSIONS"
  rm -f "$out/VERSIONS.sa"
  phase "captured $(ls "$out" | wc -l) files into $out ($(since "$t0") s)"
}

case "${1:-}" in
  build) [ "$(id -u)" = 0 ] || die "run as root"; do_build ;;
  up) do_up ;;
  down) do_down; phase "down" ;;
  status) do_status ;;
  drbd-primary) do_drbd_primary ;;
  agents) do_agents ;;
  define-vm) do_define_vm ;;
  bench-migrate) shift; do_bench_migrate "${1:-5}" ;;
  bench-locks) shift; do_bench_locks "${1:-5}" ;;
  exec)
    [ $# -ge 3 ] || die "usage: exec GUEST 'CMD'"
    hid_of "$2" >/dev/null
    qemu_pid "$2" >/dev/null || die "guest $2 is not running (up)"
    exec python3 "$CTL" "$RUN" "$2" "${STORAGE_LAB_TIMEOUT:-300}" "$3"
    ;;
  capture) do_capture ;;
  *) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
