//! The migration preflight's compatibility check in the two-node lab (scripts/lab.sh with
//! VMWARDEN_BIN), on real libvirtd, qemu (KVM) and sanlock, with a host-model guest:
//!
//! - `--dry-run` shows the check in the preflight step;
//! - n1 → n2 and back with both agents reporting their own (identical) hypervisors: the check
//!   passes and says what it compared;
//! - n2's agent restarted with `VMWARDEN_TEST_FAKE_CAPABILITIES_DIR` reporting an Intel
//!   Skylake host with QEMU 4.2 (libvirt's test data, tests/fixtures/compat/): the migration is
//!   refused in preflight with the reason, and nothing changed — the VM still runs on n1 with its
//!   lease exclusive there and none on n2, no journal left open, nothing of it on n2.
//!
//! Needs root, KVM, iproute2, util-linux, sanlock, libvirt + qemu. Without them: a loud SKIPPED
//! line, or a failure under VMWARDEN_REQUIRE_REAL=1. Uses the lab's fixed namespaces: run it
//! under the lab lock (`flock /work/lab.lock cargo test --test lab_compat`), never alongside
//! another lab user.

#[path = "support/lab.rs"]
#[allow(dead_code)]
mod lab_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use lab_support::{lab_dir, text};
use support::{have, lab_unavailable, repo, skip_or_fail};
use vmwarden::lock::sanlock::parse_status_resource;
use vmwarden::lock::Held;

const TEST: &str = "lab_compat::compatibility_check_in_the_lab";
const VM: &str = "vmw-c";
const UUID: &str = "7a1c2e3d-4b5f-4a6b-9c7d-8e9f0a1b2c3d";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmwarden")
}

fn lab(args: &[&str]) -> Output {
    let env = [
        ("VMWARDEN_BIN", bin().to_string()),
        ("VMWARDEN_LAB_VMS", VM.to_string()),
        ("VMWARDEN_LAB_SHUTDOWN_TIMEOUT", "3".to_string()),
    ];
    lab_support::lab_sh(&repo(), 300, &env, args)
}

fn lab_ok(args: &[&str]) -> String {
    let o = lab(args);
    assert!(o.status.success(), "lab.sh {args:?}: {}", text(&o));
    text(&o)
}

/// `vmwarden ctl --config NODE-CONFIG ARGS` inside `node`: (exit code, stdout).
fn ctl(node: &str, args: &[&str]) -> (i32, String) {
    let cfg = lab_dir().join(node).join("vmwarden.toml");
    let cfg = cfg.to_str().unwrap();
    let mut all = vec!["exec", node, bin(), "ctl", "--config", cfg];
    all.extend_from_slice(args);
    let o = lab(&all);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn ctl_json(node: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out) = ctl(node, &all);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"));
    (code, v)
}

fn virsh(node: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec![
        "exec",
        node,
        "timeout",
        "60",
        "virsh",
        "-q",
        "-c",
        "qemu:///system",
    ];
    all.extend_from_slice(args);
    let o = lab(&all);
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(text(&o))
    }
}

fn active(node: &str) -> bool {
    match virsh(node, &["domstate", VM]) {
        Ok(s) => !matches!(s.trim(), "shut off" | "crashed"),
        Err(_) => false,
    }
}

fn lease(node: &str) -> Held {
    let out = lab_ok(&["exec", node, "sanlock", "client", "status"]);
    parse_status_resource(&out, "vmwarden", VM).map_or(Held::None, |(m, _)| m)
}

fn unfinished(node: &str) -> Vec<PathBuf> {
    std::fs::read_dir(lab_dir().join(node).join("state/journal"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs on `at` only, lease exclusive there and none on the other node, no journal open.
fn assert_settled_on(at: &str, context: &str) {
    let other = if at == "n1" { "n2" } else { "n1" };
    assert!(active(at), "{context}: {VM} does not run on {at}");
    assert!(!active(other), "{context}: {VM} is active on {other}");
    assert_eq!(lease(at), Held::Exclusive, "{context}: lease on {at}");
    assert_eq!(lease(other), Held::None, "{context}: lease on {other}");
    for n in ["n1", "n2"] {
        assert!(
            unfinished(n).is_empty(),
            "{context}: journals left open on {n}: {:?}",
            unfinished(n)
        );
    }
}

fn notes(rep: &serde_json::Value) -> Vec<String> {
    rep["notes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let o = lab(&["down"]);
        if !o.status.success() {
            eprintln!("lab.sh down (cleanup): {}", text(&o));
        }
    }
}

#[test]
fn compatibility_check_in_the_lab() {
    if let Some(why) = lab_unavailable() {
        skip_or_fail(TEST, &why);
        return;
    }
    for p in [
        "ip",
        "libvirtd",
        "virtlogd",
        "virsh",
        "qemu-system-x86_64",
        "sanlock",
    ] {
        if !have(p) {
            skip_or_fail(TEST, &format!("`{p}` is not installed (scripts/setup.sh)"));
            return;
        }
    }
    if !Path::new("/dev/kvm").exists() {
        skip_or_fail(TEST, "no /dev/kvm: a host-model guest needs KVM");
        return;
    }
    let _down = Down;
    let up = lab(&["up"]);
    if !up.status.success() {
        skip_or_fail(TEST, &format!("`lab.sh up` failed: {}", text(&up)));
        return;
    }
    let dir = lab_dir();
    let disk = dir.join("shared").join(format!("{VM}.raw"));
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let xml = lab_support::guest_xml("kvm", VM, Some(UUID), &disk).replacen(
        "<vcpu>1</vcpu>",
        "<vcpu>1</vcpu>\n  <cpu mode='host-model'/>",
        1,
    );
    assert!(xml.contains("host-model"));
    let xml_path = dir.join("shared").join(format!("{VM}.xml"));
    std::fs::write(&xml_path, xml).unwrap();
    for n in ["n1", "n2"] {
        virsh(n, &["define", xml_path.to_str().unwrap()]).unwrap();
    }
    let (code, rep) = ctl_json("n1", &["start", VM]);
    assert_eq!(code, 0, "start on n1: {rep}");
    assert_settled_on("n1", "after start on n1");

    // The dry run shows the check in the preflight step.
    let (code, out) = ctl("n1", &["migrate", VM, "--to", "n2", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("compatibility with node n2") && out.contains("capabilities"),
        "dry run lacks the compatibility check:\n{out}"
    );

    // Like hypervisors (both nodes are this machine): passes, saying what it compared.
    for (from, to) in [("n1", "n2"), ("n2", "n1")] {
        let (code, rep) = ctl_json(from, &["migrate", VM, "--to", to]);
        assert_eq!(code, 0, "migrate {from} -> {to}: {rep}");
        let n = notes(&rep);
        assert!(
            n.iter().any(|x| x.contains("compatibility: CPU")
                && x.contains(&format!("{to} has the same CPU as {from}"))),
            "{from} -> {to}: {n:?}"
        );
        assert!(
            n.iter().any(|x| x.contains("compatibility: machine type")),
            "{n:?}"
        );
        assert!(!n.iter().any(|x| x.contains("cannot tell")), "{n:?}");
        assert_settled_on(to, &format!("after migrating {from} -> {to}"));
    }

    // n2 reports another host's captured capabilities: refused in preflight, nothing changes.
    let foreign = dir.join("shared").join("foreign-caps");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::copy(
        repo().join("tests/fixtures/compat/libvirt-qemu_4.2.0-q35.x86_64.domcaps.xml"),
        foreign.join("domcapabilities.xml"),
    )
    .unwrap();
    lab_ok(&["agent-stop", "n2"]);
    let switch = format!(
        "VMWARDEN_TEST_FAKE_CAPABILITIES_DIR={}",
        foreign.to_str().unwrap()
    );
    lab_ok(&["agent-start", "n2", &switch]);
    let (code, rep) = ctl_json("n1", &["migrate", VM, "--to", "n2"]);
    assert_eq!(code, 1, "must be refused: {rep}");
    assert_eq!(rep["result"], "refused", "{rep}");
    let steps = rep["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "only the preflight ran: {rep}");
    assert_eq!(steps[0]["step"], "preflight");
    let err = steps[0]["error"].as_str().unwrap_or("");
    assert!(
        err.contains("vmw-c cannot run on n2")
            && err.contains(
                "is an AMD model and n2's CPU is an Intel one (Intel Skylake-Client-IBRS)"
            ),
        "{err}"
    );
    assert!(
        notes(&rep)
            .iter()
            .any(|n| n.contains("VMWARDEN_TEST_FAKE_CAPABILITIES_DIR")),
        "{rep}"
    );
    assert!(rep["rollback"].as_array().is_none_or_empty(), "{rep}");
    assert_settled_on("n1", "after the refused migration");
    assert_eq!(
        virsh("n2", &["domstate", VM]).map(|s| s.trim().to_string()),
        Ok("shut off".to_string()),
        "n2 keeps only the stopped definition"
    );
    lab_ok(&["agent-stop", "n2"]);
    lab_ok(&["agent-start", "n2"]);
}

trait EmptyOrNone {
    fn is_none_or_empty(&self) -> bool;
}

impl EmptyOrNone for Option<&Vec<serde_json::Value>> {
    fn is_none_or_empty(&self) -> bool {
        self.map_or(true, |v| v.is_empty())
    }
}
