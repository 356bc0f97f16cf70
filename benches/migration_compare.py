#!/usr/bin/env python3
"""Live migration of the same idle guest in the two-node lab (scripts/lab.sh), side by side:
plain `virsh migrate --live` against `vmwarden ctl migrate` (lock handover included).

Both run in the same invocation, interleaved: blocks of two migrations (n1 -> n2 -> n1), in a
plain lab (no agents, no hook) and then in a vmwarden lab, until RUNS of each. Every migration is timed as the wall time of its command run inside the node
(the same `lab.sh exec` path for both). vmwarden's per-step times (from `ctl --json`) give the
lock-step overhead: everything but the libvirt step.

usage: migration_compare.py VMWARDEN_BIN [--runs N]
"""
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.environ.get("VMWARDEN_LAB_DIR", "/tmp/vmwarden-lab")
VM = "vmw-bench"
IP = {"n1": "10.77.0.1", "n2": "10.77.0.2"}


def lab(*args, env=None, check=True):
    e = dict(os.environ, VMWARDEN_LAB_DIR=LAB, VMWARDEN_LAB_VMS=VM, **(env or {}))
    r = subprocess.run(["bash", f"{REPO}/scripts/lab.sh", *args], env=e,
                       capture_output=True, text=True, timeout=600)
    if check and r.returncode != 0:
        sys.exit(f"lab.sh {' '.join(args)} failed:\n{r.stdout}{r.stderr}")
    return r


def define_guest(nodes):
    disk = f"{LAB}/shared/{VM}.raw"
    with open(disk, "wb") as f:
        f.truncate(16 << 20)
    ty = "kvm" if os.path.exists("/dev/kvm") else "qemu"
    xml = f"""<domain type='{ty}'><name>{VM}</name><uuid>{uuid.uuid4()}</uuid>
<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/>
<source file='{disk}'/><target dev='vda' bus='virtio'/></disk><serial type='pty'/></devices>
</domain>"""
    path = f"{LAB}/shared/{VM}.xml"
    with open(path, "w") as f:
        f.write(xml)
    for n in nodes:
        lab("exec", n, "virsh", "-q", "define", path)


def stats(xs):
    xs = sorted(xs)
    return {"median": statistics.median(xs), "mean": statistics.fmean(xs),
            "min": xs[0], "max": xs[-1]}


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 10
    other = {"n1": "n2", "n2": "n1"}

    # Blocks of two migrations (there and back), alternating a plain lab (no agents, no hook)
    # and a vmwarden lab (agents, hook, sanlock lease handover): whatever else the machine does
    # meanwhile hits both sides alike.
    plain, ours, libvirt_step, lock_steps, outside = [], [], [], [], []
    per_step = {}
    env = {"VMWARDEN_BIN": binary}
    cfg = lambda n: f"{LAB}/{n}/vmwarden.toml"
    while len(ours) < runs:
        n = min(2, runs - len(ours))
        lab("up")
        try:
            define_guest(["n1"])
            lab("exec", "n1", "virsh", "-q", "start", VM)
            time.sleep(1)
            at = "n1"
            for _ in range(n):
                to = other[at]
                t = time.monotonic()
                lab("exec", at, "virsh", "-q", "migrate", "--live", "--persistent",
                    "--undefinesource", "--unsafe", VM, f"qemu+tcp://{IP[to]}/system",
                    f"tcp://{IP[to]}")
                plain.append(time.monotonic() - t)
                at = to
        finally:
            lab("down", check=False)

        lab("up", env=env)
        try:
            define_guest(["n1", "n2"])
            lab("exec", "n1", binary, "ctl", "--config", cfg("n1"), "start", VM)
            time.sleep(1)
            at = "n1"
            for _ in range(n):
                to = other[at]
                t = time.monotonic()
                r = lab("exec", at, binary, "ctl", "--config", cfg(at), "--json", "migrate", VM,
                        "--to", to)
                ours.append(time.monotonic() - t)
                rep = json.loads(r.stdout)
                if rep["result"] != "completed":
                    sys.exit(f"migration failed: {rep}")
                steps = {s["step"]: s["seconds"] for s in rep["steps"]}
                libvirt_step.append(steps["libvirt_migrate"])
                lock_steps.append(sum(v for k, v in steps.items() if k != "libvirt_migrate"))
                # What no step accounts for: the CLI's start, the request, planning (state and
                # disks read, the journal created), following the action to its end.
                outside.append(ours[-1] - sum(steps.values()))
                for k, v in steps.items():
                    per_step.setdefault(k, []).append(v)
                at = to
        finally:
            lab("down", check=False)

    out = {
        "runs": runs,
        "plain_virsh_migrate_s": stats(plain),
        "vmwarden_migrate_s": stats(ours),
        "vmwarden_libvirt_step_s": stats(libvirt_step),
        "vmwarden_other_steps_s": stats(lock_steps),
        "vmwarden_outside_steps_s": stats(outside),
        "vmwarden_step_median_s": {k: statistics.median(v) for k, v in per_step.items()},
        "ratio_median": statistics.median(ours) / statistics.median(plain),
        "ratio_mean": statistics.fmean(ours) / statistics.fmean(plain),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
