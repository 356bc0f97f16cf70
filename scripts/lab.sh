#!/usr/bin/env bash
# A two-node lab on one machine: nodes n1 and n2, each a network namespace (vmw-n1, vmw-n2, joined
# by one veth pair, 10.77.0.1/24 and 10.77.0.2/24) plus a private mount namespace (tests/support/
# lab-host.sh: tmpfs over /run, its own /var/log) running its own sanlock daemon, virtlogd and
# libvirtd --listen (own /etc/libvirt copy with its own host_uuid, /var/lib/libvirt,
# /var/cache/libvirt). Both sanlocks join the lockspace `vmwarden` in one shared lease file;
# guest disks go to $VMWARDEN_LAB_DIR/shared, which both nodes see.
#
#   scripts/lab.sh up                 (re)create the lab; cleans leftovers of a crashed run first
#   scripts/lab.sh down               remove every process, namespace, mount and file it made
#   scripts/lab.sh status             what is running
#   scripts/lab.sh exec NODE CMD...   run CMD inside node NODE (its network and mount namespace)
#   scripts/lab.sh agent-start NODE [VAR=VALUE...]   start vmwarden's agent in NODE (env for it)
#   scripts/lab.sh agent-stop NODE [SIGNAL]          stop it (default TERM; KILL to crash it)
#   scripts/lab.sh libvirtd-stop|libvirtd-start NODE  (failure tests)
#
# With VMWARDEN_BIN=/path/to/vmwarden, `up` also makes each node a vmwarden node: a config in
# $LAB/NODE/vmwarden.toml (sanlock lease backend, the other node as peer), one cluster secret,
# the qemu hook in the node's /etc/libvirt/hooks (before libvirtd starts: it reads hooks then),
# lease slots for the VMs named in VMWARDEN_LAB_VMS (default "vmw-a vmw-b"), and the agents.
#
# Lab only: libvirtd accepts unauthenticated TCP on 10.77.0.x, reachable only inside the lab's
# network namespaces (no interface of the lab is in the machine's own network namespace).
# Processes are stopped by recorded pid after checking their name; the only namespace-wide kill
# is of processes provably in a lab network namespace (fail-closed, see sweep_netns), plus
# lab-host.sh's own fail-closed sweep of its private mount namespace.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB=${VMWARDEN_LAB_DIR:-/tmp/vmwarden-lab}
NODES=(n1 n2)
LOCKSPACE=vmwarden
LEASES=$LAB/shared/leases

say() { echo "lab: $*" >&2; }
die() { echo "lab: $*" >&2; exit 1; }

ns_of() { echo "vmw-$1"; }
ip_of() { case $1 in n1) echo 10.77.0.1 ;; n2) echo 10.77.0.2 ;; *) die "unknown node $1" ;; esac; }
hid_of() { case $1 in n1) echo 1 ;; n2) echo 2 ;; *) die "unknown node $1" ;; esac; }

# Whether PID runs and is NAME (a zombie waiting for its reaper does not count).
alive() { # pid name
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
  case "$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null)" in Z|X|'') return 1 ;; esac
}

# The pid in FILE if that process is alive and its comm is NAME (never trust a stale pid file).
live_pid() { # file name
  local pid
  [ -r "$1" ] || return 1
  pid=$(tr -dc 0-9 <"$1")
  [ -n "$pid" ] && alive "$pid" "$2" && echo "$pid"
}

host_pid() { live_pid "$LAB/$1.hostpid" bash; }

# libvirtd of the node whose namespace holder is $1, under `tini -s` (a child subreaper) instead of
# `-d`: qemu, daemonized by libvirtd, is then reparented to tini, which reaps it the moment it dies.
# On a real node systemd (PID 1) does that; this machine's PID 1 reaps orphans only every second or
# so, and libvirt reports a killed qemu stopped only once its zombie is gone (~1.4 s late here).
# When libvirtd exits tini exits too; running qemus are reparented again and keep running.
start_libvirtd() {
  (cd / && exec nsenter -t "$1" -m -n -- setsid tini -s -- libvirtd --listen) </dev/null >/dev/null 2>&1 &
}

# Run a command inside NODE: its mount namespace (lab-host.sh) and network namespace.
node_exec() { # node cmd...
  local node=$1 hp
  shift
  hp=$(host_pid "$node") || die "node $node is not up (scripts/lab.sh up)"
  nsenter -t "$hp" -m -n -- "$@"
}

stop_pid() { # file name [signal]
  local pid
  pid=$(live_pid "$1" "$2") || return 0
  kill "-${3:-TERM}" "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    alive "$pid" "$2" || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

stop_all() { # name pidfile...
  local name=$1 f pid pids=()
  shift
  for f in "$@"; do
    pid=$(live_pid "$f" "$name") && { kill -TERM "$pid" 2>/dev/null; pids+=("$pid"); }
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do
      alive "$pid" "$name" || break
      sleep 0.1
    done
    alive "$pid" "$name" && kill -KILL "$pid" 2>/dev/null
  done
  return 0
}

# Kill what is left in a lab network namespace (qemu, daemons of a crashed run). Fail-closed:
# only processes whose net namespace is readable, equals the lab namespace's (by inode of
# /run/netns/NAME) and differs from ours.
sweep_netns() { # netns-name
  local f=/run/netns/$1 want mine p pid ns
  [ -e "$f" ] || return 0
  want=$(stat -L -c 'net:[%i]' "$f" 2>/dev/null) || return 0
  mine=$(readlink /proc/self/ns/net 2>/dev/null) || return 0
  case "$want" in 'net:['[0-9]*']') ;; *) return 0 ;; esac
  [ -n "$mine" ] && [ "$want" != "$mine" ] || return 0
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] && continue
    ns=$(readlink "$p/ns/net" 2>/dev/null) || continue
    [ "$ns" = "$want" ] && kill -KILL "$pid" 2>/dev/null
  done
  # Wait (up to 5 s) until they are gone (zombies waiting for their reaper do not count).
  for _ in $(seq 1 50); do
    local left=0
    for pid in $(ip netns pids "$1" 2>/dev/null); do
      alive "$pid" "$(cat "/proc/$pid/comm" 2>/dev/null)" && left=1
    done
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  return 0
}

down() {
  set +e
  local node ns hp
  for node in "${NODES[@]}"; do
    hp=$(host_pid "$node")
    if [ -n "$hp" ]; then
      # Guests first (their qemu would otherwise lose its disk mid-write), then the daemons.
      for g in $(nsenter -t "$hp" -m -n timeout 10 virsh -q -c qemu:///system list --name 2>/dev/null); do
        nsenter -t "$hp" -m -n timeout 10 virsh -q -c qemu:///system destroy "$g" >/dev/null 2>&1
      done
    fi
  done
  # All nodes at once: TERM, wait up to 10 s, then KILL.
  stop_all vmwarden "$LAB"/n?.vmwarden.pid
  stop_all libvirtd "$LAB"/n?.libvirtd.pid
  stop_all virtlogd "$LAB"/n?.virtlogd.pid
  # TERM makes lab-host.sh shut sanlock down and sweep its private mount namespace (a second
  # TERM would interrupt that cleanup: stop_all sends one).
  stop_all bash "$LAB"/n?.hostpid
  # Only left if lab-host.sh died without its cleanup (crashed run): no polite way then.
  for f in "$LAB"/n?.sanlock.pid; do stop_pid "$f" sanlock KILL; done
  stop_pid "$LAB/anchor.pid" sleep
  for node in "${NODES[@]}"; do
    ns=$(ns_of "$node")
    sweep_netns "$ns"
    ip netns del "$ns" 2>/dev/null
  done
  sleep 0.2
  for node in "${NODES[@]}"; do sweep_netns "$(ns_of "$node")"; done
  # Only a directory this script made (marker file) is removed.
  if [ -f "$LAB/.vmwarden-lab" ] && [ -z "$(findmnt -rn -o TARGET | grep -F "$LAB" || true)" ]; then
    rm -rf "$LAB"
  fi
  set -e
  for node in "${NODES[@]}"; do
    ! ip netns list | grep -qw "$(ns_of "$node")" || die "namespace $(ns_of "$node") is still there"
  done
  [ ! -e "$LAB/.vmwarden-lab" ] || die "$LAB is still there (a mount under it?)"
  say "down"
}

# libvirtd.conf / qemu.conf: set key = value (value written as given).
set_key() { # file key value
  sed -i -E "/^[[:space:]]*$2[[:space:]]*=/d" "$1"
  echo "$2 = $3" >>"$1"
}

up() {
  [ "$(id -u)" = 0 ] || die "run as root (namespaces, mounts)"
  for t in ip nsenter unshare sanlock libvirtd virtlogd virsh cc setsid findmnt tini; do
    command -v "$t" >/dev/null || die "missing $t (scripts/setup.sh installs it)"
  done
  down >/dev/null 2>&1 || true
  local t0=$SECONDS node ns hp pids=()
  [ ! -e "$LAB" ] || [ -f "$LAB/.vmwarden-lab" ] || die "$LAB exists and is not a lab directory: choose another VMWARDEN_LAB_DIR"
  mkdir -p "$LAB/shared"
  touch "$LAB/.vmwarden-lab"
  cc -shared -fPIC -O2 -Wall -o "$LAB/libsetrlimit_shim.so" "$REPO/tests/support/setrlimit_shim.c" -ldl

  # Network: two namespaces, one veth pair between them, nothing in ours.
  for node in "${NODES[@]}"; do
    ns=$(ns_of "$node")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
  done
  ip link add vmw-n1-eth0 netns vmw-n1 type veth peer name vmw-n2-eth0 netns vmw-n2
  for node in "${NODES[@]}"; do
    ns=$(ns_of "$node")
    ip -n "$ns" addr add "$(ip_of "$node")/24" dev "$ns-eth0"
    ip -n "$ns" link set "$ns-eth0" up
  done

  # The lab lives while this process does (lab-host.sh's WATCH_PID); `down` stops it.
  setsid sleep infinity </dev/null >/dev/null 2>&1 &
  echo $! >"$LAB/anchor.pid"

  for node in "${NODES[@]}"; do
    ns=$(ns_of "$node")
    # No --fork: lab-host.sh checks that its parent (this script) is in another mount namespace.
    (cd / && exec ip netns exec "$ns" unshare -m --propagation private \
      bash "$REPO/tests/support/lab-host.sh" "$LAB" "$node" "$LAB/libsetrlimit_shim.so" \
      "$(cat "$LAB/anchor.pid")") </dev/null >"$LAB/$node.host.log" 2>&1 &
    echo $! >"$LAB/$node.hostpid"
  done
  for node in "${NODES[@]}"; do
    for _ in $(seq 1 300); do
      [ -f "$LAB/$node.ready" ] && break
      kill -0 "$(cat "$LAB/$node.hostpid")" 2>/dev/null || break  # still ip/unshare: no comm check
      sleep 0.1
    done
    [ -f "$LAB/$node.ready" ] || { cat "$LAB/$node.host.log" >&2; die "node $node did not come up"; }
  done

  # sanlock: one lockspace in one shared lease file, host_id 1 on n1 and 2 on n2 (joined in
  # parallel, and while libvirtd starts: each add_lockspace waits out its io_timeout-based delay).
  truncate -s 16M "$LEASES"
  node_exec n1 sanlock client init -s "$LOCKSPACE:0:$LEASES:0" -o 1 >/dev/null
  for node in "${NODES[@]}"; do
    node_exec "$node" sanlock client add_lockspace -s "$LOCKSPACE:$(hid_of "$node"):$LEASES:0" -o 1 \
      >"$LAB/$node.add_lockspace.log" 2>&1 &
    pids+=($!)
  done

  # libvirt per node: own config (host_uuid, tcp listen without auth), state, cache and logs.
  for node in "${NODES[@]}"; do
    local d=$LAB/$node
    mkdir -p "$d/lib" "$d/cache"
    # The machine's qemu capability cache, if any, spares each libvirtd probing qemu (~15 s);
    # libvirtd revalidates it (binary and libvirtd ctimes, kernel) and probes again if stale.
    [ -d /var/cache/libvirt/qemu/capabilities ] && mkdir -p "$d/cache/qemu" \
      && cp -a /var/cache/libvirt/qemu/capabilities "$d/cache/qemu/"
    cp -a /etc/libvirt "$d/etc"
    rm -rf "$d/etc/qemu/networks/autostart" "$d/etc/qemu/autostart"
    find "$d/etc/qemu" -maxdepth 1 -name '*.xml' -delete
    set_key "$d/etc/libvirtd.conf" host_uuid "\"$(cat /proc/sys/kernel/random/uuid)\""
    set_key "$d/etc/libvirtd.conf" listen_tcp 1
    set_key "$d/etc/libvirtd.conf" listen_tls 0
    set_key "$d/etc/libvirtd.conf" auth_tcp '"none"'
    set_key "$d/etc/libvirtd.conf" listen_addr "\"$(ip_of "$node")\""
    set_key "$d/etc/qemu.conf" user '"root"'
    set_key "$d/etc/qemu.conf" group '"root"'
    # qemu stays in the node's mount namespace (lab-host.sh's sweep then finds it too).
    set_key "$d/etc/qemu.conf" namespaces '[]'
    [ -z "${VMWARDEN_BIN:-}" ] || vmwarden_node "$node"
    hp=$(host_pid "$node")
    nsenter -t "$hp" -m -- sh -ec "
      mount --bind '$d/etc' /etc/libvirt
      mount --bind '$d/lib' /var/lib/libvirt
      mount --bind '$d/cache' /var/cache/libvirt
      mkdir -p /var/log/libvirt/qemu /run/libvirt"
    (cd / && exec nsenter -t "$hp" -m -n -- virtlogd -d) </dev/null >/dev/null 2>&1
    start_libvirtd "$hp"
  done
  for node in "${NODES[@]}"; do
    hp=$(host_pid "$node")
    for _ in $(seq 1 150); do
      nsenter -t "$hp" -m -n timeout 5 virsh -c qemu:///system version >/dev/null 2>&1 && break
      sleep 0.2
    done
    cp "/proc/$hp/root/run/libvirtd.pid" "$LAB/$node.libvirtd.pid"
    cp "/proc/$hp/root/run/virtlogd.pid" "$LAB/$node.virtlogd.pid"
    live_pid "$LAB/$node.libvirtd.pid" libvirtd >/dev/null || die "libvirtd on $node did not come up (see $LAB/$node.varlog/libvirt)"
  done

  for p in "${pids[@]}"; do wait "$p" || { cat "$LAB"/*.add_lockspace.log >&2; die "add_lockspace failed"; }; done
  if [ -n "${VMWARDEN_BIN:-}" ]; then
    local i=1 vm
    for vm in ${VMWARDEN_LAB_VMS:-vmw-a vmw-b}; do
      node_exec n1 sanlock client init -r "$LOCKSPACE:$vm:$LEASES:$((i * 1048576))" >/dev/null
      i=$((i + 1))
    done
    for node in "${NODES[@]}"; do agent_start "$node"; done
  fi

  say "up in $((SECONDS - t0)) s: nodes n1 (10.77.0.1, sanlock host_id 1) and n2 (10.77.0.2, host_id 2)"
  cat >&2 <<EOF
  scripts/lab.sh exec n1 virsh -c qemu:///system list --all
  scripts/lab.sh exec n1 virsh -c qemu+tcp://10.77.0.2/system version     (n2 from n1)
  scripts/lab.sh exec n1 virsh migrate --live --unsafe GUEST qemu+tcp://10.77.0.2/system tcp://10.77.0.2
      (--unsafe: libvirt 9.0 counts a disk on a local filesystem as unshared, even with cache=none)
  scripts/lab.sh exec n2 sanlock client gets -h 1
  shared disks: $LAB/shared/   leases: $LEASES (lockspace $LOCKSPACE)
  logs: $LAB/nX.varlog/   tear down: scripts/lab.sh down (or make lab-down)
EOF
}

other_of() { case $1 in n1) echo n2 ;; n2) echo n1 ;; esac; }

# vmwarden config, secret and qemu hook for NODE (written before its libvirtd starts).
vmwarden_node() { # node
  local node=$1 d=$LAB/$1 peer i=1 vm leases=""
  peer=$(other_of "$node")
  [ -x "$VMWARDEN_BIN" ] || die "VMWARDEN_BIN=$VMWARDEN_BIN is not an executable"
  echo "$VMWARDEN_BIN" >"$LAB/vmwarden.bin"
  [ -f "$LAB/secret" ] || (umask 077 && head -c 32 /dev/urandom | base64 >"$LAB/secret")
  for vm in ${VMWARDEN_LAB_VMS:-vmw-a vmw-b}; do
    leases="$leases{ vm = \"$vm\", offset = $((i * 1048576)) }, "
    i=$((i + 1))
  done
  mkdir -p "$d/state"
  cat >"$d/vmwarden.toml" <<CONF
# lab node $node (scripts/lab.sh)
[agent]
listen = "$(ip_of "$node"):10177"
[lvm]
enabled = false
[drbd]
enabled = false
[lock]
backend = "sanlock"
command_timeout_seconds = 15
[lock.sanlock]
lockspace = "$LOCKSPACE"
lease_path = "$LEASES"
leases = [ ${leases%, } ]
[cluster]
node = "$node"
host_id = $(hid_of "$node")
secret_file = "$LAB/secret"
state_dir = "$d/state"
peers = [ { name = "$peer", url = "http://$(ip_of "$peer"):10177", libvirt_uri = "qemu+tcp://$(ip_of "$peer")/system", migrate_uri = "tcp://$(ip_of "$peer")", host_id = $(hid_of "$peer") } ]
[actions]
shutdown_timeout_seconds = ${VMWARDEN_LAB_SHUTDOWN_TIMEOUT:-5}
# libvirt counts a disk file on a local filesystem as unshared storage even with cache='none'.
migrate_extra_args = ["--unsafe"]
CONF
  # Tests add sections of their own (e.g. a faster [watchdog]).
  [ -z "${VMWARDEN_LAB_EXTRA_TOML:-}" ] || printf '%s\n' "$VMWARDEN_LAB_EXTRA_TOML" >>"$d/vmwarden.toml"
  mkdir -p "$d/etc/hooks"
  # libvirt runs hooks with argv only; this wrapper adds the node's config.
  printf '#!/bin/sh\nexec %s hook --config %s qemu "$@"\n' "$VMWARDEN_BIN" "$d/vmwarden.toml" >"$d/etc/hooks/qemu"
  chmod 755 "$d/etc/hooks/qemu"
}

agent_start() { # node [VAR=VALUE...]
  local node=$1 hp pid
  shift
  [ -f "$LAB/$node/vmwarden.toml" ] || die "node $node has no vmwarden config (up with VMWARDEN_BIN set)"
  ! live_pid "$LAB/$node.vmwarden.pid" vmwarden >/dev/null || die "the agent on $node already runs"
  hp=$(host_pid "$node") || die "node $node is not up"
  (cd / && exec nsenter -t "$hp" -m -n -- env "$@" setsid "$(cat "$LAB/vmwarden.bin")" \
      run --config "$LAB/$node/vmwarden.toml") </dev/null >>"$LAB/$node.vmwarden.log" 2>&1 &
  pid=$!
  echo "$pid" >"$LAB/$node.vmwarden.pid"
  for _ in $(seq 1 300); do
    node_exec "$node" timeout 2 bash -c "exec 3<>/dev/tcp/$(ip_of "$node")/10177" 2>/dev/null && return 0
    # Only a process that is gone counts as failed: on a loaded machine it may still be on its way
    # through nsenter -> env -> setsid -> vmwarden (its comm not yet "vmwarden").
    case "$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$pid/stat" 2>/dev/null)" in Z|X|'') break ;; esac
    sleep 0.1
  done
  tail -n 20 "$LAB/$node.vmwarden.log" >&2
  die "the agent on $node did not come up"
}

status() {
  local node hp
  for node in "${NODES[@]}"; do
    if hp=$(host_pid "$node"); then
      echo "$node: up (namespace holder $hp, libvirtd $(live_pid "$LAB/$node.libvirtd.pid" libvirtd || echo DOWN), virtlogd $(live_pid "$LAB/$node.virtlogd.pid" virtlogd || echo DOWN), sanlock $(live_pid "$LAB/$node.sanlock.pid" sanlock || echo DOWN))"
      nsenter -t "$hp" -m -n timeout 10 virsh -c qemu:///system list --all | sed 's/^/    /'
      nsenter -t "$hp" -m -n sanlock client gets -h 1 | sed 's/^/    /'
    else
      echo "$node: down"
    fi
  done
  ip netns list | grep -E '^vmw-n[12]\b' | sed 's/^/netns /' || true
}

case "${1:-}" in
  up) up ;;
  down) [ "$(id -u)" = 0 ] || die "run as root"; down ;;
  status) status ;;
  exec)
    [ $# -ge 3 ] || die "usage: lab.sh exec NODE CMD..."
    node=$2
    shift 2
    ip_of "$node" >/dev/null
    node_exec "$node" "$@"
    ;;
  agent-start)
    [ $# -ge 2 ] || die "usage: lab.sh agent-start NODE [VAR=VALUE...]"
    node=$2
    shift 2
    agent_start "$node" "$@"
    ;;
  libvirtd-stop)
    [ $# -ge 2 ] || die "usage: lab.sh libvirtd-stop NODE"
    stop_pid "$LAB/$2.libvirtd.pid" libvirtd TERM
    ;;
  libvirtd-start)
    [ $# -ge 2 ] || die "usage: lab.sh libvirtd-start NODE"
    hp=$(host_pid "$2") || die "node $2 is not up"
    start_libvirtd "$hp"
    for _ in $(seq 1 150); do
      nsenter -t "$hp" -m -n timeout 5 virsh -c qemu:///system version >/dev/null 2>&1 && break
      sleep 0.2
    done
    cp "/proc/$hp/root/run/libvirtd.pid" "$LAB/$2.libvirtd.pid"
    ;;
  agent-stop)
    [ $# -ge 2 ] || die "usage: lab.sh agent-stop NODE [SIGNAL]"
    stop_pid "$LAB/$2.vmwarden.pid" vmwarden "${3:-TERM}"
    ;;
  *) die "usage: lab.sh up|down|status|exec|agent-start|agent-stop" ;;
esac
