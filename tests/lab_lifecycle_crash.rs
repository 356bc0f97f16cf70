//! The agent SIGKILLed after each step of create (`--from-image`), grow (stopped and running)
//! and remove, in the two-node namespace lab (real libvirtd, qemu, sanlock; the sanlock lease
//! backend; disks are files in the shared directory, `[lifecycle] disk_dir`). The fault point is
//! `VMWARDEN_FAULT_AFTER_STEP=ACTION:STEP` (src/actions/mod.rs): the agent kills itself right
//! after the step is journaled done. The restarted agent recovers the journal from what libvirt
//! and the locks show (src/actions/recover.rs, src/actions/lifecycle/mod.rs `recover`); after
//! each crash the test asserts a consistent state:
//!
//! - no journal open on either node, closed by recovery ("recovered after an agent crash");
//! - a lease held only where qemu runs (exclusive on n1 while the VM runs there, else free on
//!   both nodes);
//! - create: fully rolled back (no disk file, no definition, lease free — its slot stays
//!   initialised and free, `lease_init` has no undo by design) or complete (defined with intent
//!   stopped, the image's content in the disk), complete exactly when `define` was done;
//! - grow: the disk grown exactly when the journal's result says `completed`;
//! - remove: the VM still whole (defined on both nodes, disk there) or complete (undefined on
//!   both nodes, disk gone), complete exactly once `undefine` was done.
//!
//! Hold /work/lab.lock (`flock /work/lab.lock cargo test --test lab_lifecycle_crash`).

#[path = "support/lab.rs"]
mod lab_support;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab_support::{lab_dir, running, text, Down, Lab};
use support::{lab_ready, repo, skip_or_fail};
use vmwarden::lock::Held;

const TEST: &str = "lab_lifecycle_crash::agent_killed_after_each_lifecycle_step";
const VM: &str = "vmw-k";

const CREATE: [&str; 7] = [
    "create_preflight",
    "lease_init",
    "disk_create",
    "lock_exclusive",
    "image_copy",
    "release_lock",
    "define",
];
const GROW_STOPPED: [&str; 4] = [
    "grow_preflight",
    "lock_exclusive",
    "extend_disk",
    "release_lock",
];
/// A running VM's file disk: qemu grows it (`virsh blockresize`).
const GROW_RUNNING: [&str; 2] = ["grow_preflight", "blockresize"];
const REMOVE: [&str; 6] = [
    "remove_preflight",
    "lock_exclusive",
    "undefine",
    "undefine_peers",
    "remove_disks",
    "release_after_remove",
];

fn lab() -> Lab {
    Lab {
        repo: repo(),
        env: vec![
            ("VMWARDEN_BIN", env!("CARGO_BIN_EXE_vmwarden").to_string()),
            ("VMWARDEN_LAB_VMS", VM.to_string()),
            ("VMWARDEN_LAB_SHUTDOWN_TIMEOUT", "1".to_string()),
            (
                "VMWARDEN_LAB_EXTRA_TOML",
                format!(
                    "[lifecycle]\ndisk_dir = \"{}\"\n",
                    lab_dir().join("shared").display()
                ),
            ),
        ],
        bin: env!("CARGO_BIN_EXE_vmwarden").to_string(),
    }
}

fn state(l: &Lab, node: &str) -> String {
    l.virsh(node, &["domstate", VM])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "undefined".into())
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

/// The newest finished journal on `node` (names start with a millisecond timestamp): (its
/// text, the result of its end record).
fn newest_done(node: &str) -> (String, String) {
    let newest = std::fs::read_dir(journal_dir(node).join("done"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .max()
        .unwrap();
    let text = std::fs::read_to_string(&newest).unwrap();
    let result = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["kind"] == "end")
        .and_then(|r| r["result"].as_str().map(str::to_string))
        .unwrap_or_default();
    (text, result)
}

fn agent_pid(node: &str) -> Option<i32> {
    std::fs::read_to_string(lab_dir().join(format!("{node}.vmwarden.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Run `ctl ARGS` on n1 with its agent set to die after `action:step`; restart it and wait
/// for recovery to close the journal. Returns the closed journal's end result.
fn crash_after(l: &Lab, action: &str, step: &str, args: &[&str]) -> String {
    l.ok(&["agent-stop", "n1"]);
    let fault = format!("VMWARDEN_FAULT_AFTER_STEP={action}:{step}");
    l.ok(&["agent-start", "n1", &fault]);
    let pid = agent_pid("n1").unwrap();
    let (code, out) = l.vmw("n1", "ctl", args);
    assert_eq!(
        code,
        2,
        "{action}: the agent should have died after {step}: {out}\n{}",
        logs()
    );
    assert!(
        wait_for(10, || !running(pid)),
        "{action}: the agent still runs after the fault at {step}"
    );
    assert_eq!(
        unfinished("n1").len(),
        1,
        "{action} after {step}: the journal is left"
    );
    l.ok(&["agent-start", "n1"]);
    assert!(
        wait_for(60, || unfinished("n1").is_empty()),
        "{action} after {step}: the journal was not recovered; agent log:\n{}",
        std::fs::read_to_string(lab_dir().join("n1.vmwarden.log")).unwrap_or_default()
    );
    let (closed, result) = newest_done("n1");
    assert!(
        closed.contains("\"kind\":\"recovery\"")
            && closed.contains("recovered after an agent crash"),
        "{action} after {step}: the journal was not closed by recovery:\n{closed}"
    );
    result
}

/// The end of n1's agent and sanlock logs, for a failure's message.
fn logs() -> String {
    let tail = |f: &str| {
        let t = std::fs::read_to_string(lab_dir().join(f)).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    format!(
        "n1 agent log:\n{}\nn1 sanlock log:\n{}",
        tail("n1.vmwarden.log"),
        tail("n1.sanlock.log")
    )
}

/// No journal open anywhere, and a lease only where qemu runs.
fn assert_consistent(l: &Lab, context: &str) {
    for n in ["n1", "n2"] {
        assert!(
            unfinished(n).is_empty(),
            "{context}: journal open on {n}: {:?}",
            unfinished(n)
        );
        let want = if l.active(n, VM) {
            Held::Exclusive
        } else {
            Held::None
        };
        assert_eq!(l.lease(n, VM), want, "{context}: the lease on {n}");
    }
}

fn after(steps: &[&str], step: &str, mark: &str) -> bool {
    steps.iter().position(|s| *s == step) >= steps.iter().position(|s| *s == mark)
}

#[test]
fn agent_killed_after_each_lifecycle_step() {
    if !lab_ready(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let t0 = Instant::now();
    let l = lab();
    let down = Down(lab());
    let up = l.sh(&["up"]);
    if !up.status.success() {
        skip_or_fail(TEST, &format!("`lab.sh up` failed: {}", text(&up)));
        return;
    }
    let shared = lab_dir().join("shared");
    let disk = shared.join(format!("{VM}.raw"));
    let img = lab_support::base_qcow2();
    let xml = shared.join(format!("{VM}.xml"));
    std::fs::write(
        &xml,
        lab_support::guest_xml(l.domain_type(), VM, None, Path::new("/nowhere.qcow2")),
    )
    .unwrap();
    let (xml_s, img_s) = (xml.to_str().unwrap(), img.to_str().unwrap());
    let create_args = [
        "create",
        VM,
        "--size",
        "32M",
        "--from-image",
        img_s,
        "--xml",
        xml_s,
    ];
    let disk_len = || std::fs::metadata(&disk).map(|m| m.len()).ok();

    // create: killed after each step.
    let t_create = Instant::now();
    for step in CREATE {
        let ctx = format!("create, killed after {step}");
        let result = crash_after(&l, "create", step, &create_args);
        assert_consistent(&l, &ctx);
        if step == "define" {
            assert_eq!(result, "completed", "{ctx}");
            assert_eq!(state(&l, "n1"), "shut off", "{ctx}");
            assert_eq!(disk_len(), Some(32 << 20), "{ctx}");
            let bytes = std::fs::read(&disk).unwrap();
            assert!(
                bytes[65536..131072].iter().all(|b| *b == 0xab),
                "{ctx}: the image is not in the disk"
            );
        } else {
            assert_eq!(result, "rolled_back", "{ctx}");
            assert_eq!(state(&l, "n1"), "undefined", "{ctx}");
            assert_eq!(disk_len(), None, "{ctx}: the disk file is left");
        }
        assert_eq!(state(&l, "n2"), "undefined", "{ctx}");
    }
    let t_create = t_create.elapsed();

    // grow of the stopped VM: killed after each step; grown exactly when completed.
    let t_grow = Instant::now();
    let mut size: u64 = 32 << 20;
    for step in GROW_STOPPED {
        let ctx = format!("grow (stopped), killed after {step}");
        let result = crash_after(&l, "grow", step, &["grow", VM, "vda", "+16M"]);
        assert_consistent(&l, &ctx);
        let grown = after(&GROW_STOPPED, step, "extend_disk");
        if grown {
            size += 16 << 20;
        }
        assert_eq!(disk_len(), Some(size), "{ctx}");
        assert_eq!(result == "completed", grown, "{ctx}: result {result}");
        assert_eq!(state(&l, "n1"), "shut off", "{ctx}");
    }
    // grow of the running VM (qemu grows the file: blockresize).
    let (code, out) = l.vmw("n1", "ctl", &["start", VM]);
    assert_eq!(code, 0, "start: {out}");
    for step in GROW_RUNNING {
        let ctx = format!("grow (running), killed after {step}");
        let result = crash_after(&l, "grow", step, &["grow", VM, "vda", "+16M"]);
        assert!(l.active("n1", VM), "{ctx}: the VM no longer runs");
        assert_consistent(&l, &ctx);
        let grown = step == "blockresize";
        if grown {
            size += 16 << 20;
        }
        assert_eq!(disk_len(), Some(size), "{ctx}");
        let info = l.virsh("n1", &["domblkinfo", VM, "vda"]).unwrap();
        assert!(
            info.contains(&format!("Capacity:       {size}")),
            "{ctx}: {info}"
        );
        assert_eq!(result == "completed", grown, "{ctx}: result {result}");
    }
    let (code, out) = l.vmw("n1", "ctl", &["stop", VM]);
    assert_eq!(code, 0, "stop: {out}");
    let t_grow = t_grow.elapsed();

    // remove: the stale definition on n2 too (a cluster keeps one); killed after each step.
    let t_remove = Instant::now();
    let def = shared.join("def.xml");
    let define_on_n2 = || {
        let dumped = l.virsh("n1", &["dumpxml", "--inactive", VM]).unwrap();
        std::fs::write(&def, dumped).unwrap();
        l.virsh("n2", &["define", def.to_str().unwrap()]).unwrap();
    };
    define_on_n2();
    for (i, step) in REMOVE.iter().enumerate() {
        let ctx = format!("remove, killed after {step}");
        let result = crash_after(&l, "remove", step, &["remove", VM]);
        assert_consistent(&l, &ctx);
        if after(&REMOVE, step, "undefine") {
            assert_eq!(result, "completed", "{ctx}");
            assert_eq!(state(&l, "n1"), "undefined", "{ctx}");
            assert_eq!(
                state(&l, "n2"),
                "undefined",
                "{ctx}: n2's definition is left"
            );
            assert_eq!(disk_len(), None, "{ctx}: the disk is left");
            if i + 1 < REMOVE.len() {
                let (code, out) = l.vmw("n1", "ctl", &create_args);
                assert_eq!(code, 0, "create again: {out}");
                define_on_n2();
            }
        } else {
            assert_eq!(result, "rolled_back", "{ctx}");
            assert_eq!(state(&l, "n1"), "shut off", "{ctx}");
            assert_eq!(state(&l, "n2"), "shut off", "{ctx}");
            assert!(disk_len().is_some(), "{ctx}: the disk is gone");
        }
    }
    let t_remove = t_remove.elapsed();
    drop(down);
    eprintln!(
        "lab_lifecycle_crash: create {t_create:.1?} ({} crashes), grow {t_grow:.1?} ({}), remove {t_remove:.1?} ({}), whole test {:.1?}",
        CREATE.len(),
        GROW_STOPPED.len() + GROW_RUNNING.len(),
        REMOVE.len(),
        t0.elapsed()
    );
}
