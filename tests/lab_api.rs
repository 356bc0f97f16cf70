//! The operator API in the two-node lab (scripts/lab.sh, docs/lab.md: real libvirtd, qemu,
//! sanlock and one vmwarden agent and hook per node):
//! - `ctl migrate` end to end, its steps printed live: the lines of the steps before a paused
//!   step are read while the agent is still paused there;
//! - a second action on the VM while the migration runs → 409 naming the running action;
//! - `ctl vms --cluster` shows both nodes, and where the VM runs;
//! - with the hook switched off on n2, a VM started behind vmwarden's back on both nodes (plain
//!   `virsh start` on n2, then on n1): both agents report `running_on_several_nodes` (their
//!   `/metrics` and `vmwarden check`), and `ctl start` is refused on both, naming both nodes.
//!   The double-run VM is destroyed with `virsh destroy` at the end.
//!
//! Needs root and the lab's tools; without them a loud SKIPPED line, or a failure under
//! VMWARDEN_REQUIRE_REAL=1. Hold /work/lab.lock (or run alone): the lab's namespaces are fixed.

#[path = "support/lab.rs"]
mod lab_support;
mod support;

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lab_support::{lab_dir, text, Lab};
use support::{lab_ready, repo, skip_or_fail, wait_for};

const TEST: &str = "lab_api::operator_api_in_the_lab";
/// Migrated, and the target of the concurrent action.
const VM: &str = "vmw-a";
/// Started behind vmwarden's back on both nodes.
const TWICE: &str = "vmw-b";

fn lab() -> Lab {
    Lab {
        repo: repo(),
        env: vec![
            ("VMWARDEN_BIN", env!("CARGO_BIN_EXE_vmwarden").to_string()),
            ("VMWARDEN_LAB_VMS", format!("{VM} {TWICE}")),
            ("VMWARDEN_LAB_SHUTDOWN_TIMEOUT", "2".into()),
        ],
        bin: env!("CARGO_BIN_EXE_vmwarden").to_string(),
    }
}

/// The hook of n2 switched off (a script that allows everything) while it lives; the real one
/// back, and the double-run VM destroyed on both nodes (`virsh destroy`), when it drops — also
/// when the test fails. Then the lab goes down.
struct Cleanup {
    hook: PathBuf,
    saved: Option<String>,
}

impl Cleanup {
    fn hook_off(&mut self) {
        let real = std::fs::read_to_string(&self.hook).expect("n2's hook");
        std::fs::write(
            &self.hook,
            "#!/bin/sh\n# switched off by tests/lab_api.rs\nexit 0\n",
        )
        .unwrap();
        self.saved = Some(real);
    }

    fn hook_on(&mut self) {
        if let Some(real) = self.saved.take() {
            let _ = std::fs::write(&self.hook, real);
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.hook_on();
        let l = lab();
        for n in ["n2", "n1"] {
            if l.active(n, TWICE) {
                if let Err(e) = l.virsh(n, &["destroy", TWICE]) {
                    eprintln!("cleanup: virsh destroy {TWICE} on {n}: {e}");
                }
            }
        }
        let o = l.sh(&["down"]);
        if !o.status.success() {
            eprintln!("lab.sh down (cleanup): {}", text(&o));
        }
    }
}

/// A ctl child's stdout lines with the time each arrived.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<(Instant, String)> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Define `vm` on both nodes, its disk in the shared directory. `shareable`: the disk may be open
/// by two qemus — the lab's two "hosts" share one kernel, whose image file lock would stop the
/// second copy of a double start, where two real hosts on a shared LV have no such lock.
fn define(l: &Lab, vm: &str, uuid: &str, ty: &str, shareable: bool) {
    let disk = lab_support::guest_disk(vm);
    let mut text = lab_support::guest_xml(ty, vm, Some(uuid), &disk);
    if shareable {
        text = text.replace(
            "<target dev='vda' bus='virtio'/>",
            "<target dev='vda' bus='virtio'/>\n      <shareable/>",
        );
        assert!(text.contains("<shareable/>"), "{text}");
    }
    l.define_on(&["n1", "n2"], vm, &text);
}

#[test]
fn operator_api_in_the_lab() {
    if !lab_ready(TEST, &[]) {
        return;
    }
    let t0 = Instant::now();
    let l = lab();
    let dir = lab_dir();
    let mut cleanup = Cleanup {
        hook: dir.join("n2/etc/hooks/qemu"),
        saved: None,
    };
    let up = l.sh(&["up"]);
    if !up.status.success() {
        skip_or_fail(TEST, &format!("`lab.sh up` failed: {}", text(&up)));
        return;
    }
    let ty = l.domain_type();
    define(&l, VM, "7a1c2e4f-3b5d-4f60-9a8b-1c2d3e4f5a6b", ty, false);
    define(&l, TWICE, "8b2d3f50-4c6e-4071-8b9c-2d3e4f5a6b7c", ty, true);

    // Start on n1: the steps as they finish, then the result.
    let (code, out) = l.vmw("n1", "ctl", &["start", VM]);
    assert_eq!(code, 0, "start on n1: {out}");
    assert!(
        out.contains("done    start_preflight") && out.contains("start vmw-a on n1: completed"),
        "{out}"
    );

    // ctl migrate n1 -> n2, end to end.
    let (code, out) = l.vmw("n1", "ctl", &["migrate", VM, "--to", "n2"]);
    assert_eq!(code, 0, "migrate n1 -> n2: {out}");
    let steps = [
        "preflight",
        "source_to_shared",
        "target_acquire_shared",
        "libvirt_migrate",
        "source_release",
        "target_to_exclusive",
    ];
    let mut at = 0;
    for s in steps {
        let p = out[at..]
            .find(&format!("done    {s}"))
            .unwrap_or_else(|| panic!("step {s} not shown done, in order:\n{out}"));
        at += p;
    }
    assert!(out.contains("migrate vmw-a on n1: completed"), "{out}");
    assert!(l.active("n2", VM) && !l.active("n1", VM));

    // Back n2 -> n1 with n2's agent paused before the libvirt step: the steps done so far are
    // already printed (live) while it waits; a second action on the VM meanwhile is 409 naming
    // the running migration; the cluster view shows it.
    l.ok(&["agent-stop", "n2"]);
    l.ok(&[
        "agent-start",
        "n2",
        "VMWARDEN_TEST_PAUSE_BEFORE_STEP=migrate:libvirt_migrate",
    ]);
    let stderr = dir.join("shared/ctl-migrate.err");
    let mut child = l.ctl_child("n2", &["migrate", VM, "--to", "n1"], &stderr);
    let lines = lines_of(&mut child);
    let flag = dir.join("n2/state/paused-libvirt_migrate");
    assert!(
        wait_for(60, || flag.exists().then_some(())).is_some(),
        "the agent on n2 never reached the libvirt step"
    );
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen
        .iter()
        .any(|x| x.contains("done    target_acquire_shared"))
        && Instant::now() < deadline
    {
        if let Ok((_, line)) = lines.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    assert!(
        seen.iter().any(|x| x.starts_with("action vmw-a-migrate-"))
            && seen.iter().any(|x| x.contains("done    preflight"))
            && seen
                .iter()
                .any(|x| x.contains("done    target_acquire_shared"))
            && !seen
                .iter()
                .any(|x| x.contains("libvirt_migrate") && x.contains("done")),
        "ctl did not show the steps done before the pause while paused:\n{}",
        seen.join("\n")
    );
    let id = seen
        .iter()
        .find_map(|x| x.strip_prefix("action ").and_then(|r| r.strip_suffix(':')))
        .unwrap()
        .to_string();
    let (code, out) = l.vmw("n2", "ctl", &["stop", VM]);
    assert_eq!(code, 2, "a second action must be refused: {out}");
    assert!(
        out.contains("409") && out.contains(&format!("already has an action running: {id}")),
        "{out}"
    );
    assert!(out.contains("next: `vmwarden ctl vms --cluster`"), "{out}");
    let (code, out) = l.vmw("n1", "ctl", &["vms", "--cluster"]);
    assert_eq!(code, 0, "{out}");
    let row = |node: &str, vm: &str, o: &str| {
        o.lines()
            .find(|x| x.starts_with(&format!("{vm} ")) && x.contains(&format!(" {node} ")))
            .map(str::to_string)
    };
    assert!(
        row("n2", VM, &out).is_some_and(|r| r.contains("running") && r.contains(&id)),
        "{out}"
    );
    // (A live migration undefines the source's copy: vmw-a is defined on n2 only now; vmw-b,
    // defined on both and stopped, shows both nodes.)
    assert!(
        row("n1", TWICE, &out).is_some() && row("n2", TWICE, &out).is_some(),
        "{out}"
    );
    // Go on: the migration completes, and ctl prints the rest.
    std::fs::remove_file(&flag).unwrap();
    let st = child.wait().unwrap();
    while let Ok((_, line)) = lines.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    let all = seen.join("\n");
    assert!(
        st.success(),
        "{all}\n{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    assert!(
        all.contains("done    libvirt_migrate")
            && all.contains("done    target_to_exclusive")
            && all.contains("migrate vmw-a on n2: completed"),
        "{all}"
    );
    assert!(l.active("n1", VM) && !l.active("n2", VM));
    l.ok(&["agent-stop", "n2"]);
    l.ok(&["agent-start", "n2"]);

    // The cluster view from either node: both nodes, the VM on n1 only, nothing to flag.
    for n in ["n1", "n2"] {
        let (code, out) = l.vmw(n, "ctl", &["--json", "vms", "--cluster"]);
        assert_eq!(code, 0, "{n}: {out}");
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let reach: Vec<(&str, bool)> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["node"].as_str().unwrap(),
                    x["reachable"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(reach.len(), 2, "{out}");
        assert!(reach.iter().all(|(_, r)| *r) && reach[0].0 == n, "{out}");
        let vm = |name: &str| {
            v["vms"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("{name} missing: {out}"))
        };
        assert_eq!(vm(VM)["running_on"], serde_json::json!(["n1"]), "{out}");
        let b = vm(TWICE);
        let on: Vec<&str> = b["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["node"].as_str().unwrap())
            .collect();
        assert_eq!(on.len(), 2, "{out}");
        assert!(on.contains(&"n1") && on.contains(&"n2"), "{out}");
        assert_eq!(b["running_on"], serde_json::json!([]), "{out}");
    }

    // Behind vmwarden's back: the hook off on n2, a plain start there (no lease), then a plain
    // start on n1 (whose hook takes the free lease).
    cleanup.hook_off();
    l.virsh("n2", &["start", TWICE])
        .expect("plain start on n2, hook off");
    l.virsh("n1", &["start", TWICE]).expect("plain start on n1");
    assert!(l.active("n1", TWICE) && l.active("n2", TWICE));
    let violation = format!(
        "vmwarden_invariant_violation{{invariant=\"running_on_several_nodes\",domain=\"{TWICE}\",subject=\"n1,n2\"}} 1"
    );
    for n in ["n1", "n2"] {
        let (s, m) = l.agent_get(n, "/metrics");
        assert_eq!(s, 200, "{n}: {m}");
        assert!(
            m.contains(&violation),
            "{n}'s /metrics lacks {violation}:\n{m}"
        );
        let other = if n == "n1" { "n2" } else { "n1" };
        assert!(
            m.contains(&format!("vmwarden_peer_up{{peer=\"{other}\"}} 1")),
            "{n}: {m}"
        );
        let (code, out) = l.vmw(n, "check", &[]);
        assert_eq!(code, 1, "{n}: {out}");
        assert!(
            out.contains(&format!(
                "VIOLATED running_on_several_nodes domain={TWICE} subject=n1,n2"
            )),
            "{n}: {out}"
        );
        // Any start is refused, naming both nodes.
        let (code, out) = l.vmw(n, "ctl", &["start", TWICE]);
        assert_eq!(code, 1, "{n}: a start must be refused: {out}");
        assert!(
            out.contains(&format!(
                "refusing to start {TWICE}: {TWICE} runs on n1 and n2 at once"
            )) && out.contains("[running_on_several_nodes]"),
            "{n}: {out}"
        );
    }
    let (code, out) = l.vmw("n1", "ctl", &["vms", "--cluster"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "!! {TWICE} runs on n1 and n2 at once (running_on_several_nodes)"
        )),
        "{out}"
    );

    // Clean up the double run: destroy both copies by virsh, the hook back on.
    for n in ["n2", "n1"] {
        l.virsh(n, &["destroy", TWICE])
            .unwrap_or_else(|e| panic!("virsh destroy {TWICE} on {n}: {e}"));
    }
    cleanup.hook_on();
    assert!(!l.active("n1", TWICE) && !l.active("n2", TWICE));
    assert!(
        wait_for(10, || {
            let (_, m) = l.agent_get("n1", "/metrics");
            (!m.contains("running_on_several_nodes\",domain=")).then_some(())
        })
        .is_some(),
        "the violation did not end once one copy ran nowhere"
    );
    eprintln!("lab_api: {:.1} s", t0.elapsed().as_secs_f64());
}
