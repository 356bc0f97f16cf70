#!/usr/bin/env python3
"""A seeded fault campaign in the two-node lab (scripts/lab.sh): "never twice", checked.

Each trial, from the seed and its number alone (so `--only N` replays it), puts the VM on a node,
writes a mark into its memory (a CMOS byte), runs one action — vmwarden's (start, stop, restart,
live migration either way, a qemu crash for the watchdog) or a careless operator's (plain `virsh
start` on the other node, plain `virsh migrate`, `vmwarden lock` by hand) — and injects one fault
at a random moment: SIGKILL of either agent, `kill -9` of qemu, libvirtd stopped and started
again, the peer link cut for a few seconds, a node's state directory full or read-only, the
sanlock daemon stopped (every lock command slow), or none. The faulty part comes back, recovery gets a
bounded time, then the trial is judged.

A sampler runs inside each node for the whole campaign (every 40 ms: libvirt's status file of the
domain, whether that qemu is alive, the node's hold on the VM's sanlock lease, and whether a
journal or incoming-migration marker is open) and the samples of both nodes are merged on the
machine's one clock. Violations:
- double run: the VM *running* (libvirt state running, qemu alive; a migration's paused end does
  not count) on both nodes over overlapping intervals — an interval is two consecutive samples of
  one node that both say running with the same qemu pid, so sampling skew cannot invent one;
- running without its lock: two consecutive running samples with the same pid where this node's
  lease is not exclusive and no journal or migration marker is open on that node;
- after recovery: a lease held where no qemu of the VM runs; the VM running on both nodes; a
  journal left open; `vmwarden check` failing on a node; the guest's memory lost (CMOS mark gone)
  although nothing in the trial stopped or killed it.

usage: fault-campaign.py VMWARDEN_BIN [--trials N] [--seed S] [--only N] [--json FILE]
Root; uses the lab's fixed namespaces (nothing else may use them meanwhile).
"""
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.environ.get("VMWARDEN_LAB_DIR", "/tmp/vmwarden-lab")
VM = "vmw-f"
NODES = ("n1", "n2")
IP = {"n1": "10.77.0.1", "n2": "10.77.0.2"}
OTHER = {"n1": "n2", "n2": "n1"}
VETH = {"n1": "vmw-n1-eth0", "n2": "vmw-n2-eth0"}
# Short timeouts keep a trial short: the OS-less guest ignores ACPI, a stop destroys it after 2 s.
EXTRA_TOML = """[watchdog]
reconcile_seconds = 1
max_attempts = 100
backoff_initial_seconds = 0.5
backoff_max_seconds = 2
"""
ACTIONS = ["start", "stop", "restart", "migrate", "crash",
           "virsh_start_other", "virsh_migrate", "lock_by_hand"]
FAULTS = ["none", "kill_agent_here", "kill_agent_other", "kill_qemu",
          "libvirtd_here", "libvirtd_other", "link_cut", "state_full", "state_ro", "slow_lock"]
# Each node's state directory is a small tmpfs inside the node (Lab.up) so that "full" and
# "read-only" are faults of that directory alone, repaired without losing what it holds.
STATE_SIZE = "8m"
RECOVERY_BOUND = 60.0

SAMPLER = r"""
import os, subprocess, sys, time
vm, out, state_dir = sys.argv[1], sys.argv[2], sys.argv[3]
status = f"/run/libvirt/qemu/{vm}.xml"
def libvirt_state():
    try:
        with open(status) as f:
            head = f.read(512)
    except OSError:
        return "off", 0
    def attr(name):
        i = head.find(f" {name}='")
        if i < 0:
            return ""
        j = head.find("'", i + len(name) + 3)
        return head[i + len(name) + 3:j]
    st, pid = attr("state"), attr("pid")
    pid = int(pid) if pid.isdigit() else 0
    try:
        with open(f"/proc/{pid}/stat") as f:
            alive = f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        alive = False
    return (st if alive else "dead"), pid
def lease():
    try:
        r = subprocess.run(["sanlock", "client", "status"], capture_output=True, text=True,
                           timeout=2)
    except subprocess.TimeoutExpired:
        return "?"
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0] == "r" and f[1].startswith(f"vmwarden:{vm}:"):
            return "sh" if f[1].endswith(":SH") else "ex"
    return "none"
def open_marks():
    n = 0
    for d in ("journal", "incoming"):
        try:
            n += sum(1 for e in os.listdir(os.path.join(state_dir, d))
                     if e != "done" and not e.endswith(".tmp"))
        except OSError:
            pass
    return n
with open(out, "a", buffering=1) as f:
    while True:
        t = time.time()
        st, pid = libvirt_state()
        f.write(f"{t:.3f} {st} {pid} {lease()} {open_marks()}\n")
        time.sleep(max(0.0, 0.04 - (time.time() - t)))
"""


def lab(*args, env=None, check=True, timeout=300):
    e = dict(os.environ, VMWARDEN_LAB_DIR=LAB, VMWARDEN_LAB_VMS=VM, **(env or {}))
    r = subprocess.run(["bash", f"{REPO}/scripts/lab.sh", *args], env=e, capture_output=True,
                       text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"lab.sh {' '.join(args)} failed:\n{r.stdout}{r.stderr}")
    return r


class Lab:
    def __init__(self, binary):
        self.bin = binary
        self.env = {"VMWARDEN_BIN": binary, "VMWARDEN_LAB_EXTRA_TOML": EXTRA_TOML,
                    "VMWARDEN_LAB_SHUTDOWN_TIMEOUT": "2"}
        self.samplers = []

    def run(self, node, *args, timeout=180):
        return lab("exec", node, *args, check=False, timeout=timeout)

    def vmw(self, node, sub, *args, timeout=180):
        return self.run(node, self.bin, sub, "--config", f"{LAB}/{node}/vmwarden.toml", *args,
                        timeout=timeout)

    def ctl(self, node, *args, timeout=180):
        return self.vmw(node, "ctl", *args, timeout=timeout)

    def virsh(self, node, *args, timeout=60):
        return self.run(node, "virsh", "-q", *args, timeout=timeout)

    def state(self, node):
        r = self.virsh(node, "domstate", VM)
        return r.stdout.strip() if r.returncode == 0 else "undefined"

    def running(self, node):
        return self.state(node) == "running"

    def where(self):
        return [n for n in NODES if self.running(n)]

    def qemu_pid(self, node):
        r = self.run(node, "cat", f"/run/libvirt/qemu/{VM}.pid")
        pid = r.stdout.strip()
        if not pid.isdigit():
            return None
        comm = self.run(node, "cat", f"/proc/{pid}/comm").stdout
        return pid if comm.startswith("qemu-system") else None

    def lease(self, node):
        r = self.run(node, "sanlock", "client", "status")
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) >= 2 and f[0] == "r" and f[1].startswith(f"vmwarden:{VM}:"):
                return "sh" if f[1].endswith(":SH") else "ex"
        return "none"

    def open_journals(self, node):
        out = []
        for d in ("journal", "incoming"):
            p = f"{LAB}/{node}/state/{d}"
            if os.path.isdir(p):
                out += [f"{d}/{e}" for e in os.listdir(p) if e != "done" and not e.endswith(".tmp")]
        return out

    def cmos(self, node, write=None):
        hmp = lambda c: self.virsh(node, "qemu-monitor-command", VM, "--hmp", c)
        if write is not None:
            hmp("o/b 0x70 0x7e")
            hmp(f"o/b 0x71 {write:#04x}")
        hmp("o/b 0x70 0x7e")
        out = hmp("i/b 0x71").stdout.strip()
        try:
            return int(out.rsplit("0x", 1)[-1], 16)
        except ValueError:
            return None

    def agent_up(self, node):
        pidf = f"{LAB}/{node}.vmwarden.pid"
        try:
            pid = open(pidf).read().strip()
            return open(f"/proc/{pid}/comm").read().startswith("vmwarden")
        except OSError:
            return False

    def up(self):
        lab("up", env=self.env)
        disk = f"{LAB}/shared/{VM}.raw"
        with open(disk, "wb") as f:
            f.truncate(16 << 20)
        ty = "kvm" if os.path.exists("/dev/kvm") else "qemu"
        xml = f"""<domain type='{ty}'><name>{VM}</name><uuid>{uuid.uuid4()}</uuid>
<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>
<features><acpi/></features>
<devices><disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/>
<source file='{disk}'/><target dev='vda' bus='virtio'/></disk></devices></domain>"""
        path = f"{LAB}/shared/{VM}.xml"
        with open(path, "w") as f:
            f.write(xml)
        for n in NODES:
            self.state_on_tmpfs(n)
        for n in NODES:
            r = self.virsh(n, "define", path)
            if r.returncode != 0:
                raise RuntimeError(f"define on {n}: {r.stderr}")
        script = f"{LAB}/shared/sampler.py"
        with open(script, "w") as f:
            f.write(SAMPLER)
        for n in NODES:
            out = f"{LAB}/shared/samples-{n}.txt"
            open(out, "w").close()
            p = subprocess.Popen(
                ["bash", f"{REPO}/scripts/lab.sh", "exec", n, "/usr/bin/python3", script, VM, out,
                 f"{LAB}/{n}/state"],
                env=dict(os.environ, VMWARDEN_LAB_DIR=LAB), stdout=subprocess.DEVNULL)
            self.samplers.append(p)

    def state_on_tmpfs(self, node):
        """The node's state directory on its own small tmpfs (in the node's mount namespace, so
        its agent, hook and sampler see it), with what the agent wrote there so far."""
        d = f"{LAB}/{node}/state"
        keep = f"{LAB}/{node}/state.pre"
        lab("agent-stop", node, "TERM", check=False)
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(d, keep, symlinks=True)
        for argv in (["mount", "-t", "tmpfs", "-o", f"size={STATE_SIZE},mode=0700", "vmw-state", d],
                     ["cp", "-a", f"{keep}/.", f"{d}/"]):
            r = self.run(node, *argv)
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} on {node}: {r.stderr}")
        lab("agent-start", node)

    def sanlock_pid(self, node):
        """The node's sanlock daemon, by its recorded pid with the name checked."""
        try:
            pid = int(open(f"{LAB}/{node}.sanlock.pid").read().strip())
            if open(f"/proc/{pid}/comm").read().strip() == "sanlock":
                return pid
        except (OSError, ValueError):
            pass
        return None

    def down(self):
        # The samplers run inside the nodes' namespaces: `down` sweeps them (fail-closed, by
        # namespace); their `lab.sh exec` parents end then.
        lab("down", check=False)
        for p in self.samplers:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass

    def samples(self, node, since, until):
        out = []
        with open(f"{LAB}/shared/samples-{node}.txt") as f:
            for line in f:
                p = line.split()
                if len(p) != 5:
                    continue
                t = float(p[0])
                if since <= t <= until:
                    out.append((t, p[1], int(p[2]), p[3], int(p[4])))
        return out


def running_intervals(samples):
    """(t1, t2, pid, lease1, lease2, marks1, marks2) for consecutive running samples, same pid."""
    out = []
    for a, b in zip(samples, samples[1:]):
        if a[1] == "running" and b[1] == "running" and a[2] == b[2] and a[2] > 0:
            out.append((a[0], b[0], a[2], a[3], b[3], a[4], b[4]))
    return out


def judge(samples_by_node):
    """Violations in the merged samples of both nodes (pure: see self_test)."""
    violations = []
    iv = {n: running_intervals(samples_by_node[n]) for n in NODES}
    for a in iv["n1"]:
        for b in iv["n2"]:
            if a[0] < b[1] and b[0] < a[1]:
                violations.append(
                    f"double run: running on n1 (qemu {a[2]}) over {a[0]:.3f}-{a[1]:.3f} and on "
                    f"n2 (qemu {b[2]}) over {b[0]:.3f}-{b[1]:.3f}")
                break
    for n in NODES:
        for t1, t2, pid, l1, l2, m1, m2 in iv[n]:
            if l1 not in ("ex", "?") and l2 not in ("ex", "?") and m1 == 0 and m2 == 0:
                violations.append(
                    f"running without its lock: {n} qemu {pid} over {t1:.3f}-{t2:.3f} with lease "
                    f"{l1}/{l2} and no journal or migration marker open")
                break
    return violations


def self_test():
    """The judge can fail: synthetic histories with each kind of violation, and clean ones."""
    run = lambda t0, t1, pid, lease="ex", marks=0: [
        (t0 + i * 0.04, "running", pid, lease, marks) for i in range(int((t1 - t0) / 0.04) + 1)]
    off = lambda t0, t1: [(t0 + i * 0.04, "off", 0, "none", 0)
                          for i in range(int((t1 - t0) / 0.04) + 1)]
    # A clean migration: n1 runs until 2.0 s, n2 from 2.1 s, leases shared with markers open.
    clean = {"n1": run(0, 1.5, 11) + run(1.54, 2.0, 11, "sh", 1) + off(2.04, 4),
             "n2": off(0, 2.06) + run(2.1, 2.5, 12, "sh", 1) + run(2.54, 4, 12)}
    assert judge(clean) == [], judge(clean)
    twice = {"n1": run(0, 4, 11), "n2": off(0, 2) + run(2.04, 4, 12)}
    assert any(v.startswith("double run") for v in judge(twice)), judge(twice)
    unlocked = {"n1": run(0, 4, 11, "none", 0), "n2": off(0, 4)}
    assert any(v.startswith("running without its lock") for v in judge(unlocked))
    shared_declared = {"n1": run(0, 4, 11, "sh", 1), "n2": off(0, 4)}
    assert judge(shared_declared) == []
    # One sample each way cannot make an interval: sampling skew is not a double run.
    skew = {"n1": run(0, 2.0, 11) + off(2.04, 4), "n2": off(0, 1.98) + run(2.0, 4, 12)}
    assert judge(skew) == [], judge(skew)


def wait_for(cond, timeout, step=0.2):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return None


def settled(lab_):
    """Recovery is over: both agents up, no journal open, the VM not mid-transition."""
    if not all(lab_.agent_up(n) for n in NODES):
        return False
    if any(lab_.open_journals(n) for n in NODES):
        return False
    states = [lab_.state(n) for n in NODES]
    return all(s in ("running", "shut off", "undefined") for s in states)


def normalize(lab_, home, stopped=False):
    """The VM running on `home` only (or, `stopped`, nowhere), through vmwarden, the watchdog's
    attempts forgotten."""
    for n in NODES:
        if not lab_.agent_up(n):
            lab(*["agent-start", n])
    if not wait_for(lambda: settled(lab_), RECOVERY_BOUND):
        return f"lab did not settle before the trial: {[lab_.state(n) for n in NODES]}, " \
               f"journals {[lab_.open_journals(n) for n in NODES]}"
    where = lab_.where()
    other = OTHER[home]
    # A migration moves the definition (--persistent --undefinesource): a VM shut off on the
    # other node may be defined only there. Start it there; the migration below brings it home.
    if not where and lab_.state(home) == "undefined" and lab_.state(other) != "undefined":
        r = lab_.ctl(other, "start", VM)
        if r.returncode != 0:
            return f"normalize: start on {other} (defined only there) failed: {r.stdout}{r.stderr}"
        where = lab_.where()
    if where == [other]:
        r = lab_.ctl(OTHER[home], "migrate", VM, "--to", home)
        if r.returncode != 0:
            lab_.ctl(OTHER[home], "stop", VM)
    for n in NODES:
        if n != home and lab_.running(n):
            lab_.ctl(n, "stop", VM)
    if not lab_.running(home):
        r = lab_.ctl(home, "start", VM)
        if r.returncode != 0:
            return f"normalize: start on {home} failed: {r.stdout}{r.stderr}"
    for n in NODES:
        lab_.ctl(n, "reset", VM)
    if stopped:
        r = lab_.ctl(home, "stop", VM)
        if r.returncode != 0 or lab_.where():
            return f"normalize: stop on {home}: {r.stdout}{r.stderr}; runs on {lab_.where()}"
        return None
    if lab_.where() != [home]:
        return f"normalize: the VM runs on {lab_.where()}, wanted {home}"
    return None


def action_cmd(lab_, action, at):
    """The command of the action as a thunk returning (exit code, output); `expect_refusal`."""
    to = OTHER[at]
    if action == "start":
        return (lambda: lab_.ctl(at, "start", VM)), False
    if action == "stop":
        return (lambda: lab_.ctl(at, "stop", VM)), False
    if action == "restart":
        return (lambda: lab_.ctl(at, "restart", VM)), False
    if action == "migrate":
        return (lambda: lab_.ctl(at, "migrate", VM, "--to", to)), False
    if action == "crash":
        def crash():
            pid = lab_.qemu_pid(at)
            return lab_.run(at, "kill", "-9", pid) if pid else lab_.run(at, "false")
        return crash, False
    if action == "virsh_start_other":
        return (lambda: lab_.virsh(to, "start", VM)), True
    if action == "virsh_migrate":
        return (lambda: lab_.virsh(at, "migrate", "--live", "--persistent", "--undefinesource",
                                   "--unsafe", VM, f"qemu+tcp://{IP[to]}/system",
                                   f"tcp://{IP[to]}", timeout=120)), True
    if action == "lock_by_hand":
        def by_hand():
            # Refused (non-zero) only when both are refused: taking the lock of a VM that runs
            # elsewhere, and releasing it under the running VM.
            a = lab_.vmw(to, "lock", "exclusive", VM)
            b = lab_.vmw(at, "lock", "release", VM)
            a.returncode = 1 if a.returncode != 0 and b.returncode != 0 else 0
            a.stdout += b.stdout
            return a
        return by_hand, True
    raise ValueError(action)


def inject(lab_, fault, at, rng):
    """Inject `fault`; returns (what was done, a thunk that repairs it)."""
    to = OTHER[at]
    hold = rng.uniform(1.0, 3.0)
    if fault == "none":
        return "none", lambda: None
    if fault in ("kill_agent_here", "kill_agent_other"):
        n = at if fault == "kill_agent_here" else to
        lab("agent-stop", n, "KILL", check=False)
        return f"SIGKILL agent {n}", lambda: (time.sleep(hold), lab("agent-start", n))
    if fault == "kill_qemu":
        running = lab_.where()
        if not running:
            return "kill -9 qemu: none ran", lambda: None
        n = rng.choice(running)
        pid = lab_.qemu_pid(n)
        if pid:
            lab_.run(n, "kill", "-9", pid)
        return f"kill -9 qemu on {n}", lambda: None
    if fault in ("libvirtd_here", "libvirtd_other"):
        n = at if fault == "libvirtd_here" else to
        lab("libvirtd-stop", n, check=False)
        return f"libvirtd stopped on {n} for {hold:.1f} s", \
            lambda: (time.sleep(hold), lab("libvirtd-start", n))
    if fault == "state_full":
        n = rng.choice(NODES)
        d = f"{LAB}/{n}/state"
        # dd ends with ENOSPC (exit 1) once the tmpfs is full: that is the fault.
        lab_.run(n, "dd", "if=/dev/zero", f"of={d}/.fault-filler", "bs=64k", "status=none")
        return f"state directory full on {n} for {hold:.1f} s", \
            lambda: (time.sleep(hold), lab_.run(n, "rm", "-f", f"{d}/.fault-filler"))
    if fault == "state_ro":
        n = rng.choice(NODES)
        d = f"{LAB}/{n}/state"
        lab_.run(n, "mount", "-o", "remount,ro", d)
        return f"state directory read-only on {n} for {hold:.1f} s", \
            lambda: (time.sleep(hold), lab_.run(n, "mount", "-o", "remount,rw", d))
    if fault == "slow_lock":
        # Every lock command waits while the sanlock daemon is stopped (a stalled lock manager,
        # as on slow lease storage); well under its renewal failure time (8 × io_timeout).
        n = rng.choice(NODES)
        pid = lab_.sanlock_pid(n)
        if pid is None:
            return f"slow lock on {n}: no sanlock pid recorded", lambda: None
        os.kill(pid, signal.SIGSTOP)
        def cont():
            time.sleep(hold)
            if lab_.sanlock_pid(n) == pid:
                os.kill(pid, signal.SIGCONT)
        return f"sanlock stopped on {n} for {hold:.1f} s (slow lock commands)", cont
    if fault == "link_cut":
        lab_.run(at, "ip", "link", "set", VETH[at], "down")
        return f"peer link cut for {hold:.1f} s", \
            lambda: (time.sleep(hold), lab_.run(at, "ip", "link", "set", VETH[at], "up"))
    raise ValueError(fault)


def trial(lab_, seed, k):
    rng = random.Random(f"{seed}:{k}")
    home = rng.choice(NODES)
    action = rng.choice(ACTIONS)
    fault = rng.choice(FAULTS)
    delay = rng.uniform(0.0, 2.5)
    rec = {"trial": k, "seed": seed, "home": home, "action": action, "fault": fault,
           "delay_s": round(delay, 2), "violations": [], "problems": []}
    # A start starts a stopped VM, on either node; everything else acts on a running one.
    why = normalize(lab_, home, stopped=action == "start")
    if why:
        rec["problems"].append(why)
        return rec
    if action == "start":
        home = rng.choice(NODES)
        rec["home"] = home
    mark = rng.randrange(1, 255)
    # A guest that has just been started is still in its firmware, which rewrites CMOS while it
    # boots: write until the mark stays (as the lab test does).
    if action != "start" and not wait_for(
            lambda: lab_.cmos(home, mark) == mark and lab_.cmos(home) == mark, 15, 0.25):
        rec["problems"].append("could not write the CMOS mark")
        return rec
    t_start = time.time()
    cmd, expect_refusal = action_cmd(lab_, action, home)
    result = {}
    th = threading.Thread(target=lambda: result.setdefault("r", cmd()))
    th.start()
    time.sleep(delay)
    what, repair = inject(lab_, fault, home, rng)
    rec["fault_done"] = what
    repair()
    t_repaired = time.time()
    th.join(timeout=180)
    r = result.get("r")
    if th.is_alive() or r is None:
        rec["problems"].append("the action did not return within 180 s")
    elif expect_refusal and r.returncode == 0 and fault == "none":
        rec["problems"].append(f"a careless command was not refused: {r.stdout}{r.stderr}")
    rec["action_exit"] = None if r is None else r.returncode
    # Recovery: bounded. The watchdog may be restarting the VM; let it finish too.
    ok = wait_for(lambda: settled(lab_), RECOVERY_BOUND)
    time.sleep(2.5)
    ok = ok and wait_for(lambda: settled(lab_), RECOVERY_BOUND)
    t_settled = time.time()
    rec["recovery_s"] = round(t_settled - t_repaired - 2.5, 2) if ok else None
    if not ok:
        rec["problems"].append(
            f"not settled {RECOVERY_BOUND:.0f} s after the fault was repaired: states "
            f"{[lab_.state(n) for n in NODES]}, journals {[lab_.open_journals(n) for n in NODES]}, "
            f"agents up {[lab_.agent_up(n) for n in NODES]}")
    time.sleep(0.3)  # the samplers' last word on this trial
    samples = {n: lab_.samples(n, t_start, time.time()) for n in NODES}
    rec["samples"] = {n: len(v) for n, v in samples.items()}
    span = time.time() - t_start
    for n, v in samples.items():
        # A sampler that fell silent would hide everything: ≥ 1 sample per 0.2 s, or no verdict.
        if len(v) < span / 0.2:
            rec["problems"].append(f"the sampler on {n} took {len(v)} samples in {span:.1f} s")
    rec["violations"] += judge(samples)
    where = lab_.where()
    if len(where) > 1:
        rec["violations"].append(f"the VM runs on {where} after recovery")
    for n in NODES:
        held = lab_.lease(n)
        if held != "none" and not lab_.qemu_pid(n):
            rec["violations"].append(f"lease {held} held on {n} where no qemu of the VM runs")
        if n in where and held != "ex":
            rec["violations"].append(f"the VM runs on {n} with its lease {held} after recovery")
        c = lab_.vmw(n, "check")
        # A VM a careless `virsh start` brought up against its intent (ERROR_up) makes check
        # ask for a human: that is check doing its job, not a broken invariant.
        if c.returncode != 0 and ("VIOLATED" in c.stdout or c.returncode != 1):
            rec["problems"].append(f"vmwarden check on {n} exit {c.returncode}: {c.stdout}")
        if lab_.open_journals(n):
            rec["problems"].append(f"journal left open on {n}: {lab_.open_journals(n)}")
    kept_running = action not in ("start", "stop", "restart", "crash") and fault != "kill_qemu"
    if kept_running:
        if len(where) != 1:
            rec["problems"].append(f"nothing stopped the VM, yet it runs on {where}")
        elif lab_.cmos(where[0]) != mark:
            rec["violations"].append(
                f"the guest's memory was lost on {where[0]} (CMOS mark {mark:#04x} gone) "
                "although nothing in the trial stopped or killed it")
    rec["where_after"] = where
    return rec


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    args = sys.argv[2:]
    opt = lambda k, d: args[args.index(k) + 1] if k in args else d
    trials = int(opt("--trials", "20"))
    seed = opt("--seed", "1")
    only = opt("--only", None)
    out_json = opt("--json", None)
    ks = [int(only)] if only is not None else list(range(1, trials + 1))
    self_test()
    lab_ = Lab(binary)
    records = []
    t0 = time.time()
    lab_.up()
    try:
        for k in ks:
            rec = trial(lab_, seed, k)
            records.append(rec)
            bad = rec["violations"] or rec["problems"]
            print(f"trial {k:3}: {rec['action']:<17} fault {rec['fault']:<16} "
                  f"at +{rec['delay_s']:.2f} s  recovery {rec.get('recovery_s')} s  "
                  f"{'VIOLATION ' if rec['violations'] else ''}{'PROBLEM ' if rec['problems'] else ''}"
                  f"{'; '.join(rec['violations'] + rec['problems']) if bad else 'ok'}",
                  flush=True)
    finally:
        lab_.down()
    rec_times = [r["recovery_s"] for r in records if r.get("recovery_s") is not None]
    faults = {}
    for r in records:
        faults[r["fault"]] = faults.get(r["fault"], 0) + 1
    report = {
        "seed": seed, "trials": len(records), "seconds": round(time.time() - t0, 1),
        "faults_by_kind": faults,
        "actions_by_kind": {a: sum(1 for r in records if r["action"] == a) for a in ACTIONS},
        "violations": sum(len(r["violations"]) for r in records),
        "trials_with_problems": sum(1 for r in records if r["problems"]),
        "recovery_s": {"median": statistics.median(rec_times), "max": max(rec_times)}
        if rec_times else None,
        "failed": [{"trial": r["trial"], "replay": f"--seed {seed} --only {r['trial']}",
                    "action": r["action"], "fault": r.get("fault_done"),
                    "violations": r["violations"], "problems": r["problems"]}
                   for r in records if r["violations"] or r["problems"]],
    }
    print(json.dumps(report, indent=2))
    if out_json:
        with open(out_json, "w") as f:
            json.dump({"report": report, "trials": records}, f, indent=2)
    sys.exit(1 if report["violations"] or report["trials_with_problems"] else 0)


if __name__ == "__main__":
    main()
