//! Real-libvirt test support: the skip/fail policy, tiny OS-less qemu guests that clean up after
//! themselves, and virsh. Included by the libvirt_*.rs test binaries with `#[path]`.
#![allow(dead_code)]

#[path = "domain-xml.rs"]
mod domain_xml;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const URI: &str = "qemu:///system";

/// Run virsh against the system URI; bounded by `timeout` so a hung libvirtd fails the test
/// instead of hanging it.
pub fn virsh(args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["30", "virsh", "-q", "-c", URI])
        .args(args)
        .output()
        .expect("run virsh")
}

fn virsh_ok(args: &[&str]) -> String {
    let o = virsh(args);
    assert!(
        o.status.success(),
        "virsh {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The policy for tests that need the real libvirtd: true if it answers. If it does not, fail
/// when VMWARDEN_REQUIRE_REAL=1 (CI), else say loudly that the test is skipped and return false.
pub fn libvirtd_available(test: &str) -> bool {
    let why = match Command::new("timeout")
        .args(["10", "virsh", "-c", URI, "version"])
        .output()
    {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!(
            "libvirtd does not answer on {URI}: {}",
            String::from_utf8_lossy(&o.stderr)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Err(e) => format!("cannot run virsh: {e}"),
    };
    skip_or_fail(
        test,
        &format!("{why} (run `sudo bash scripts/test-services.sh` first)"),
    )
}

/// Fail under VMWARDEN_REQUIRE_REAL=1, else print SKIPPED and return false.
pub fn skip_or_fail(test: &str, why: &str) -> bool {
    if std::env::var("VMWARDEN_REQUIRE_REAL").as_deref() == Ok("1") {
        panic!("{test}: VMWARDEN_REQUIRE_REAL=1 but {why}");
    }
    // Straight to the process's stderr: libtest captures eprintln! of passing tests.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("\n*** SKIPPED: {test} because {why} ***\n\n").as_bytes(),
    );
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `kvm` where /dev/kvm exists and libvirt accepts it, else `qemu` (TCG, slower).
pub fn domain_type() -> &'static str {
    let kvm = Path::new("/dev/kvm").exists()
        && virsh(&["domcapabilities", "--virttype", "kvm"])
            .status
            .success();
    if kvm {
        "kvm"
    } else {
        "qemu"
    }
}

/// A tiny OS-less guest: 64 MiB, a 16 MiB raw disk in its own temp dir, one tap interface, a
/// serial pty, no graphics. Destroyed, undefined and its files removed on drop.
pub struct Guest {
    pub name: String,
    pub disk: PathBuf,
    _dir: tempfile::TempDir,
}

impl Guest {
    /// Define (persistent) a guest named `vmwarden-test-<pid>-<tag>`.
    pub fn define(tag: &str) -> Guest {
        sweep_stale();
        let name = format!("vmwarden-test-{}-{tag}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("vmwarden-libvirt-")
            .tempdir()
            .unwrap();
        let disk = dir.path().join(format!("{tag}.raw"));
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let xml_path = dir.path().join("domain.xml");
        std::fs::write(&xml_path, guest_xml(&name, &disk)).unwrap();
        // The guard exists before define, so a failure below still cleans up.
        let g = Guest {
            name,
            disk,
            _dir: dir,
        };
        virsh_ok(&["define", xml_path.to_str().unwrap()]);
        g
    }

    pub fn start(&self) {
        virsh_ok(&["start", &self.name]);
    }

    /// The qemu process id, from libvirt's pid file.
    pub fn qemu_pid(&self) -> i32 {
        let p = format!("/run/libvirt/qemu/{}.pid", self.name);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// kill -9 the guest's qemu: libvirt then reports `shut off (crashed)`.
    pub fn kill_qemu(&self) {
        let pid = self.qemu_pid();
        let st = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -9 {pid}");
    }

    /// `virsh domstate --reason`, e.g. "running (booted)".
    pub fn state(&self) -> String {
        virsh_ok(&["domstate", "--reason", &self.name])
            .trim()
            .to_string()
    }

    /// Wait until libvirt reports `want` (it notices a dead qemu asynchronously).
    pub fn wait_state(&self, want: &str, timeout: Duration) {
        let t0 = Instant::now();
        loop {
            let s = self.state();
            if s == want {
                return;
            }
            assert!(
                t0.elapsed() < timeout,
                "{}: state {s:?}, wanted {want:?} within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        let _ = virsh(&["undefine", &self.name]);
    }
}

pub fn guest_xml(name: &str, disk: &Path) -> String {
    domain_xml::os_less_domain(domain_type(), name, None, disk, None, true)
}

/// Remove guests left by test processes that died before their Drop ran (kill -9, timeout).
fn sweep_stale() {
    let out = virsh(&["list", "--all", "--name"]);
    for name in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(rest) = name.trim().strip_prefix("vmwarden-test-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = virsh(&["destroy", name.trim()]);
            let _ = virsh(&["undefine", name.trim()]);
        }
    }
}

/// Value of the sample `name{labels...}` whose labels include all of `want` (exact text match
/// of `k="v"` pairs), from an OpenMetrics text.
pub fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            want.iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
