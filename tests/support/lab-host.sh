#!/bin/bash
# One lab "host" for tests and fixture captures: a real sanlock daemon (and optionally lvmlockd) in
# its own mount namespace, so several hosts can run on one machine and none touches the machine's
# own /run/sanlock, /run/lvm or /var/log.
#
# Run it under `unshare -m --propagation private` (it refuses to run in the initial namespace):
#   unshare -m --propagation private bash tests/support/lab-host.sh DIR NAME SHIM WATCH_PID \
#       [--lvmlockd] [--mapper NAME=TARGET]...
#   DIR        work directory (lease files, logs, pid files: DIR/NAME.*)
#   NAME       host name used for the files (h1, h2, ...)
#   SHIM       LD_PRELOAD library from tests/support/setrlimit_shim.c (the sandbox cannot raise
#              RLIMIT_MEMLOCK/RTPRIO, which sanlock insists on)
#   WATCH_PID  the host shuts itself down when this process is gone (the test or capture script),
#              so nothing outlives a crashed caller
#   --lvmlockd also start lvmlockd (sanlock I/O timeout 1 s)
#   --mapper   create /dev/mapper/NAME -> TARGET in a private /dev/mapper (stands in for the
#              lvmlock LV of a shared VG: this kernel has no device-mapper)
# Writes DIR/NAME.ready when the daemons answer. Other commands join the host with
# `nsenter -t <pid of this script> -m ...`. On exit every process left in the namespace is killed.
set -euo pipefail

if [ $# -lt 4 ]; then
  echo "usage: lab-host.sh DIR NAME SHIM WATCH_PID [--lvmlockd] [--mapper NAME=TARGET]..." >&2
  exit 2
fi
DIR=$1 NAME=$2 SHIM=$3 WATCH=$4
shift 4
LVMLOCKD=0
LINKS=()
while [ $# -gt 0 ]; do
  case $1 in
    --lvmlockd) LVMLOCKD=1 ;;
    --mapper) LINKS+=("$2"); shift ;;
    *) echo "lab-host.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

# Mounting over /run in the machine's own namespace would break the machine: refuse.
if [ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ]; then
  echo "lab-host.sh: not in a private mount namespace (run it under unshare -m --propagation private)" >&2
  exit 3
fi

MYNS=$(readlink /proc/self/ns/mnt)
cleanup() {
  trap - EXIT TERM INT HUP
  set +e
  # Polite first: lvmlockd holds its locks as a sanlock client, sanlock refuses TERM while
  # lockspaces exist, so ask it to shut down with force.
  [ -n "${LPID:-}" ] && kill -TERM "$LPID" 2>/dev/null
  sanlock client shutdown -f 1 >/dev/null 2>&1
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ -n "${SPID:-}" ] && kill -0 "$SPID" 2>/dev/null || break
    sleep 0.2
  done
  # Then everything still in this mount namespace (daemons, lease holders started by nsenter).
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] && continue
    [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$MYNS" ] && kill -KILL "$pid" 2>/dev/null
  done
  wait 2>/dev/null
  rm -f "$DIR/$NAME.ready"
}
trap cleanup EXIT
trap 'exit 0' TERM INT HUP

mount -t tmpfs -o mode=0755 lab-run /run
mkdir -p /run/sanlock /run/lvm /run/lock/lvm
# sanlock and lvmlockd log to /var/log: keep those logs in DIR, not in the machine's /var/log.
mkdir -p "$DIR/$NAME.varlog"
mount --bind "$DIR/$NAME.varlog" /var/log
if [ ${#LINKS[@]} -gt 0 ]; then
  mkdir -p /dev/mapper
  mount -t tmpfs -o mode=0755 lab-mapper /dev/mapper
  for l in "${LINKS[@]}"; do ln -s "${l#*=}" "/dev/mapper/${l%%=*}"; done
fi

# -w 0: no watchdog device (tests only); -D: foreground, log to stderr.
env LD_PRELOAD="$SHIM" sanlock daemon -w 0 -U root -G root -D >"$DIR/$NAME.sanlock.log" 2>&1 &
SPID=$!
echo "$SPID" >"$DIR/$NAME.sanlock.pid"
for _ in $(seq 1 100); do
  [ -S /run/sanlock/sanlock.sock ] && break
  kill -0 "$SPID" 2>/dev/null || break
  sleep 0.1
done
if ! sanlock client status >/dev/null 2>&1; then
  echo "lab-host.sh: sanlock daemon did not come up; its log:" >&2
  cat "$DIR/$NAME.sanlock.log" >&2
  exit 1
fi

if [ "$LVMLOCKD" = 1 ]; then
  lvmlockd -f -o 1 >"$DIR/$NAME.lvmlockd.log" 2>&1 &
  LPID=$!
  echo "$LPID" >"$DIR/$NAME.lvmlockd.pid"
  for _ in $(seq 1 100); do
    [ -S /run/lvm/lvmlockd.socket ] && break
    kill -0 "$LPID" 2>/dev/null || break
    sleep 0.1
  done
  if ! lvmlockctl --info >/dev/null 2>&1; then
    echo "lab-host.sh: lvmlockd did not come up; its log:" >&2
    cat "$DIR/$NAME.lvmlockd.log" >&2
    exit 1
  fi
fi

echo ready >"$DIR/$NAME.ready"
while kill -0 "$WATCH" 2>/dev/null && kill -0 "$SPID" 2>/dev/null; do
  sleep 0.5 &
  wait $! || true
done
