# Sourced by the capture scripts: a work directory, the setrlimit shim, lab hosts
# (tests/support/lab-host.sh in private mount namespaces) and a cleanup that always runs.
# Needs root, sanlock, util-linux (unshare, nsenter) and a C compiler.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "/tmp/vmwarden-${LAB_KIND:-lab}.XXXXXX")
HOST_PIDS=()
EXTRA_CLEANUP=()

lab_cleanup() {
  set +e
  local f p
  # lab-host.sh kills everything in its namespace when it gets TERM.
  for p in "${HOST_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${HOST_PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  wait 2>/dev/null
  for f in "${EXTRA_CLEANUP[@]}"; do eval "$f"; done
  rm -rf "$WORK"
}
trap lab_cleanup EXIT
trap 'exit 1' INT TERM HUP

say() { echo "### $(date +%T) $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "run as root (mount namespaces, loop devices)" >&2; exit 1; }
for t in sanlock unshare nsenter cc; do
  command -v "$t" >/dev/null || { echo "missing $t (scripts/setup.sh installs it)" >&2; exit 1; }
done

SHIM=$WORK/libsetrlimit_shim.so
cc -shared -fPIC -O2 -Wall -o "$SHIM" "$REPO/tests/support/setrlimit_shim.c" -ldl

# start_host NAME [lab-host.sh options...]: sets HOSTPID_<NAME>
start_host() {
  local name=$1; shift
  unshare -m --propagation private bash "$REPO/tests/support/lab-host.sh" "$WORK" "$name" "$SHIM" $$ "$@" \
    >"$WORK/$name.host.log" 2>&1 &
  local pid=$!
  HOST_PIDS+=("$pid")
  eval "HOSTPID_$name=$pid"
  for _ in $(seq 1 300); do
    [ -f "$WORK/$name.ready" ] && { say "host $name up (namespace pid $pid)"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "host $name did not come up:" >&2
  cat "$WORK/$name.host.log" >&2
  exit 1
}

# on NAME CMD...: run a command inside host NAME's mount namespace
on() {
  local name=$1; shift
  local pid
  eval "pid=\$HOSTPID_$name"
  nsenter -t "$pid" -m "$@"
}
