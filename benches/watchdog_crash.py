#!/usr/bin/env python3
"""Crash -> running again, in the two-node lab: `kill -9` of a guest's qemu on n1 and the time
until libvirt reports the domain running again with a new qemu, restarted by vmwarden's watchdog
(event-driven, through the start action: lease re-taken, journal, hook). RUNS crashes (default
20); the watchdog's attempts are reset between crashes (`ctl reset`) so each one is a first
crash, as an operator would see it, not a crash loop under backoff.

The clock runs inside the node: one small poller started with `lab.sh exec n1` kills qemu and
watches libvirt's pid file and `virsh domstate` there, so the lab's exec path is not in the
measurement. The agent's log lines split each restart: crash -> the watchdog decides to restart
(event, settle delay), and that -> the start action's end (lease, `virsh start`, hook).

usage: watchdog_crash.py VMWARDEN_BIN [--runs N]
"""
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from migration_compare import LAB, VM, define_guest, lab  # noqa: E402  (the same lab helpers)

# Runs inside the node: kill qemu by its recorded pid (name checked), then wait for a new qemu
# and libvirt's "running". Prints the seconds taken, or "timeout".
POLLER = r"""
import os, subprocess, sys, time
vm = sys.argv[1]
pidfile = f"/run/libvirt/qemu/{vm}.pid"
def qemu():
    try:
        pid = open(pidfile).read().strip()
        return pid if open(f"/proc/{pid}/comm").read().startswith("qemu-system") else None
    except OSError:
        return None
old = qemu()
if old is None:
    sys.exit("no qemu runs for " + vm)
wall = time.time()
os.kill(int(old), 9)
t = time.monotonic()
while time.monotonic() - t < 30:
    new = qemu()
    if new and new != old:
        r = subprocess.run(["virsh", "-q", "domstate", vm], capture_output=True, text=True)
        if r.stdout.strip() == "running":
            print(f"{time.monotonic() - t:.4f} {wall:.6f}")
            sys.exit(0)
    time.sleep(0.005)
print("timeout")
"""

# Each crash is a first crash: no backoff from earlier ones, restarts every time.
EXTRA = "[watchdog]\nmax_attempts = 100\n"


def log_times(path, since):
    """Wall times of the first 'restarting' and 'restarted' lines of the agent after `since`."""
    import datetime
    found = {}
    with open(path, errors="replace") as f:
        for line in f:
            try:
                ts = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
            except (ValueError, IndexError):
                continue
            t = ts.timestamp()
            if t < since:
                continue
            for key in ("restarting (attempt", "restarted (attempt"):
                if key in line and key not in found:
                    found[key] = t
    return found.get("restarting (attempt"), found.get("restarted (attempt")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 20
    cfg = f"{LAB}/n1/vmwarden.toml"
    ctl = lambda *a: lab("exec", "n1", binary, "ctl", "--config", cfg, *a)
    poller = f"{LAB}/shared/crash_poller.py"
    took, decide, start_action = [], [], []
    lab("up", env={"VMWARDEN_BIN": binary, "VMWARDEN_LAB_EXTRA_TOML": EXTRA})
    try:
        with open(poller, "w") as f:
            f.write(POLLER)
        define_guest(["n1", "n2"])
        ctl("start", VM)
        for i in range(runs):
            time.sleep(2)  # the restarted guest settles; the next pass sees it running
            r = lab("exec", "n1", "python3", poller, VM)
            if r.stdout.strip() == "timeout":
                sys.exit(f"crash {i + 1}: not running again within 30 s\n"
                         + lab("exec", "n1", binary, "ctl", "--config", cfg, "watchdog").stdout)
            secs, wall = (float(x) for x in r.stdout.split())
            took.append(secs)
            time.sleep(1)
            a, b = log_times(f"{LAB}/n1.vmwarden.log", wall)
            if a and b:
                decide.append(a - wall)
                start_action.append(b - a)
            ctl("reset", VM)
    finally:
        lab("down", check=False)
    out = {
        "crashes": runs,
        "crash_to_running_s": {"median": statistics.median(took), "p95": pct(took, 95),
                               "min": min(took), "max": max(took)},
    }
    if start_action:
        out["crash_to_restart_decision_s_median"] = statistics.median(decide)
        out["start_action_s_median"] = statistics.median(start_action)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
