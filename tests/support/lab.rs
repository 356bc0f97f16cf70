//! Shared by the namespace-lab tests (lab_*.rs), included with `#[path]`: running
//! `scripts/lab.sh`, commands inside a node (`Lab`), tearing the lab down (`Down`), the lab's
//! guest, process checks.
#![allow(dead_code)] // each lab test uses a different subset

#[path = "domain-xml.rs"]
mod domain_xml;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use vmwarden::lock::sanlock::parse_status_resource;
use vmwarden::lock::Held;

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
#[derive(Clone)]
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

    /// `vmwarden ctl ARGS...` on `node`: (exit code, stdout then stderr).
    pub fn ctl(&self, node: &str, args: &[&str]) -> (i32, String) {
        self.vmw(node, "ctl", args)
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

    /// How `node`'s sanlock holds `vm`'s lease in the lab's `vmwarden` lockspace.
    pub fn lease(&self, node: &str, vm: &str) -> Held {
        let out = self.ok(&["exec", node, "sanlock", "client", "status"]);
        parse_status_resource(&out, "vmwarden", vm).map_or(Held::None, |(m, _)| m)
    }

    /// qemu's pid of `vm` on `node` (libvirt's pid file), checked to be a qemu process.
    pub fn qemu_pid(&self, node: &str, vm: &str) -> Option<String> {
        let pid = self.sh(&["exec", node, "cat", &format!("/run/libvirt/qemu/{vm}.pid")]);
        let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let comm = self.sh(&["exec", node, "cat", &format!("/proc/{pid}/comm")]);
        String::from_utf8_lossy(&comm.stdout)
            .starts_with("qemu-system")
            .then_some(pid)
    }

    /// The domain type the lab's guests use: `kvm` where n1's libvirt offers KVM, else `qemu`
    /// (TCG: slower, the same to vmwarden).
    pub fn domain_type(&self) -> &'static str {
        let kvm = Path::new("/dev/kvm").exists()
            && self
                .virsh("n1", &["domcapabilities", "--virttype", "kvm"])
                .is_ok();
        if kvm {
            "kvm"
        } else {
            "qemu"
        }
    }

    /// `xml` as `vm`'s definition on each of `nodes` (the same UUID everywhere, as a cluster
    /// keeps it), written to the shared directory first: its path.
    pub fn define_on(&self, nodes: &[&str], vm: &str, xml: &str) -> PathBuf {
        let path = lab_dir().join("shared").join(format!("{vm}.xml"));
        std::fs::write(&path, xml).unwrap();
        for n in nodes {
            self.virsh(n, &["define", &path.display().to_string()])
                .unwrap_or_else(|e| panic!("define {vm} on {n}: {e}"));
        }
        path
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

/// `lab.sh down` when dropped: the lab is torn down however the test ends.
pub struct Down(pub Lab);

impl Drop for Down {
    fn drop(&mut self) {
        let o = self.0.sh(&["down"]);
        if !o.status.success() {
            eprintln!("lab.sh down (cleanup): {}", text(&o));
        }
    }
}

/// A 16 MiB raw disk for `vm` in the shared directory (what the lab's guests boot from: nothing).
pub fn guest_disk(vm: &str) -> PathBuf {
    let disk = lab_dir().join("shared").join(format!("{vm}.raw"));
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    disk
}

/// A 16 MiB qcow2 image in the shared directory with the byte 0xab over 64–128 KiB, for the
/// lifecycle's create: the copy into the new disk must carry that pattern.
pub fn base_qcow2() -> PathBuf {
    let img = lab_dir().join("shared").join("base.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("16M")
        .status()
        .unwrap();
    assert!(st.success(), "qemu-img create {}", img.display());
    let o = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0xab 65536 65536"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    img
}

/// The same guest with an ethernet interface (a tap libvirt creates), for the network metrics.
pub fn guest_xml_with_nic(ty: &str, name: &str, uuid: Option<&str>, disk: &Path) -> String {
    domain_xml::os_less_domain(ty, name, uuid, disk, Some("none"), true)
}
