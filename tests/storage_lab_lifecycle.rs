//! create, grow, disks activate/deactivate and remove on real lvmlockd + sanlock, in the storage
//! lab (scripts/storage-lab.sh, docs/storage-lab.md: two Debian guests sa/sb under qemu TCG, the
//! shared VG vg1 on a shared LUN, vmwarden agents in both, nested libvirt):
//!
//! - VG full: a create bigger than vg1's free space is refused with how much is free; no LV, no
//!   definition left;
//! - create vmn (32 MiB) on sa: the LV exists and is active nowhere (lvcreate -an: no lock left);
//!   create of the same name on sb refused, naming sa;
//! - start on sa, grow +32M while it runs: `virsh domblkinfo` shows 64 MiB at once; remove refused
//!   while it runs;
//! - stop; the definition copied to sb; disks activate on sb: /dev/vg1/vmn there, lock exclusive
//!   on sb, `ctl start` on sa refused saying the disks are activated for maintenance on sb;
//!   deactivate;
//! - remove on sa: undefined on both, the LV gone.
//!
//! Hold /work/storage-lab.lock. Slow (TCG): ≈ 5–16 min, so a long run outside `make test`:
//! `make storage-lab-lifecycle` (VMWARDEN_LONG_TESTS=1).

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Instant;

use support::{have, repo, skip_or_fail};

const TEST: &str = "storage_lab_lifecycle::lifecycle_on_real_lvmlockd";
const VMW: &str = "/opt/vmwarden/vmwarden";
const VM: &str = "vmn";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmwarden")
}

struct Lab {
    run: PathBuf,
}

impl Lab {
    fn script(&self, args: &[&str], timeout_s: u64) -> Output {
        Command::new("timeout")
            .arg("-k")
            .arg("10")
            .arg(timeout_s.to_string())
            .arg("bash")
            .arg(repo().join("scripts/storage-lab.sh"))
            .args(args)
            .env("STORAGE_LAB_RUN", &self.run)
            .env("STORAGE_LAB_PORT", "15579")
            .env("STORAGE_LAB_DRBD", "connected")
            .env("VMWARDEN_BIN", bin())
            .output()
            .expect("run scripts/storage-lab.sh")
    }

    fn exec(&self, guest: &str, cmd: &str) -> (i32, String) {
        let out = Command::new("timeout")
            .arg("-k")
            .arg("10")
            .arg("320")
            .arg("bash")
            .arg(repo().join("scripts/storage-lab.sh"))
            .args(["exec", guest, cmd])
            .env("STORAGE_LAB_RUN", &self.run)
            .env("STORAGE_LAB_TIMEOUT", "300")
            .output()
            .expect("run storage-lab.sh exec");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    fn ok(&self, guest: &str, cmd: &str) -> String {
        let (rc, out) = self.exec(guest, cmd);
        assert_eq!(rc, 0, "[{guest}] `{cmd}` exited {rc}:\n{out}");
        out
    }

    fn ctl(&self, guest: &str, args: &str) -> (i32, String) {
        let t = Instant::now();
        let r = self.exec(
            guest,
            &format!("{VMW} ctl --config /etc/vmwarden/vmwarden.toml {args} 2>&1"),
        );
        eprintln!(
            "[{guest}] vmwarden ctl {args}: exit {} in {:.1} s:\n{}",
            r.0,
            t.elapsed().as_secs_f64(),
            r.1.trim_end()
        );
        r
    }

    fn domstate(&self, guest: &str) -> String {
        let (_, out) = self.exec(
            guest,
            &format!("virsh -c qemu:///system domstate {VM} 2>&1"),
        );
        let s = out.trim();
        if s.contains("failed to get domain") {
            "undefined".into()
        } else {
            s.to_string()
        }
    }

    /// `lvs` of vg1/vmn in `guest`: None when the LV does not exist; else its attr.
    fn lv_attr(&self, guest: &str) -> Option<String> {
        let (rc, out) = self.exec(
            guest,
            &format!("lvs --noheadings -o lv_attr vg1/{VM} 2>/dev/null"),
        );
        (rc == 0 && !out.trim().is_empty()).then(|| out.trim().to_string())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.script(&["down"], 120);
        eprintln!(
            "storage lab down: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

const XML: &str = r#"<domain type="qemu">
  <name>vmn</name>
  <memory unit="MiB">32</memory>
  <vcpu>1</vcpu>
  <os><type arch="x86_64">hvm</type></os>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type="file" device="disk">
      <source file="/nowhere.raw"/>
      <target dev="vda" bus="virtio"/>
    </disk>
  </devices>
</domain>"#;

#[test]
fn lifecycle_on_real_lvmlockd() {
    // A long run (TCG guests starting nested guests: 5–16 min on this 2-vCPU machine), kept out
    // of `make test`'s budget like the 200-trial fault campaign: `make storage-lab-lifecycle`.
    if std::env::var("VMWARDEN_LONG_TESTS").as_deref() != Ok("1") {
        eprintln!("{TEST}: a long run, not part of `make test`: `make storage-lab-lifecycle` runs it (VMWARDEN_LONG_TESTS=1)");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip_or_fail(TEST, "not root");
        return;
    }
    for p in ["qemu-system-x86_64", "qemu-img", "python3", "mkfs.ext4"] {
        if !have(p) {
            skip_or_fail(TEST, &format!("{p} is missing (scripts/setup.sh)"));
            return;
        }
    }
    let cache = std::env::var_os("VMWARDEN_STORAGE_LAB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/vmwarden/storage-lab")
        });
    let lab = Lab {
        run: cache.join("run-lifecycle"),
    };
    let out = lab.script(&["build"], 1800);
    if !out.status.success() {
        skip_or_fail(
            TEST,
            &format!(
                "the storage-lab guest image cannot be built: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
        return;
    }
    let t = Instant::now();
    let out = lab.script(&["up"], 900);
    assert!(
        out.status.success(),
        "storage-lab.sh up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("storage lab up in {:.0} s", t.elapsed().as_secs_f64());
    let out = lab.script(&["agents"], 180);
    assert!(
        out.status.success(),
        "agents: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for g in ["sa", "sb"] {
        lab.ok(g, &format!("cat >/tmp/{VM}.xml <<'EOF'\n{XML}\nEOF"));
    }

    // VG full: refused with how much is free, nothing left behind.
    let (rc, out) = lab.ctl(
        "sa",
        &format!("create {VM} --size 4G --vg vg1 --xml /tmp/{VM}.xml"),
    );
    assert_eq!(rc, 1, "{out}");
    assert!(
        out.contains("VG vg1 is full: 4 GiB asked, only") && out.contains("free"),
        "{out}"
    );
    assert_eq!(lab.lv_attr("sa"), None, "no LV left");
    assert_eq!(lab.domstate("sa"), "undefined", "no definition left");

    // Create on sa: an inactive LV, defined on sa only.
    let (rc, out) = lab.ctl(
        "sa",
        &format!("create {VM} --size 32M --vg vg1 --xml /tmp/{VM}.xml"),
    );
    assert_eq!(rc, 0, "create: {out}");
    let attr = lab.lv_attr("sa").expect("the LV exists");
    assert_eq!(
        attr.chars().nth(4),
        Some('-'),
        "created inactive (no lock left): {attr}"
    );
    assert_eq!(lab.domstate("sa"), "shut off");
    let (rc, out) = lab.ctl(
        "sb",
        &format!("create {VM} --size 32M --vg vg1 --xml /tmp/{VM}.xml"),
    );
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("already defined on node sa"), "{out}");

    // Start, grow while running: the guest's disk as qemu reports it changes at once.
    let (rc, out) = lab.ctl("sa", &format!("start {VM}"));
    assert_eq!(rc, 0, "start: {out}");
    let (rc, out) = lab.ctl("sa", &format!("grow {VM} vda +32M"));
    assert_eq!(rc, 0, "grow: {out}");
    let info = lab.ok(
        "sa",
        &format!("virsh -c qemu:///system domblkinfo {VM} vda"),
    );
    assert!(
        info.contains(&format!("{}", 64u64 << 20)),
        "domblkinfo after grow: {info}"
    );
    let (rc, out) = lab.ctl("sa", &format!("remove {VM}"));
    assert_eq!(rc, 1, "remove while running: {out}");
    assert!(out.contains("stop it first"), "{out}");
    let (rc, out) = lab.ctl("sa", &format!("stop {VM}"));
    assert_eq!(rc, 0, "stop: {out}");

    // Maintenance on sb: the device there, a start on sa refused saying why.
    let xml = lab.ok(
        "sa",
        &format!("virsh -c qemu:///system dumpxml --inactive {VM}"),
    );
    lab.ok("sb", &format!("cat >/tmp/{VM}-def.xml <<'EOF'\n{}\nEOF\nvirsh -c qemu:///system define /tmp/{VM}-def.xml", xml.trim()));
    let (rc, out) = lab.ctl("sb", &format!("disks activate {VM}"));
    assert_eq!(rc, 0, "disks activate: {out}");
    assert!(out.contains(&format!("device: /dev/vg1/{VM}")), "{out}");
    lab.ok("sb", &format!("test -b /dev/vg1/{VM}"));
    let (rc, out) = lab.ctl("sa", &format!("start {VM}"));
    assert_eq!(rc, 1, "{out}");
    assert!(
        out.contains("activated for maintenance on node sb"),
        "start on sa: {out}"
    );
    let (rc, out) = lab.ctl("sb", &format!("disks deactivate {VM}"));
    assert_eq!(rc, 0, "disks deactivate: {out}");

    // Remove on sa: undefined on both, the LV gone.
    let (rc, out) = lab.ctl("sa", &format!("remove {VM}"));
    assert_eq!(rc, 0, "remove: {out}");
    assert_eq!(lab.domstate("sa"), "undefined");
    assert_eq!(lab.domstate("sb"), "undefined");
    assert_eq!(lab.lv_attr("sa"), None, "the LV is removed");
}
