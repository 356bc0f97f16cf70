//! A real qemu paused on a real disk I/O error in the two-node lab (real libvirtd, qemu, sanlock,
//! vmwarden's agent), and the watchdog's `resume_after_io_error`:
//!
//! - the guest's only disk is qemu's `blkdebug` fault-injection driver over a raw file, passed
//!   through `<qemu:commandline>` with `werror=stop,rerror=stop`: it fails the second read of the
//!   disk once with EIO. qemu's own geometry guess makes the first read (it ignores errors);
//!   the second is SeaBIOS reading the boot sector, so qemu stops the guest with `io-error` and
//!   libvirt reports `paused (I/O error)` — checked, not assumed. A retried read succeeds: the
//!   storage is "healthy again" right after the error. (This machine's kernel has no
//!   device-mapper driver, so the `error`/`linear` table switch cannot be used here.)
//! - `resume_after_io_error = false`: left paused (status `paused_io_error`, "left paused"),
//!   no resume journaled; `ctl resume --dry-run` shows the plan and changes nothing.
//! - the lease lost while paused (its sanlock holder process killed), the agent restarted with
//!   `resume_after_io_error = true`: never resumed ("never resumed: … no longer holds the lease"),
//!   `ctl resume` refused; the lease taken again by hand (`vmwarden lock exclusive`): still never
//!   resumed (another node might have run the VM meanwhile) until `ctl reset`;
//! - after the reset the watchdog judges the storage path healthy (the lease lockspace live, the
//!   VM's lease exclusive on n1), resumes it through the resume action (journaled, completed), and
//!   the guest runs with its lease still exclusive.
//!
//! The storage-unhealthy cases (DRBD, lvmlockd lockspaces) are the simulator's
//! (tests/sim/io_error_*): the lab has neither DRBD nor lvmlockd. Needs root, iproute2, util-linux, sanlock, libvirt + qemu;
//! without them a loud SKIPPED line, or a failure under VMWARDEN_REQUIRE_REAL=1 (CI).

#[path = "support/lab.rs"]
mod lab_support;
mod support;

use std::path::PathBuf;

use std::sync::LazyLock;

use lab_support::{lab_dir, text, Down, Lab};
use support::{lab_ready, repo, skip_or_fail, wait_for};
use vmwarden::lock::sanlock::parse_status_resource;
use vmwarden::lock::Held;

const TEST: &str = "lab_ioerror::paused_on_io_error_in_the_lab";
const VM: &str = "vmw-io";
const UUID: &str = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";
const WATCHDOG_TOML: &str = "[watchdog]\nreconcile_seconds = 1\nmax_attempts = 3\nbackoff_initial_seconds = 0.5\nbackoff_max_seconds = 2\n";

/// blkdebug: the first read moves to state 2; in state 2 one read fails with EIO (errno 5).
const BLKDEBUG: &str = "[set-state]\nstate = \"1\"\nevent = \"read_aio\"\nnew_state = \"2\"\n\n\
[inject-error]\nstate = \"2\"\nevent = \"read_aio\"\nerrno = \"5\"\nonce = \"on\"\n";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmwarden")
}

/// The lab as this test runs it: its binary, VMs and extra config (`lab_support::Lab`).
static LAB: LazyLock<Lab> = LazyLock::new(|| Lab {
    repo: repo(),
    env: vec![
        ("VMWARDEN_BIN", bin().to_string()),
        ("VMWARDEN_LAB_VMS", VM.to_string()),
        ("VMWARDEN_LAB_EXTRA_TOML", WATCHDOG_TOML.to_string()),
    ],
    bin: bin().to_string(),
});

fn domstate(node: &str) -> String {
    let o = LAB.sh(&[
        "exec",
        node,
        "timeout",
        "60",
        "virsh",
        "-q",
        "-c",
        "qemu:///system",
        "domstate",
        "--reason",
        VM,
    ]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn watchdog_line(node: &str) -> String {
    let (code, out) = LAB.ctl(node, &["watchdog"]);
    assert_eq!(code, 0, "ctl watchdog on {node}: {out}");
    out.lines()
        .find(|l| l.starts_with(VM))
        .unwrap_or_default()
        .to_string()
}

fn agent_log(node: &str) -> String {
    std::fs::read_to_string(lab_dir().join(format!("{node}.vmwarden.log"))).unwrap_or_default()
}

/// The VM's lease on `node` and the pid of the process holding it for sanlock.
fn lease_holder(node: &str) -> Option<(Held, u32)> {
    let out = LAB.ok(&["exec", node, "sanlock", "client", "status"]);
    parse_status_resource(&out, "vmwarden", VM)
}

/// The finished journals of resume actions on `node` (their text), refused ones too.
fn resume_journals(node: &str) -> Vec<String> {
    let dir = lab_dir().join(node).join("state/journal/done");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter(|t| t.contains("\"action\":\"resume\""))
        .collect()
}

/// The resumes on `node` that completed.
fn resumes_done(node: &str) -> Vec<String> {
    resume_journals(node)
        .into_iter()
        .filter(|t| t.contains("\"result\":\"completed\""))
        .collect()
}

#[test]
fn paused_on_io_error_in_the_lab() {
    if !lab_ready(TEST, &[]) {
        return;
    }
    let t0 = std::time::Instant::now();
    let _down = Down(LAB.clone());
    let up = LAB.sh(&["up"]);
    if !up.status.success() {
        skip_or_fail(TEST, &format!("`lab.sh up` failed: {}", text(&up)));
        return;
    }
    let shared = lab_dir().join("shared");
    let disk = shared.join(format!("{VM}.raw"));
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let cfg = shared.join(format!("{VM}.blkdebug"));
    std::fs::write(&cfg, BLKDEBUG).unwrap();
    let kvm = std::path::Path::new("/dev/kvm").exists();
    let drive = format!(
        "driver=raw,file.driver=blkdebug,file.config={},file.image.driver=file,file.image.filename={},if=ide,index=0,werror=stop,rerror=stop",
        cfg.display(),
        disk.display()
    );
    let xml = format!(
        "<domain type='{}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{VM}</name>
  <uuid>{UUID}</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_crash>destroy</on_crash>
  <devices/>
  <qemu:commandline>
    <qemu:arg value='-drive'/>
    <qemu:arg value='{drive}'/>
  </qemu:commandline>
</domain>
",
        if kvm { "kvm" } else { "qemu" }
    );
    let xml_path = shared.join(format!("{VM}.xml"));
    std::fs::write(&xml_path, xml).unwrap();
    LAB.ok(&[
        "exec",
        "n1",
        "virsh",
        "-q",
        "-c",
        "qemu:///system",
        "define",
        xml_path.to_str().unwrap(),
    ]);

    // resume_after_io_error = false (the default): the start completes, SeaBIOS's boot read
    // fails, qemu pauses the guest, libvirt says why.
    let (code, out) = LAB.ctl("n1", &["start", VM]);
    assert_eq!(code, 0, "start on n1: {out}");
    let paused = wait_for(30, || {
        (domstate("n1") == "paused (I/O error)").then_some(())
    });
    assert!(
        paused.is_some(),
        "not paused on an I/O error: {:?}\n{}",
        domstate("n1"),
        agent_log("n1")
    );
    let t_paused = std::time::Instant::now();
    let line = wait_for(10, || {
        let l = watchdog_line("n1");
        l.contains("left paused").then_some(l)
    });
    assert!(line.is_some(), "{}", watchdog_line("n1"));
    let line = line.unwrap_or_default();
    assert!(line.contains("paused_io_error"), "{line}");
    // The plan of a resume, nothing changed.
    let (code, out) = LAB.ctl("n1", &["resume", VM, "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    for want in [
        "resume_preflight",
        "virsh_resume",
        "resume vmw-io",
        "dry run",
    ] {
        assert!(out.contains(want), "dry run lacks {want:?}:\n{out}");
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(domstate("n1"), "paused (I/O error)", "{}", agent_log("n1"));
    assert!(
        resume_journals("n1").is_empty(),
        "{:?}",
        resume_journals("n1")
    );
    eprintln!(
        "{TEST}: left paused for {:.1} s with resume_after_io_error = false",
        t_paused.elapsed().as_secs_f64()
    );

    // The lease lost while the guest is frozen: its holder process (recorded by sanlock, its
    // name checked below) is killed, so sanlock frees the lease; qemu stays paused.
    let (_, holder) = lease_holder("n1").expect("the VM's lease is held on n1");
    // The holder is `tail --pid=QEMU -f /dev/null` (it exits with qemu, freeing the lease).
    let comm = LAB.ok(&["exec", "n1", "cat", &format!("/proc/{holder}/comm")]);
    assert!(
        matches!(comm.trim(), "tail" | "vmwarden"),
        "lease holder {holder} is {comm:?}"
    );
    LAB.ok(&["exec", "n1", "kill", &holder.to_string()]);
    assert!(
        wait_for(10, || (LAB.lease("n1", VM) == Held::None).then_some(())).is_some(),
        "the lease is still held after its holder {holder} was killed"
    );
    // The agent restarted with resume_after_io_error = true: never resumed without the lease.
    let path = lab_dir().join("n1").join("vmwarden.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    assert!(toml.contains(WATCHDOG_TOML), "{toml}");
    std::fs::write(
        &path,
        toml.replace(
            WATCHDOG_TOML,
            &WATCHDOG_TOML.replace("[watchdog]\n", "[watchdog]\nresume_after_io_error = true\n"),
        ),
    )
    .unwrap();
    LAB.ok(&["agent-stop", "n1"]);
    LAB.ok(&["agent-start", "n1"]);
    let line = wait_for(10, || {
        let l = watchdog_line("n1");
        l.contains("never resumed").then_some(l)
    });
    assert!(
        line.as_deref()
            .is_some_and(|l| l.contains("no longer holds the lease vmwarden:vmw-io")),
        "{line:?} / {}",
        watchdog_line("n1")
    );
    let (code, out) = LAB.ctl("n1", &["resume", VM]);
    assert_eq!(
        code, 1,
        "ctl resume without the lease must be refused: {out}"
    );
    assert!(
        out.contains("refused") && out.contains("not exclusive"),
        "{out}"
    );
    // The lease taken again by hand: still never resumed by the watchdog (sticky until reset).
    let cfg_path = path.display().to_string();
    let o = LAB.sh(&[
        "exec",
        "n1",
        bin(),
        "lock",
        "--config",
        &cfg_path,
        "exclusive",
        VM,
    ]);
    assert!(o.status.success(), "lock exclusive: {}", text(&o));
    assert_eq!(LAB.lease("n1", VM), Held::Exclusive);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(domstate("n1"), "paused (I/O error)", "{}", agent_log("n1"));
    assert!(watchdog_line("n1").contains("never resumed"));
    // The one resume journaled is the refused `ctl resume`: the watchdog never tried.
    let all = resume_journals("n1");
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(all[0].contains("\"result\":\"refused\""), "{}", all[0]);

    // `ctl reset`: judged anew, storage healthy and the lease exclusive here: resumed through
    // the resume action; the retried read succeeds and the guest runs, its lease still ours.
    let t_on = std::time::Instant::now();
    let (code, out) = LAB.ctl("n1", &["reset", VM]);
    assert_eq!(code, 0, "{out}");
    let running = wait_for(30, || domstate("n1").starts_with("running").then_some(()));
    assert!(
        running.is_some(),
        "not resumed: {:?}; {}\n{}",
        domstate("n1"),
        watchdog_line("n1"),
        agent_log("n1")
    );
    let t_resumed = t_on.elapsed().as_secs_f64();
    assert_eq!(domstate("n1"), "running (unpaused)");
    let done = resumes_done("n1");
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(
        done[0].contains("completed") && done[0].contains("virsh_resume"),
        "{}",
        done[0]
    );
    assert_eq!(LAB.lease("n1", VM), Held::Exclusive);
    // It stays running (the read succeeded this time): no second resume.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(domstate("n1"), "running (unpaused)");
    assert_eq!(resumes_done("n1").len(), 1);
    let line = watchdog_line("n1");
    assert!(line.contains("running"), "{line}");
    for l in agent_log("n1")
        .lines()
        .filter(|l| l.contains("watchdog: paused") || l.contains("resum"))
    {
        eprintln!("{TEST}: agent: {l}");
    }
    eprintln!(
        "{TEST}: resumed {t_resumed:.1} s after `ctl reset` with resume_after_io_error = true; whole test {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let _ = LAB.sh(&[
        "exec",
        "n1",
        "virsh",
        "-q",
        "-c",
        "qemu:///system",
        "destroy",
        VM,
    ]);
}
