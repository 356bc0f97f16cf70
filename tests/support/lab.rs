//! Shared by the namespace-lab tests (lab_actions.rs, lab_real.rs), included with `#[path]`:
//! running `scripts/lab.sh`, the lab's guest, process checks.

#[path = "domain-xml.rs"]
mod domain_xml;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn lab_dir() -> PathBuf {
    std::env::var_os("VMWARDEN_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/vmwarden-lab"))
}

/// `scripts/lab.sh ARGS...` with `env`, bounded by `timeout_s` so a hung daemon fails the test
/// instead of hanging it.
pub fn lab_sh(repo: &Path, timeout_s: u32, env: &[(&str, String)], args: &[&str]) -> Output {
    let mut c = Command::new("timeout");
    c.arg(timeout_s.to_string())
        .arg("bash")
        .arg(repo.join("scripts/lab.sh"))
        .args(args)
        .env("VMWARDEN_LAB_DIR", lab_dir());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run scripts/lab.sh")
}

/// stdout then stderr, for messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether a process runs (a zombie waiting for its reaper does not count).
pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !matches!(
            s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()),
            Some('Z') | Some('X') | None
        )
    })
}

/// The lab's OS-less guest: raw disk on the shared directory with `cache='none'` (what a live
/// migration between hosts needs), a serial console, nothing else.
pub fn guest_xml(ty: &str, name: &str, uuid: Option<&str>, disk: &Path) -> String {
    domain_xml::os_less_domain(ty, name, uuid, disk, Some("none"), false)
}

/// The same guest with an ethernet interface (a tap libvirt creates), for the network metrics.
#[allow(dead_code)] // tests/lab_dashboards.rs only
pub fn guest_xml_with_nic(ty: &str, name: &str, uuid: Option<&str>, disk: &Path) -> String {
    domain_xml::os_less_domain(ty, name, uuid, disk, Some("none"), true)
}
