//! Shared by the namespace-lab tests (lab_actions.rs, lab_real.rs, lab_api.rs), included with
//! `#[path]`: running `scripts/lab.sh`, commands inside a node (`Lab`), the lab's guest, process
//! checks.
#![allow(dead_code)] // each lab test uses a different subset

#[path = "domain-xml.rs"]
mod domain_xml;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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

/// The lab as one test runs it: `scripts/lab.sh` with that test's environment (`VMWARDEN_BIN`,
/// VMs, extra config), and commands inside a node through `lab.sh exec` — never from the
/// machine's own network namespace.
pub struct Lab {
    pub repo: PathBuf,
    pub env: Vec<(&'static str, String)>,
    /// The vmwarden binary the nodes run.
    pub bin: String,
}

impl Lab {
    /// `lab.sh ARGS...`, bounded by 300 s.
    pub fn sh(&self, args: &[&str]) -> Output {
        lab_sh(&self.repo, 300, &self.env, args)
    }

    /// `lab.sh ARGS...` that must succeed; what it printed.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.sh(args);
        assert!(o.status.success(), "lab.sh {args:?}: {}", text(&o));
        text(&o)
    }

    /// `vmwarden SUB --config NODE-CONFIG ARGS...` inside `node`.
    pub fn vmw_output(&self, node: &str, sub: &str, args: &[&str]) -> Output {
        let cfg = lab_dir().join(node).join("vmwarden.toml");
        let cfg = cfg.display().to_string();
        let mut all = vec!["exec", node, self.bin.as_str(), sub, "--config", &cfg];
        all.extend_from_slice(args);
        self.sh(&all)
    }

    /// Like `vmw_output`: (exit code, stdout then stderr).
    pub fn vmw(&self, node: &str, sub: &str, args: &[&str]) -> (i32, String) {
        let o = self.vmw_output(node, sub, args);
        (o.status.code().unwrap_or(-1), text(&o))
    }

    /// `vmwarden ctl ARGS...` on `node` as a child whose stdout is piped (to read its lines as
    /// they come); stderr goes to `stderr`.
    pub fn ctl_child(&self, node: &str, args: &[&str], stderr: &Path) -> std::process::Child {
        let cfg = lab_dir().join(node).join("vmwarden.toml");
        let mut c = Command::new("timeout");
        c.arg("300")
            .arg("bash")
            .arg(self.repo.join("scripts/lab.sh"))
            .args(["exec", node, self.bin.as_str(), "ctl", "--config"])
            .arg(&cfg)
            .args(args)
            .env("VMWARDEN_LAB_DIR", lab_dir())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::create(stderr)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.spawn().expect("spawn lab.sh exec ... ctl")
    }

    /// `virsh -q -c qemu:///system ARGS...` inside `node` (60 s at most): stdout, or all it said.
    pub fn virsh(&self, node: &str, args: &[&str]) -> Result<String, String> {
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
        let o = self.sh(&all);
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(text(&o))
        }
    }

    /// Whether a qemu process exists for `vm` on `node` (libvirt's active states).
    pub fn active(&self, node: &str, vm: &str) -> bool {
        match self.virsh(node, &["domstate", vm]) {
            Ok(s) => !matches!(s.trim(), "shut off" | "crashed"),
            Err(_) => false,
        }
    }

    /// GET `path` of `node`'s agent (port 10177 on the node's own address), from inside the
    /// node, with Debian's python: (HTTP status, body).
    pub fn agent_get(&self, node: &str, path: &str) -> (u16, String) {
        let ip = if node == "n1" {
            "10.77.0.1"
        } else {
            "10.77.0.2"
        };
        let script = "import sys, urllib.request, urllib.error\n\
            try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=30); print(r.status); print(r.read().decode())\n\
            except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n";
        let url = format!("http://{ip}:10177{path}");
        let out = self.ok(&["exec", node, "/usr/bin/python3", "-c", script, &url]);
        let (code, body) = out.split_once('\n').unwrap_or((&out, ""));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

/// The same guest with an ethernet interface (a tap libvirt creates), for the network metrics.
pub fn guest_xml_with_nic(ty: &str, name: &str, uuid: Option<&str>, disk: &Path) -> String {
    domain_xml::os_less_domain(ty, name, uuid, disk, Some("none"), true)
}
