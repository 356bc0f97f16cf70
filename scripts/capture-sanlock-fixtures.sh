#!/bin/bash
# Capture real sanlock outputs into tests/fixtures/sanlock/: two real sanlock daemons ("hosts" h1 and
# h2, host_id 1 and 2, each in its own mount namespace) share one lease file; exclusive and shared
# leases; a lockspace being added; the peer crashing (FAIL, then DEAD); no daemon at all.
# Takes about two minutes (waiting for the crashed peer to turn DEAD). Run as root:
#   scripts/capture-sanlock-fixtures.sh [OUTDIR]
set -euo pipefail
LAB_KIND=sanlock-capture
. "$(dirname "$0")/lab-common.sh"
OUT=${1:-$REPO/tests/fixtures/sanlock}
mkdir -p "$OUT"

L=$WORK/leases
cap() { # cap FILE HOST CMD... : stdout+stderr of CMD on HOST into OUT/FILE (rc recorded if non-zero)
  local file=$1 host=$2; shift 2
  local rc=0
  on "$host" "$@" >"$OUT/$file" 2>&1 || rc=$?
  [ "$rc" = 0 ] || echo "(exit status $rc)" >>"$OUT/$file"
}
wait_gets() { # wait_gets HOST REGEX SECONDS
  for _ in $(seq 1 $(($3 * 2))); do
    on "$1" sanlock client gets -h 1 2>/dev/null | grep -Eq "$2" && return 0
    sleep 0.5
  done
  echo "timed out waiting for '$2' in gets on $1" >&2
  on "$1" sanlock client gets -h 1 >&2 || true
  return 1
}

start_host h1
start_host h2

say "lockspace LS on one 16 MiB lease file, io_timeout 1 s"
truncate -s 16M "$L"
on h1 sanlock client init -s "LS:0:$L:0" -o 1 >/dev/null
on h1 sanlock client add_lockspace -s "LS:1:$L:0" -o 1 >/dev/null
on h2 sanlock client add_lockspace -s "LS:2:$L:0" -o 1 >/dev/null
for r in vm1:1048576 vm2:2097152 vm3:3145728; do
  on h1 sanlock client init -r "LS:${r%%:*}:$L:${r#*:}" >/dev/null
done

say "leases: vm1 ex on h1, vm2 shared on h1 and h2, vm3 ex on h2"
on h1 sanlock client command -r "LS:vm1:$L:1048576" -c /bin/sleep 3600 >"$WORK/c1.log" 2>&1 &
on h1 sanlock client command -r "LS:vm2:$L:2097152:SH" -c /bin/sleep 3600 >"$WORK/c2.log" 2>&1 &
on h2 sanlock client command -r "LS:vm2:$L:2097152:SH" -c /bin/sleep 3600 >"$WORK/c3.log" 2>&1 &
on h2 sanlock client command -r "LS:vm3:$L:3145728" -c /bin/sleep 3600 >"$WORK/c4.log" 2>&1 &
for _ in $(seq 1 40); do
  n=$(( $(on h1 sanlock client status | grep -c '^r ' || true) + $(on h2 sanlock client status | grep -c '^r ' || true) ))
  [ "$n" = 4 ] && break
  sleep 0.25
done
[ "$n" = 4 ] || { echo "leases not all acquired:"; cat "$WORK"/c*.log; exit 1; } >&2
wait_gets h1 '^h 2 .* LIVE$' 30
wait_gets h2 '^h 1 .* LIVE$' 30

say "h2 asks for vm1 exclusively (held by h1: must fail)"
cap h2-acquire-vm1-held-by-h1.txt h2 sanlock client command -r "LS:vm1:$L:1048576" -c /bin/true

for h in h1 h2; do
  cap $h-status.txt $h sanlock client status
  cap $h-status-D.txt $h sanlock client status -D
  cap $h-gets-h1.txt $h sanlock client gets -h 1
  cap $h-host-status-D.txt $h sanlock client host_status -s LS -D
  cap $h-renewal.txt $h sanlock client renewal -s LS
done
# The clock sanlock's timestamps count in: monotonic seconds (compare with the daemon's monotime).
{ echo "# /proc/uptime at capture"; cat /proc/uptime; } >"$OUT/uptime-at-capture.txt"

say "h1 adds a second lockspace with the default io_timeout (slow): capture while it is being added"
truncate -s 16M "$WORK/leases2"
on h1 sanlock client init -s "LS2:0:$WORK/leases2:0" >/dev/null
on h1 sanlock client add_lockspace -s "LS2:1:$WORK/leases2:0" >"$WORK/add2.log" 2>&1 &
sleep 2
cap h1-status-D-adding.txt h1 sanlock client status -D
cap h1-gets-h1-adding.txt h1 sanlock client gets -h 1

say "h2 crashes (kill -9 of its daemon): h1 sees host 2 FAIL, then DEAD"
kill -KILL "$(cat "$WORK/h2.sanlock.pid")"
wait_gets h1 '^h 2 .* FAIL$' 60
cap h1-gets-h1-peer-fail.txt h1 sanlock client gets -h 1
cap h1-host-status-D-peer-fail.txt h1 sanlock client host_status -s LS -D
wait_gets h1 '^h 2 .* DEAD$' 180
cap h1-gets-h1-peer-dead.txt h1 sanlock client gets -h 1
cap h1-status-D-peer-dead.txt h1 sanlock client status -D

say "no daemon: what the client prints"
unshare -m --propagation private sh -c '
  mount -t tmpfs tmpfs /run/sanlock
  for c in "status -D" "gets -h 1"; do
    echo "\$ sanlock client $c"
    sanlock client $c >/tmp/.o.$$ 2>/tmp/.e.$$; rc=$?
    echo "--- stdout"; cat /tmp/.o.$$; echo "--- stderr"; cat /tmp/.e.$$; echo "--- exit status $rc"
    rm -f /tmp/.o.$$ /tmp/.e.$$
  done' >"$OUT/no-daemon.txt" 2>&1

{
  echo "captured: $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/capture-sanlock-fixtures.sh"
  echo "sanlock: $(sanlock version 2>&1) (Debian package $(dpkg-query -W -f='${Version}' sanlock 2>/dev/null || echo '?'))"
  echo "kernel: $(uname -r)"
  echo "lease file: $L (16 MiB, io_timeout 1 s)"
} >"$OUT/VERSIONS"
say "fixtures written to $OUT"
