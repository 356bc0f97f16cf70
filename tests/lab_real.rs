//! The two-node lab (scripts/lab.sh, docs/lab.md) for real: `up`, both libvirtds answer over
//! qemu+tcp, both sanlocks share one lockspace (host_id 1 and 2, each sees both LIVE), a tiny
//! guest live-migrates from n1 to n2, and `down` leaves no namespace, process, mount or file.
//!
//! Needs root, iproute2, util-linux, sanlock, libvirt + qemu and a C compiler. Without them the
//! test prints a loud SKIPPED line and passes, unless VMWARDEN_REQUIRE_REAL=1 (CI): then it fails.
//! The lab's namespaces (vmw-n1, vmw-n2) are fixed names: this test replaces a lab that
//! `make lab` left up, and must not run concurrently with another lab user.

#[path = "support/lab.rs"]
mod lab_support;
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use lab_support::{lab_dir, running, text};
use support::{have, lab_unavailable, repo, skip_or_fail, wait_for};

const TEST: &str = "lab_real::two_nodes_live_migration";
const GUEST: &str = "vmwarden-lab-real";

/// `scripts/lab.sh ARGS...`, bounded so a hung daemon fails the test instead of hanging it.
fn lab(args: &[&str]) -> Output {
    lab_support::lab_sh(&repo(), 120, &[], args)
}

/// A command inside a node; its stdout, or an error with all it said.
fn on(node: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["exec", node, "timeout", "60"];
    all.extend_from_slice(args);
    let o = lab(&all);
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!("{node}: {args:?}: {}: {}", o.status, text(&o)))
    }
}

fn on_ok(node: &str, args: &[&str]) -> String {
    on(node, args).unwrap_or_else(|e| panic!("{e}"))
}

fn virsh(node: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["virsh", "-q", "-c", "qemu:///system"];
    all.extend_from_slice(args);
    on(node, &all)
}

/// Tears the lab down when the test ends, also on panic.
struct Down {
    done: bool,
}

impl Down {
    fn now(&mut self) -> Output {
        self.done = true;
        lab(&["down"])
    }
}

impl Drop for Down {
    fn drop(&mut self) {
        if !self.done {
            let o = lab(&["down"]);
            if !o.status.success() {
                eprintln!("lab.sh down (cleanup): {}", text(&o));
            }
        }
    }
}

/// pid files the lab writes: lab-host.sh holders, daemons, the anchor.
fn recorded_pids(dir: &Path) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for f in [
        "anchor.pid",
        "n1.hostpid",
        "n2.hostpid",
        "n1.sanlock.pid",
        "n2.sanlock.pid",
        "n1.libvirtd.pid",
        "n2.libvirtd.pid",
        "n1.virtlogd.pid",
        "n2.virtlogd.pid",
    ] {
        let pid = std::fs::read_to_string(dir.join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        out.push((f.to_string(), pid));
    }
    out
}

fn netns_list() -> String {
    let o = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn host_libvirtd_answers() -> bool {
    Command::new("timeout")
        .args(["10", "virsh", "-c", "qemu:///system", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn two_nodes_live_migration() {
    if let Some(why) = lab_unavailable() {
        skip_or_fail(TEST, &why);
        return;
    }
    for p in ["ip", "libvirtd", "virtlogd", "virsh", "qemu-system-x86_64"] {
        if !have(p) {
            skip_or_fail(TEST, &format!("`{p}` is not installed (scripts/setup.sh)"));
            return;
        }
    }
    let host_libvirtd_before = host_libvirtd_answers();
    let dir = lab_dir();
    let t0 = Instant::now();
    let mut guard = Down { done: false };
    let up = lab(&["up"]);
    if !up.status.success() {
        skip_or_fail(TEST, &format!("`lab.sh up` failed: {}", text(&up)));
        return;
    }
    let t_up = t0.elapsed();
    let pids = recorded_pids(&dir);
    for (f, pid) in &pids {
        assert!(running(*pid), "{f}: pid {pid} is not running after up");
    }

    // Both libvirtds answer, each from the other node, over the lab network only.
    let v = on_ok(
        "n1",
        &["virsh", "-c", "qemu+tcp://10.77.0.2/system", "version"],
    );
    assert!(v.contains("Running hypervisor"), "n2 from n1: {v}");
    let v = on_ok(
        "n2",
        &["virsh", "-c", "qemu+tcp://10.77.0.1/system", "version"],
    );
    assert!(v.contains("Running hypervisor"), "n1 from n2: {v}");

    // One lockspace, host_id 1 on n1 and 2 on n2, and each sees both hosts LIVE.
    let leases = dir.join("shared/leases");
    for (node, id) in [("n1", 1), ("n2", 2)] {
        let st = on_ok(node, &["sanlock", "client", "status"]);
        let want = format!("s vmwarden:{id}:{}:0", leases.display());
        assert!(
            st.contains(&want),
            "{node}: sanlock status lacks {want:?}:\n{st}"
        );
        let both_live = wait_for(20, || {
            let g = on(node, &["sanlock", "client", "gets", "-h", "1"]).ok()?;
            let live = |h: &str| {
                g.lines()
                    .any(|l| l.starts_with(&format!("h {h} ")) && l.trim_end().ends_with("LIVE"))
            };
            (live("1") && live("2")).then_some(g)
        });
        assert!(
            both_live.is_some(),
            "{node}: `gets -h 1` does not show hosts 1 and 2 LIVE: {:?}",
            on(node, &["sanlock", "client", "gets", "-h", "1"])
        );
    }

    // A tiny guest on n1, its disk in the shared directory.
    let disk = dir.join("shared").join(format!("{GUEST}.raw"));
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let kvm = Path::new("/dev/kvm").exists()
        && virsh("n1", &["domcapabilities", "--virttype", "kvm"]).is_ok();
    let ty = if kvm { "kvm" } else { "qemu" };
    let xml = dir.join("shared").join(format!("{GUEST}.xml"));
    std::fs::write(&xml, lab_support::guest_xml(ty, GUEST, None, &disk)).unwrap();
    virsh("n1", &["define", xml.to_str().unwrap()]).unwrap();
    virsh("n1", &["start", GUEST]).unwrap();
    assert_eq!(
        virsh("n1", &["domstate", "--reason", GUEST])
            .unwrap()
            .trim(),
        "running (booted)"
    );

    // Plain live migration, run inside n1. --unsafe: libvirt 9.0 treats a file on a local
    // filesystem (the shared directory is one) as unshared storage even with cache='none'.
    let t_mig = Instant::now();
    on_ok(
        "n1",
        &[
            "virsh",
            "-c",
            "qemu:///system",
            "migrate",
            "--live",
            "--unsafe",
            "--verbose",
            GUEST,
            "qemu+tcp://10.77.0.2/system",
            "tcp://10.77.0.2",
        ],
    );
    let t_mig = t_mig.elapsed();
    assert_eq!(
        virsh("n2", &["domstate", "--reason", GUEST])
            .unwrap()
            .trim(),
        "running (migrated)",
        "guest on n2 after migration"
    );
    let n1_running = virsh("n1", &["list", "--name"]).unwrap();
    assert!(
        !n1_running.lines().any(|l| l.trim() == GUEST),
        "guest still running on n1: {n1_running}"
    );
    assert_eq!(
        virsh("n1", &["domstate", "--reason", GUEST])
            .unwrap()
            .trim(),
        "shut off (migrated)",
        "the persistent definition left on n1"
    );

    // Down: nothing of the lab is left.
    let t_down = Instant::now();
    let down = guard.now();
    assert!(down.status.success(), "lab.sh down: {}", text(&down));
    let t_down = t_down.elapsed();
    let ns = netns_list();
    assert!(
        !ns.lines()
            .any(|l| l.starts_with("vmw-n1") || l.starts_with("vmw-n2")),
        "lab namespaces left: {ns}"
    );
    for (f, pid) in &pids {
        assert!(!running(*pid), "{f}: pid {pid} still runs after down");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir_s = dir.to_string_lossy();
    assert!(
        !mounts
            .lines()
            .any(|l| l.contains(dir_s.as_ref()) || l.contains("/run/netns/vmw-")),
        "lab mounts left:\n{mounts}"
    );
    assert!(!dir.exists(), "{} left after down", dir.display());
    if host_libvirtd_before {
        assert!(
            host_libvirtd_answers(),
            "the machine's own libvirtd stopped answering"
        );
    }
    eprintln!(
        "lab: up {t_up:.1?}, migration ({ty}) {t_mig:.1?}, down {t_down:.1?}, total {:.1?}",
        t0.elapsed()
    );
}
