//! vmwarden's actions in the two-node lab (scripts/lab.sh with VMWARDEN_BIN: an agent, a config,
//! the qemu hook and a sanlock lease per VM on each node), on real libvirtd, qemu and sanlock:
//!
//! - start on n1; start on n2 refused through vmwarden and through plain `virsh start` (hook),
//!   naming n1;
//! - `--dry-run` prints the migration plan and changes nothing;
//! - live migration n1 → n2: the same guest keeps running (a CMOS byte written before is read
//!   back after), lease exclusive on n2 and absent on n1;
//! - a migration whose target libvirtd is stopped right before the libvirt step rolls back;
//! - the agent killed with SIGKILL after each migration step, restarted: the journal is
//!   recovered, exactly one instance runs, its lease is exclusive where it runs and absent on the
//!   other node;
//! - the migration's commit after libvirt's switchover: the target's agent SIGKILLed, and the
//!   target's libvirtd stopped, right after `virsh migrate` returned — the action goes forward
//!   (never undone), recovery finishes it, the lease ends exclusive on the target; in that
//!   window a plain `virsh migrate` back is refused by the hook, naming the holder;
//! - stop of a guest that ignores ACPI (OS-less): destroyed after the timeout, lease released.
//!
//! Needs root, iproute2, util-linux, sanlock, libvirt + qemu. Without them: a loud SKIPPED line,
//! or a failure under VMWARDEN_REQUIRE_REAL=1 (CI). Uses the lab's fixed namespaces: must not run
//! concurrently with another lab user (tests/lab_real.rs is another test binary, so cargo runs
//! them one after the other).

#[path = "support/lab.rs"]
mod lab_support;
mod support;

use std::path::PathBuf;
use std::time::Instant;

use std::sync::LazyLock;

use lab_support::{lab_dir, running, text, Down, Lab};
use support::{lab_ready, repo, skip_or_fail, wait_for};
use vmwarden::lock::Held;

const TEST: &str = "lab_actions::lifecycle_in_the_lab";
const VM: &str = "vmw-a";
const UUID: &str = "5f0e3a4c-1b2d-4e6f-8a9b-0c1d2e3f4a5b";
const SHUTDOWN_TIMEOUT: u64 = 3;
/// The watchdog as the lab runs it: short periods so a crash loop reaches the limit quickly.
const WATCHDOG_TOML: &str = "[watchdog]\nreconcile_seconds = 1\nmax_attempts = 3\nbackoff_initial_seconds = 0.5\nbackoff_max_seconds = 2\n\
[notify.email]\nenabled = true\nserver = \"127.0.0.1\"\nport = 2525\ntls = \"none\"\nfrom = \"vmwarden@lab\"\n\
to = [\"ops@lab\"]\nretry_initial_seconds = 1\nretry_max_seconds = 2\n";

/// A real SMTP server (aiosmtpd) on a node's own loopback, port 2525: each mail it accepts is a
/// file in `$LAB/shared/mail-NODE/`. Started through `lab.sh exec`; its pid is recorded and it is
/// stopped by that pid, name checked (the lab's `down` sweeps the node's namespace anyway).
const SMTP_PY: &str = r#"
import os, sys, time
from aiosmtpd.controller import Controller
port, out, pidfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.makedirs(out, exist_ok=True)
class Keep:
    async def handle_DATA(self, server, session, envelope):
        with open(os.path.join(out, f"{time.time_ns()}.eml"), "wb") as f:
            f.write(envelope.original_content or envelope.content)
        return "250 OK"
c = Controller(Keep(), hostname="127.0.0.1", port=port)
c.start()
with open(pidfile, "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(3600)
"#;

struct Smtp {
    node: &'static str,
    child: std::process::Child,
}

impl Smtp {
    fn start(node: &'static str) -> Smtp {
        let dir = lab_dir().join("shared");
        let script = dir.join("smtp.py");
        std::fs::write(&script, SMTP_PY).unwrap();
        let pidfile = dir.join(format!("smtp-{node}.pid"));
        let _ = std::fs::remove_file(&pidfile);
        let child = std::process::Command::new("bash")
            .arg(repo().join("scripts/lab.sh"))
            // Debian's python (python3-aiosmtpd), not whatever python3 comes first in PATH.
            .args(["exec", node, "/usr/bin/python3"])
            .arg(&script)
            .arg("2525")
            .arg(dir.join(format!("mail-{node}")))
            .arg(&pidfile)
            .env("VMWARDEN_LAB_DIR", lab_dir())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_for(10, || pidfile.exists().then_some(())).is_some(),
            "the SMTP server did not come up in {node}"
        );
        Smtp { node, child }
    }

    fn mails(&self) -> Vec<String> {
        let dir = lab_dir().join("shared").join(format!("mail-{}", self.node));
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let pidfile = lab_dir()
            .join("shared")
            .join(format!("smtp-{}.pid", self.node));
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.starts_with("python3") {
                // A plain TERM by the recorded pid, its name checked above.
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .status();
            }
        }
        let _ = self.child.wait();
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmwarden")
}

/// The lab as this test runs it: its binary, VMs and extra config (`lab_support::Lab`).
static LAB: LazyLock<Lab> = LazyLock::new(|| Lab {
    repo: repo(),
    env: vec![
        ("VMWARDEN_BIN", bin().to_string()),
        ("VMWARDEN_LAB_VMS", VM.to_string()),
        (
            "VMWARDEN_LAB_SHUTDOWN_TIMEOUT",
            SHUTDOWN_TIMEOUT.to_string(),
        ),
        ("VMWARDEN_LAB_EXTRA_TOML", WATCHDOG_TOML.to_string()),
    ],
    bin: bin().to_string(),
});

/// A byte of the guest's CMOS NVRAM (register 0x7e) through qemu's monitor, written first when
/// `write` is given. CMOS is part of the migrated device state; a freshly booted guest has 0
/// there. The BIOS also uses the CMOS index port while it boots, so a write is repeated until it
/// reads back, and a read until it shows `expect` (a few tries).
fn cmos(node: &str, write: Option<u8>, expect: u8) -> u8 {
    let hmp = |cmd: &str| {
        LAB.virsh(node, &["qemu-monitor-command", VM, "--hmp", cmd])
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut last = 0;
    for _ in 0..40 {
        if let Some(v) = write {
            hmp("o/b 0x70 0x7e");
            hmp(&format!("o/b 0x71 {v:#04x}"));
        }
        hmp("o/b 0x70 0x7e");
        let out = hmp("i/b 0x71");
        let hex = out.trim().rsplit("0x").next().unwrap_or("");
        last = u8::from_str_radix(hex.trim(), 16).unwrap_or_else(|e| panic!("{out:?}: {e}"));
        if last == expect {
            return last;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    last
}

fn other(node: &str) -> &'static str {
    if node == "n1" {
        "n2"
    } else {
        "n1"
    }
}

/// Exactly one instance, exclusive lease where it runs, none on the other node. Returns where.
fn assert_one_instance(context: &str) -> &'static str {
    let (a1, a2) = (LAB.active("n1", VM), LAB.active("n2", VM));
    assert!(
        a1 ^ a2,
        "{context}: active on n1 {a1}, on n2 {a2}: expected exactly one instance"
    );
    let at = if a1 { "n1" } else { "n2" };
    assert_eq!(
        LAB.lease(at, VM),
        Held::Exclusive,
        "{context}: lease on {at}, where the VM runs"
    );
    assert_eq!(
        LAB.lease(other(at), VM),
        Held::None,
        "{context}: lease on {}",
        other(at)
    );
    at
}

fn journal_dir(node: &str) -> PathBuf {
    lab_dir().join(node).join("state/journal")
}

fn unfinished(node: &str) -> Vec<PathBuf> {
    std::fs::read_dir(journal_dir(node))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

/// The newest finished journal on `node` (names start with a millisecond timestamp).
fn newest_done_journal(node: &str) -> String {
    let newest = std::fs::read_dir(journal_dir(node).join("done"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .max()
        .unwrap();
    std::fs::read_to_string(&newest).unwrap()
}

fn agent_pid(node: &str) -> Option<i32> {
    std::fs::read_to_string(lab_dir().join(format!("{node}.vmwarden.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

const STEPS: [&str; 6] = [
    "preflight",
    "source_to_shared",
    "target_acquire_shared",
    "libvirt_migrate",
    "source_release",
    "target_to_exclusive",
];

#[test]
fn lifecycle_in_the_lab() {
    if !lab_ready(TEST, &[]) {
        return;
    }
    let t0 = Instant::now();
    let _down = Down(LAB.clone());
    let up = LAB.sh(&["up"]);
    if !up.status.success() {
        skip_or_fail(TEST, &format!("`lab.sh up` failed: {}", text(&up)));
        return;
    }
    let dir = lab_dir();
    let disk = lab_support::guest_disk(VM);
    // The same definition (same UUID) on both nodes, as a cluster keeps it.
    let xml = LAB.define_on(
        &["n1", "n2"],
        VM,
        &lab_support::guest_xml(LAB.domain_type(), VM, Some(UUID), &disk),
    );

    // Start on n1.
    let (code, out) = LAB.ctl("n1", &["start", VM]);
    assert_eq!(code, 0, "start on n1: {out}");
    assert_eq!(assert_one_instance("after start on n1"), "n1");

    // A second start on n2: refused by vmwarden and by the hook, both naming n1.
    let (code, out) = LAB.ctl("n2", &["start", VM]);
    assert_eq!(code, 1, "start on n2 must be refused: {out}");
    assert!(out.contains("refused") && out.contains("n1"), "{out}");
    // The report names the node in a field of its own (what the watchdog reads).
    let (code, out) = LAB.ctl("n2", &["--json", "start", VM]);
    assert_eq!(code, 1, "{out}");
    let rep: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rep["held_by_node"], "n1", "{out}");
    let err = LAB
        .virsh("n2", &["start", VM])
        .expect_err("plain virsh start on n2 must fail");
    assert!(
        err.contains("vmwarden refuses to start") && err.contains("host 1 is node n1"),
        "{err}"
    );
    assert_eq!(assert_one_instance("after the refused starts"), "n1");

    // --dry-run: the plan with its commands, nothing changed.
    let (code, out) = LAB.ctl("n1", &["migrate", VM, "--to", "n2", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    for want in STEPS
        .iter()
        .copied()
        .chain(["migrate --live", "undo:", "dry run"])
    {
        assert!(out.contains(want), "dry run lacks {want:?}:\n{out}");
    }
    assert_eq!(assert_one_instance("after the dry run"), "n1");
    assert!(unfinished("n1").is_empty());

    // Live migration n1 -> n2 keeps the guest: a CMOS byte set before is there after.
    let mark = 0xa5u8;
    assert_eq!(cmos("n1", Some(mark), mark), mark);
    let t_mig = Instant::now();
    let (code, out) = LAB.ctl("n1", &["migrate", VM, "--to", "n2"]);
    let t_mig = t_mig.elapsed();
    assert_eq!(code, 0, "migrate n1 -> n2: {out}");
    assert_eq!(assert_one_instance("after migrating to n2"), "n2");
    assert_eq!(cmos("n2", None, mark), mark, "not the same guest on n2");
    assert_eq!(
        LAB.virsh("n2", &["domstate", "--reason", VM])
            .unwrap()
            .trim(),
        "running (migrated)"
    );

    // The target's libvirtd stops right before the libvirt step: everything is undone.
    LAB.ok(&["agent-stop", "n2"]);
    LAB.ok(&[
        "agent-start",
        "n2",
        "VMWARDEN_TEST_PAUSE_BEFORE_STEP=migrate:libvirt_migrate",
    ]);
    let mig = std::thread::spawn(|| LAB.ctl("n2", &["migrate", VM, "--to", "n1"]));
    let flag = dir.join("n2/state/paused-libvirt_migrate");
    assert!(
        wait_for(60, || flag.exists().then_some(())).is_some(),
        "the agent on n2 never reached the libvirt step"
    );
    assert_eq!(
        LAB.lease("n1", VM),
        Held::Shared,
        "n1 joined the lease before the libvirt step"
    );
    // n1 holds the lease shared for the declared migration, but libvirt's part has not begun:
    // a plain `virsh start` there (a stale definition) would run the VM twice — the hook
    // refuses it.
    LAB.virsh("n1", &["define", xml.to_str().unwrap()]).unwrap();
    let err = LAB
        .virsh("n1", &["start", VM])
        .expect_err("a start on a shared lease must fail");
    assert!(
        err.contains("vmwarden refuses to start") && err.contains("held shared"),
        "{err}"
    );
    assert!(
        LAB.active("n2", VM) && !LAB.active("n1", VM),
        "the refused start ran the VM twice"
    );
    assert_eq!(
        LAB.lease("n1", VM),
        Held::Shared,
        "the refused start changed n1's share"
    );
    LAB.virsh("n1", &["undefine", VM]).unwrap();
    LAB.ok(&["libvirtd-stop", "n1"]);
    std::fs::remove_file(&flag).unwrap();
    let (code, out) = mig.join().unwrap();
    assert_eq!(code, 1, "the migration must fail: {out}");
    assert!(out.contains("rolled_back"), "{out}");
    LAB.ok(&["libvirtd-start", "n1"]);
    assert_eq!(assert_one_instance("after the rolled-back migration"), "n2");
    assert!(unfinished("n2").is_empty());
    LAB.ok(&["agent-stop", "n2"]);
    LAB.ok(&["agent-start", "n2"]);

    // SIGKILL after each step; the restarted agent recovers from its journal.
    let mut at = "n2";
    for step in STEPS {
        let to = other(at);
        LAB.ok(&["agent-stop", at]);
        let fault = format!("VMWARDEN_FAULT_AFTER_STEP=migrate:{step}");
        LAB.ok(&["agent-start", at, &fault]);
        let pid = agent_pid(at).unwrap();
        let (code, out) = LAB.ctl(at, &["migrate", VM, "--to", to]);
        assert_eq!(code, 2, "the agent should have died after {step}: {out}");
        assert!(
            wait_for(10, || (!running(pid)).then_some(())).is_some(),
            "the agent on {at} still runs after the fault at {step}"
        );
        assert_eq!(unfinished(at).len(), 1, "after {step}: the journal is left");
        LAB.ok(&["agent-start", at]);
        assert!(
            wait_for(60, || unfinished(at).is_empty().then_some(())).is_some(),
            "the journal on {at} was not recovered after {step}; agent log:\n{}",
            std::fs::read_to_string(dir.join(format!("{at}.vmwarden.log"))).unwrap_or_default()
        );
        let now = assert_one_instance(&format!("after a crash after {step}"));
        let closed = newest_done_journal(at);
        assert!(
            closed.contains("\"kind\":\"recovery\"")
                && closed.contains("recovered after an agent crash"),
            "crash after {step}: the journal was not closed by recovery:\n{closed}"
        );
        // Up to the libvirt step the migration is rolled back; after it, finished.
        let expect = if STEPS.iter().position(|s| *s == step)
            < STEPS.iter().position(|s| *s == "libvirt_migrate")
        {
            at
        } else {
            to
        };
        assert_eq!(
            now, expect,
            "crash after {step}: the VM should be on {expect}"
        );
        assert_eq!(
            cmos(now, None, mark),
            mark,
            "crash after {step}: not the same guest"
        );
        at = now;
    }

    // The commit of a live migration is what libvirt did, whoever else fails right after the
    // switchover: the target's agent killed, then the target's libvirtd stopped.
    at = target_agent_killed_after_switchover(at, mark);
    at = target_libvirtd_stopped_after_switchover(at, mark);

    // Stop: the OS-less guest ignores ACPI, so it is destroyed after the timeout.
    let (code, out) = LAB.ctl(at, &["--json", "stop", VM]);
    assert_eq!(code, 0, "stop: {out}");
    let rep: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let waited = rep["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "wait_or_destroy")
        .and_then(|s| s["seconds"].as_f64())
        .unwrap();
    assert!(
        waited >= SHUTDOWN_TIMEOUT as f64,
        "destroyed after {waited} s, before the {SHUTDOWN_TIMEOUT} s timeout"
    );
    assert!(!LAB.active("n1", VM) && !LAB.active("n2", VM));
    assert_eq!(
        LAB.lease(at, VM),
        Held::None,
        "the lease outlived the stopped VM"
    );
    assert_eq!(
        LAB.virsh(at, &["domstate", "--reason", VM]).unwrap().trim(),
        "shut off (destroyed)"
    );

    // The lease backend's invariants and `vmwarden lock`, for real: a lease taken by hand while
    // the VM is stopped is a leaked lock for `vmwarden check`; the other node's attempt names
    // the holder; released, everything holds again.
    let (code, out) = LAB.vmw(at, "check", &[]);
    assert_eq!(code, 0, "check after the stop: {out}");
    let (code, out) = LAB.vmw(at, "lock", &["exclusive", VM]);
    assert_eq!(code, 0, "lock exclusive: {out}");
    assert_eq!(LAB.lease(at, VM), Held::Exclusive);
    let (code, out) = LAB.vmw(other(at), "lock", &["exclusive", VM]);
    assert_eq!(code, 1, "the other node took a held lease: {out}");
    assert!(out.contains(&format!("node {at}")), "{out}");
    let (code, out) = LAB.vmw(at, "check", &[]);
    assert_eq!(code, 1, "a leaked lease went unnoticed: {out}");
    assert!(
        out.contains("VIOLATED lock_without_running_domain")
            && out.contains(&format!(":{VM}"))
            && out.contains(&format!("vmwarden lock release {VM}")),
        "{out}"
    );
    let (code, out) = LAB.vmw(at, "lock", &["release", VM]);
    assert_eq!(code, 0, "lock release: {out}");
    assert_eq!(LAB.lease(at, VM), Held::None);
    let (code, out) = LAB.vmw(at, "check", &[]);
    assert_eq!(code, 0, "check after the release: {out}");

    watchdog_in_the_lab(at, mark);

    eprintln!(
        "lab_actions: migration {t_mig:.1?}, whole test {:.1?}",
        t0.elapsed()
    );
}

/// `kill -9` of the VM's qemu on `node` (by its recorded pid, name checked); waits until the
/// watchdog has it running again with a new qemu, or `None` after 30 s. Returns the time taken.
fn crash_and_wait(node: &str) -> Option<std::time::Duration> {
    let old = LAB.qemu_pid(node, VM).expect("the VM's qemu runs");
    LAB.ok(&["exec", node, "kill", "-9", &old]);
    let t = Instant::now();
    wait_for(30, || {
        (LAB.active(node, VM) && LAB.qemu_pid(node, VM).is_some_and(|p| p != old)).then_some(())
    })?;
    Some(t.elapsed())
}

fn agent_log(node: &str) -> String {
    std::fs::read_to_string(lab_dir().join(format!("{node}.vmwarden.log"))).unwrap_or_default()
}

/// Waits until the watchdog shows the VM running on `node` with the same qemu for 2 s (no restart
/// in flight), or panics with what it saw.
fn settled_running(node: &str) {
    let mut last = None;
    let mut since = Instant::now();
    let ok = wait_for(30, || {
        let pid = LAB.qemu_pid(node, VM);
        if pid != last {
            last = pid;
            since = Instant::now();
        }
        (last.is_some()
            && watchdog_line(node).contains("running")
            && since.elapsed() >= std::time::Duration::from_secs(2))
        .then_some(())
    });
    assert!(
        ok.is_some(),
        "{VM} never settled running on {node}: {}\n{}",
        watchdog_line(node),
        agent_log(node)
    );
}

fn watchdog_line(node: &str) -> String {
    let (code, out) = LAB.ctl(node, &["watchdog"]);
    assert_eq!(code, 0, "ctl watchdog on {node}: {out}");
    out.lines()
        .find(|l| l.starts_with(VM))
        .unwrap_or_default()
        .to_string()
}

/// The watchdog for real: a killed qemu is back with its lease, a crash loop stops at the limit
/// and `ctl reset` revives it, a VM migrated away is restarted where it runs now, never on the
/// source, and a `virsh destroy` is left down with its intent recorded.
fn watchdog_in_the_lab(at: &'static str, mark: u8) {
    let _ = mark;
    // The other node's refused `vmwarden lock exclusive` above may still be queued in its
    // sanlock daemon for a moment after the release: wait until neither node holds the lease.
    assert!(
        wait_for(30, || (LAB.lease("n1", VM) == Held::None
            && LAB.lease("n2", VM) == Held::None)
            .then_some(()))
        .is_some(),
        "the lease is still held after the release: n1 {:?}, n2 {:?}\n{}",
        LAB.lease("n1", VM),
        LAB.lease("n2", VM),
        LAB.ok(&["exec", other(at), "sanlock", "client", "status"])
    );
    let (code, out) = LAB.ctl(at, &["start", VM]);
    assert_eq!(code, 0, "start for the watchdog: {out}");
    let took = crash_and_wait(at).unwrap_or_else(|| {
        panic!(
            "the watchdog did not restart the killed VM on {at}: {}\n{}",
            watchdog_line(at),
            agent_log(at)
        )
    });
    eprintln!("lab_actions: watchdog: killed qemu running again after {took:.2?}");
    // The view is the watchdog's last pass: the next one (within a reconcile) sees it running.
    assert!(
        wait_for(10, || watchdog_line(at).contains("running").then_some(())).is_some(),
        "{}\n{}",
        watchdog_line(at),
        agent_log(at)
    );
    assert_eq!(assert_one_instance("after the watchdog's restart"), at);
    // Two more crashes use attempts 2 and 3; the fourth is one too many: given up. The mail
    // server comes up only after the second restart: a server that is down blocks nothing.
    let mut smtp = None;
    for n in 2..=3 {
        if n == 3 {
            smtp = Some(Smtp::start(at));
        }
        assert!(
            crash_and_wait(at).is_some(),
            "crash {n} was not restarted: {}\n{}",
            watchdog_line(at),
            agent_log(at)
        );
    }
    let smtp = smtp.unwrap();
    let old = LAB.qemu_pid(at, VM).unwrap();
    LAB.ok(&["exec", at, "kill", "-9", &old]);
    assert!(
        // The decision reads "gave up after N attempts" for one reconcile and "given up" from the
        // next on (every 1 s): a poll can miss the first.
        wait_for(20, || {
            let l = watchdog_line(at);
            (l.contains("gave up") || l.contains("given up")).then_some(())
        })
        .is_some(),
        "no give-up after the limit: {}\n{}",
        watchdog_line(at),
        agent_log(at)
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!LAB.active(at, VM), "restarted after giving up");
    assert_eq!(
        LAB.lease(at, VM),
        Held::None,
        "the lease outlived the given-up VM"
    );
    // The give-up mail arrives once, naming the VM, the node, what happened and the reset.
    let gave_up_mails = || {
        smtp.mails()
            .into_iter()
            .filter(|m| m.contains("gave up"))
            .collect::<Vec<_>>()
    };
    assert!(
        wait_for(20, || (!gave_up_mails().is_empty()).then_some(())).is_some(),
        "no give-up mail: {:?}\n{}",
        smtp.mails(),
        agent_log(at)
    );
    let mail = &gave_up_mails()[0];
    for needle in [
        VM,
        &format!("on {at}"),
        "kept dying",
        &format!("vmwarden ctl reset {VM}"),
    ] {
        assert!(
            mail.contains(needle),
            "the give-up mail lacks {needle:?}: {mail}"
        );
    }
    // `vmwarden check` says the VM needs a human.
    let (code, out) = LAB.vmw(at, "check", &[]);
    assert!(
        code == 1 && out.contains("NEEDS YOU"),
        "check after the give-up: {out}"
    );
    // An agent restart keeps what the watchdog counted: still given up, still down.
    LAB.ok(&["agent-stop", at]);
    LAB.ok(&["agent-start", at]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        watchdog_line(at).contains(&format!("given up: `vmwarden ctl reset {VM}`"))
            && !LAB.active(at, VM),
        "the give-up did not survive an agent restart: {}\n{}",
        watchdog_line(at),
        agent_log(at)
    );
    assert_eq!(gave_up_mails().len(), 1, "the give-up mail came twice");
    let (code, out) = LAB.ctl(at, &["reset", VM]);
    assert_eq!(code, 0, "reset: {out}");
    assert!(out.contains("no longer given up"), "{out}");
    assert!(
        wait_for(30, || LAB.active(at, VM).then_some(())).is_some(),
        "reset did not revive it: {}",
        watchdog_line(at)
    );
    // The restart action is over once a later pass sees it running.
    assert!(
        wait_for(10, || watchdog_line(at).contains("running").then_some(())).is_some(),
        "{}",
        watchdog_line(at)
    );
    assert_eq!(assert_one_instance("after the reset"), at);

    // Migrated away, then killed: restarted where it runs now; the source has nothing to restart.
    let to = other(at);
    let (code, out) = LAB.ctl(at, &["migrate", VM, "--to", to]);
    assert_eq!(code, 0, "migrate for the watchdog: {out}");
    assert!(
        crash_and_wait(to).is_some(),
        "not restarted on {to}: {}",
        watchdog_line(to)
    );
    settled_running(to);
    assert_eq!(assert_one_instance("a migrated VM killed"), to);

    // The guest powers itself off (S5 written into the pc machine's ACPI PM1a control port:
    // libvirt reports a guest-initiated shutdown): with user_shutdown = false (the default, as
    // Ganeti) that is ERROR_down, restarted.
    let old = guest_poweroff(to);
    assert!(
        wait_for(30, || (LAB.active(to, VM)
            && LAB.qemu_pid(to, VM).is_some_and(|p| p != old))
        .then_some(()))
        .is_some(),
        "a guest poweroff was not restarted (user_shutdown = false): {}\n{}",
        watchdog_line(to),
        agent_log(to)
    );
    settled_running(to);

    // With user_shutdown = true the guest's own poweroff is USER_down: left down, intent "stop"
    // recorded as the guest's.
    let cfg = lab_dir().join(to).join("vmwarden.toml");
    let toml = std::fs::read_to_string(&cfg).unwrap();
    assert!(toml.contains(WATCHDOG_TOML), "{toml}");
    std::fs::write(
        &cfg,
        toml.replace(
            WATCHDOG_TOML,
            &WATCHDOG_TOML.replace("[watchdog]\n", "[watchdog]\nuser_shutdown = true\n"),
        ),
    )
    .unwrap();
    LAB.ok(&["agent-stop", to]);
    LAB.ok(&["agent-start", to]);
    settled_running(to);
    guest_poweroff(to);
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(
        !LAB.active(to, VM) && !LAB.active(at, VM),
        "a guest poweroff was restarted with user_shutdown = true: {}\n{}",
        watchdog_line(to),
        agent_log(to)
    );
    assert!(
        watchdog_line(to).contains("USER_down"),
        "{}",
        watchdog_line(to)
    );
    let meta = intent_of(to);
    assert!(
        meta.contains("state=\"stop\"") && meta.contains("by=\"guest\""),
        "{meta}"
    );
    assert_eq!(
        LAB.lease(to, VM),
        Held::None,
        "the lease outlived the powered-off VM"
    );
    let (code, out) = LAB.ctl(to, &["start", VM]);
    assert_eq!(code, 0, "start after USER_down: {out}");
    settled_running(to);

    // virsh destroy by an operator: left down, the intent says so.
    LAB.virsh(to, &["destroy", VM]).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(
        !LAB.active(to, VM) && !LAB.active(at, VM),
        "a destroyed VM was restarted: {}\n{}",
        watchdog_line(to),
        agent_log(to)
    );
    assert!(
        watchdog_line(to).contains("ADMIN_down"),
        "{}",
        watchdog_line(to)
    );
    let meta = intent_of(to);
    assert!(meta.contains("state=\"stop\""), "{meta}");
    assert_eq!(
        LAB.lease(to, VM),
        Held::None,
        "the lease outlived the destroyed VM"
    );
}

/// vmwarden's intent in the VM's persistent definition on `node`.
fn intent_of(node: &str) -> String {
    LAB.virsh(
        node,
        &[
            "metadata",
            VM,
            "--uri",
            vmwarden::watchdog::intent::NS,
            "--config",
        ],
    )
    .unwrap()
}

/// The guest powers itself off: S5 written into the pc machine's ACPI PM1a control port (libvirt
/// reports a guest-initiated shutdown). The firmware maps the PM registers while it boots: written
/// until the qemu goes. Returns the qemu pid it had.
fn guest_poweroff(node: &str) -> String {
    let old = LAB.qemu_pid(node, VM).unwrap();
    for _ in 0..20 {
        let _ = LAB.virsh(
            node,
            &["qemu-monitor-command", "--hmp", VM, "o /w 0x604 0x2000"],
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
        if LAB.qemu_pid(node, VM).map_or(true, |p| p != old) {
            break;
        }
    }
    old
}

fn ip(node: &str) -> &'static str {
    if node == "n1" {
        "10.77.0.1"
    } else {
        "10.77.0.2"
    }
}

const COMMIT_PAUSE: &str = "VMWARDEN_TEST_PAUSE_BEFORE_STEP=migrate:libvirt_migrate.commit";

/// `vmwarden ctl --json migrate` from `at` to the other node, its agent paused right after
/// `virsh migrate` returned (the guest has switched over; the commit is not decided yet);
/// `during` runs in that window. Returns ctl's exit code and report.
fn migrate_paused_after_switchover(
    at: &'static str,
    during: impl FnOnce(),
) -> (i32, serde_json::Value) {
    let to = other(at);
    LAB.ok(&["agent-stop", at]);
    LAB.ok(&["agent-start", at, COMMIT_PAUSE]);
    let mig = std::thread::spawn(move || LAB.ctl(at, &["--json", "migrate", VM, "--to", to]));
    let flag = lab_dir()
        .join(at)
        .join("state/paused-libvirt_migrate.commit");
    assert!(
        wait_for(120, || flag.exists().then_some(())).is_some(),
        "the agent on {at} never got past `virsh migrate`"
    );
    assert!(
        LAB.active(to, VM) && !LAB.active(at, VM),
        "libvirt has not switched the guest over to {to}"
    );
    during();
    std::fs::remove_file(&flag).unwrap();
    let (code, out) = mig.join().unwrap();
    let rep = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    (code, rep)
}

/// A migration whose guest switched over: completed or incomplete, never rolled back.
fn assert_went_forward(code: i32, rep: &serde_json::Value) {
    assert!(
        code == 0 || code == 3,
        "the migration happened: completed or incomplete, never rolled back: {rep}"
    );
    assert!(
        rep["rollback"].as_array().is_some_and(|r| r.is_empty()),
        "{rep}"
    );
}

/// After the journal on `at` is closed: the VM runs once, on `to`, its lease exclusive there and
/// absent on `at`, the same guest, nothing undone, `vmwarden check` passes on both nodes.
fn assert_migrated_forward(context: &str, at: &str, to: &str, mark: u8) -> String {
    let t = Instant::now();
    assert!(
        wait_for(30, || unfinished(at).is_empty().then_some(())).is_some(),
        "{context}: the journal on {at} was not finished by recovery; agent log:\n{}",
        std::fs::read_to_string(lab_dir().join(format!("{at}.vmwarden.log"))).unwrap_or_default()
    );
    eprintln!(
        "lab_actions: {context}: journal on {at} closed {:.2?} later",
        t.elapsed()
    );
    assert_eq!(assert_one_instance(context), to, "{context}");
    assert_eq!(cmos(to, None, mark), mark, "{context}: not the same guest");
    assert!(
        !lab_dir().join(to).join("state/incoming").join(VM).exists(),
        "{context}: the incoming marker on {to} was left"
    );
    let closed = newest_done_journal(at);
    assert!(
        !closed.contains("\"kind\":\"undo\""),
        "{context}: a step before the commit was undone after the switchover:\n{closed}"
    );
    for n in ["n1", "n2"] {
        let (code, out) = LAB.vmw(n, "check", &[]);
        assert_eq!(code, 0, "{context}: check on {n}: {out}");
    }
    closed
}

/// The target's agent dies (SIGKILL) after libvirt switched the guest over: the source commits
/// from what libvirt did, releases, leaves the target's part to recovery; in the window a plain
/// `virsh migrate` back is refused by the source's hook, at once and naming the holder.
fn target_agent_killed_after_switchover(at: &'static str, mark: u8) -> &'static str {
    let to = other(at);
    let (code, rep) = migrate_paused_after_switchover(at, || {
        // The source's share went with its qemu (the lease holder watches it); the target's
        // share is what a careless node could join.
        assert_eq!(
            LAB.lease(to, VM),
            Held::Shared,
            "target share in the window"
        );
        let t = Instant::now();
        let err = LAB
            .virsh(
                to,
                &[
                    "migrate",
                    "--live",
                    "--persistent",
                    "--undefinesource",
                    "--unsafe",
                    VM,
                    &format!("qemu+tcp://{}/system", ip(at)),
                    &format!("tcp://{}", ip(at)),
                ],
            )
            .expect_err("a plain virsh migrate back in the window must be refused");
        eprintln!(
            "lab_actions: plain virsh migrate refused in {:.2?}",
            t.elapsed()
        );
        assert!(
            err.contains("vmwarden refuses this incoming migration")
                && err.contains("no vmwarden migration")
                && err.contains(&format!("node {to}")),
            "{err}"
        );
        assert!(
            LAB.active(to, VM) && !LAB.active(at, VM),
            "the refused migration moved the guest"
        );
        LAB.ok(&["agent-stop", to, "KILL"]);
    });
    assert_went_forward(code, &rep);
    let libvirt_ok = rep["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["step"] == "libvirt_migrate" && s["ok"] == true);
    assert!(libvirt_ok, "libvirt_migrate must count as done: {rep}");
    eprintln!(
        "lab_actions: target agent killed: ctl exit {code}, {}",
        rep["message"]
    );
    // The source let go at once, without the target.
    assert_eq!(
        LAB.lease(at, VM),
        Held::None,
        "the source kept its share: {rep}"
    );
    LAB.ok(&["agent-start", to]);
    let closed = assert_migrated_forward("target agent killed after the switchover", at, to, mark);
    // The source's agent runs without the pause switch again.
    LAB.ok(&["agent-stop", at]);
    LAB.ok(&["agent-start", at]);
    if code == 3 {
        assert!(
            closed.contains("finished by recovery") && !closed.contains("agent crash"),
            "no agent crashed on {at}: {closed}"
        );
    }
    to
}

/// The target's libvirtd stops after the switchover: the target's agent still takes the lock
/// exclusively (qemu's process runs there), the migration goes forward.
fn target_libvirtd_stopped_after_switchover(at: &'static str, mark: u8) -> &'static str {
    let to = other(at);
    let (code, rep) = migrate_paused_after_switchover(at, || {
        LAB.ok(&["libvirtd-stop", to]);
    });
    assert_went_forward(code, &rep);
    eprintln!(
        "lab_actions: target libvirtd stopped: ctl exit {code}, {}",
        rep["message"]
    );
    assert!(
        wait_for(30, || unfinished(at).is_empty().then_some(())).is_some(),
        "the journal on {at} was not finished with libvirtd stopped on {to}: {rep}"
    );
    assert_eq!(
        LAB.lease(to, VM),
        Held::Exclusive,
        "lease on {to} (libvirtd down)"
    );
    assert_eq!(LAB.lease(at, VM), Held::None, "lease on {at}");
    LAB.ok(&["libvirtd-start", to]);
    assert!(
        wait_for(30, || LAB.active(to, VM).then_some(())).is_some(),
        "{VM} does not run on {to} after its libvirtd came back"
    );
    assert_migrated_forward("target libvirtd stopped after the switchover", at, to, mark);
    // The source's agent runs without the pause switch again.
    LAB.ok(&["agent-stop", at]);
    LAB.ok(&["agent-start", at]);
    to
}
