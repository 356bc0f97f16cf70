//! Where a VM's disks live (an LV in a VG, or a raw file on shared storage), what lvm says about
//! them (its JSON report, parsed by probe::lvm), and lvm's refusals in plain words.

use std::time::Duration;

use super::size::human;
use crate::actions::vmlocks::lv_of_path;
use crate::actions::ActionError;
use crate::config::Config;
use crate::exec::Cmd;
use crate::lock::lvmlockd::{classify_lvm_stderr, LvmRefusal};
use crate::lock::LockError;
use crate::probe::lvm::{fullreport_cmd, parse_fullreport, LvmReport};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskRef {
    Lv { vg: String, lv: String },
    File(String),
}

impl DiskRef {
    pub fn of_path(p: &str) -> DiskRef {
        match lv_of_path(p) {
            Some((vg, lv)) => DiskRef::Lv { vg, lv },
            None => DiskRef::File(p.to_string()),
        }
    }

    pub fn path(&self) -> String {
        match self {
            DiskRef::Lv { vg, lv } => format!("/dev/{vg}/{lv}"),
            DiskRef::File(p) => p.clone(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            DiskRef::Lv { vg, lv } => format!("LV {vg}/{lv} (/dev/{vg}/{lv})"),
            DiskRef::File(p) => format!("file {p}"),
        }
    }
}

pub fn timeout(cfg: &Config) -> Duration {
    Duration::from_secs_f64(cfg.lock.command_timeout_seconds)
}

/// `lvm ARGS… [lvchange_extra_args]` (the lab's `--driverloaded n` applies to every lvm change).
pub fn lvm(cfg: &Config, args: &[&str]) -> Cmd {
    Cmd::new(cfg.lvm.lvm.clone())
        .args(args.iter().copied())
        .args(cfg.lock.lvchange_extra_args.iter().cloned())
}

/// lvm's view of the VGs and LVs (the same report the probe reads).
pub async fn report(cfg: &Config) -> Result<LvmReport, ActionError> {
    let cmd = fullreport_cmd(&cfg.lvm.lvm);
    let out = cmd.run(timeout(cfg)).await.map_err(LockError::from)?;
    if !out.success() && out.stdout.trim().is_empty() {
        return Err(explain_lvm(&out.stderr, "", "", &cmd.display(), None));
    }
    parse_fullreport(&out.stdout)
        .map(|p| p.value)
        .map_err(|e| ActionError::Refused(format!("`{}`: {e}", cmd.display())))
}

/// Room for a new LV `vg/lv` of `size` bytes: the VG exists (shared when `need_shared`), the
/// name is free, the VG has the space. Pure, over lvm's report.
pub fn check_new_lv(
    rep: &LvmReport,
    vg: &str,
    lv: &str,
    size: u64,
    need_shared: bool,
) -> Result<(), String> {
    let Some(v) = rep.vgs.iter().find(|v| v.name == vg) else {
        let known: Vec<&str> = rep.vgs.iter().map(|v| v.name.as_str()).collect();
        return Err(format!(
            "VG {vg} does not exist on this node (lvm knows: {}) — check --vg / [lifecycle] vg and `vgs`",
            if known.is_empty() { "no VG".to_string() } else { known.join(", ") }
        ));
    };
    if need_shared && !v.is_shared() {
        return Err(format!(
            "VG {vg} is not a shared (lvmlockd) VG (lock type {:?}): an LV in it would have no cluster lock, and two nodes could run the VM at once — use the shared VG",
            v.lock_type
        ));
    }
    if rep.lvs.iter().any(|l| l.vg == vg && l.name == lv) {
        return Err(lv_taken(vg, lv));
    }
    if let Some(free) = v.free_bytes {
        if free < size {
            return Err(vg_full(vg, size, Some(free)));
        }
    }
    Ok(())
}

pub fn lv_taken(vg: &str, lv: &str) -> String {
    format!(
        "the LV name {lv} is taken in VG {vg} (`lvs {vg}/{lv}`): a VM's disk is the LV named like the VM — if {lv} is an old VM's disk, remove it (`vmwarden ctl remove`) or pick another VM name"
    )
}

pub fn vg_full(vg: &str, want: u64, free: Option<u64>) -> String {
    match free {
        Some(f) => format!(
            "VG {vg} is full: {} asked, only {} free (`vgs {vg}`) — free space (remove unused LVs, `vgextend {vg} PV`) or ask for less",
            human(want),
            human(f)
        ),
        None => format!(
            "VG {vg} has not enough free space for {} (`vgs {vg}` shows how much is free)",
            human(want)
        ),
    }
}

/// The LV's size in bytes from the report.
pub fn lv_size(rep: &LvmReport, vg: &str, lv: &str) -> Option<u64> {
    rep.lvs
        .iter()
        .find(|l| l.vg == vg && l.name == lv)
        .and_then(|l| l.size_bytes)
}

pub fn vg_free(rep: &LvmReport, vg: &str) -> Option<u64> {
    rep.vgs
        .iter()
        .find(|v| v.name == vg)
        .and_then(|v| v.free_bytes)
}

/// lvm's refusal in plain words: VG full (and how much is free), LV name taken, lockspace not
/// started, another host holds the lock (which, when `holder` names it), else lvm's own words.
pub fn explain_lvm(
    stderr: &str,
    vg: &str,
    lv: &str,
    command: &str,
    free: Option<(u64, u64)>,
) -> ActionError {
    let low = stderr.to_ascii_lowercase();
    if low.contains("insufficient free space") || low.contains("insufficient suitable") {
        return ActionError::Refused(match free {
            Some((want, f)) => vg_full(vg, want, Some(f)),
            None => format!("VG {vg} is full: {}", stderr.trim()),
        });
    }
    if low.contains("already exists") {
        return ActionError::Refused(lv_taken(vg, lv));
    }
    let target = format!("LV {vg}/{lv}");
    ActionError::Lock(match classify_lvm_stderr(stderr) {
        LvmRefusal::LockspaceInactive => LockError::LockspaceInactive { vg: vg.to_string() },
        LvmRefusal::LockdNotRunning => LockError::LockdNotRunning { target },
        LvmRefusal::HeldByOther => LockError::HeldByOtherHost {
            target,
            vm: lv.to_string(),
            host_id: None,
        },
        LvmRefusal::NoSuchLv => LockError::NotFound {
            what: "LV",
            name: format!("{vg}/{lv}"),
        },
        LvmRefusal::NoSuchVg => LockError::NotFound {
            what: "VG",
            name: vg.to_string(),
        },
        LvmRefusal::Other => LockError::CommandFailed {
            command: command.to_string(),
            stderr: stderr.trim().chars().take(400).collect(),
        },
    })
}

/// `qemu-img info --output=json`: (format, virtual size).
pub fn parse_qemu_img_info(text: &str) -> Result<(String, u64), String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("qemu-img info: not JSON: {e}"))?;
    let format = v
        .get("format")
        .and_then(|f| f.as_str())
        .ok_or("qemu-img info: no format")?;
    let size = v
        .get("virtual-size")
        .and_then(|f| f.as_u64())
        .ok_or("qemu-img info: no virtual-size")?;
    if !format
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("qemu-img info: odd format {format:?}"));
    }
    Ok((format.to_string(), size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::lvm::{Lv, Vg};

    fn rep() -> LvmReport {
        LvmReport {
            vgs: vec![
                Vg {
                    name: "vg1".into(),
                    lock_type: "sanlock".into(),
                    free_bytes: Some(3 << 30),
                    ..Default::default()
                },
                Vg {
                    name: "local".into(),
                    free_bytes: Some(100 << 30),
                    ..Default::default()
                },
            ],
            lvs: vec![Lv {
                vg: "vg1".into(),
                name: "vm1".into(),
                size_bytes: Some(8 << 30),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn new_lv_checks() {
        let r = rep();
        assert!(check_new_lv(&r, "vg1", "vm2", 1 << 30, true).is_ok());
        let e = check_new_lv(&r, "vg1", "vm2", 8 << 30, true).unwrap_err();
        assert!(
            e.contains("VG vg1 is full: 8 GiB asked, only 3 GiB free"),
            "{e}"
        );
        let e = check_new_lv(&r, "vg1", "vm1", 1 << 30, true).unwrap_err();
        assert!(e.contains("LV name vm1 is taken in VG vg1"), "{e}");
        let e = check_new_lv(&r, "local", "vm2", 1 << 30, true).unwrap_err();
        assert!(e.contains("not a shared"), "{e}");
        assert!(check_new_lv(&r, "local", "vm2", 1 << 30, false).is_ok());
        let e = check_new_lv(&r, "nope", "vm2", 1, true).unwrap_err();
        assert!(
            e.contains("VG nope does not exist") && e.contains("vg1, local"),
            "{e}"
        );
        assert_eq!(lv_size(&r, "vg1", "vm1"), Some(8 << 30));
        assert_eq!(vg_free(&r, "vg1"), Some(3 << 30));
    }

    #[test]
    fn lvm_refusals_in_plain_words() {
        let e = explain_lvm(
            "  Volume group \"vg1\" has insufficient free space (767 extents): 2048 required.\n",
            "vg1",
            "vm2",
            "lvm lvcreate",
            Some((8 << 30, 3 << 30)),
        );
        assert!(
            e.to_string()
                .contains("VG vg1 is full: 8 GiB asked, only 3 GiB free"),
            "{e}"
        );
        let e = explain_lvm(
            "  Logical Volume \"vm1\" already exists in volume group \"vg1\"\n",
            "vg1",
            "vm1",
            "lvm lvcreate",
            None,
        );
        assert!(e.to_string().contains("LV name vm1 is taken"), "{e}");
        let e = explain_lvm(
            "  VG vg1 lock failed: lockspace is inactive\n",
            "vg1",
            "vm1",
            "x",
            None,
        );
        assert!(e.to_string().contains("vgchange --lock-start vg1"), "{e}");
        let e = explain_lvm(
            "  LV locked by other host: vg1/vm1\n",
            "vg1",
            "vm1",
            "x",
            None,
        );
        assert!(e.to_string().contains("locked by another host"), "{e}");
        let e = explain_lvm("  something odd\n", "vg1", "vm1", "lvm lvextend", None);
        assert!(e.to_string().contains("something odd"), "{e}");
    }

    #[test]
    fn qemu_img_info() {
        let t = r#"{"virtual-size": 16777216, "filename": "a.qcow2", "format": "qcow2", "actual-size": 200704}"#;
        assert_eq!(parse_qemu_img_info(t).unwrap(), ("qcow2".into(), 16 << 20));
        assert!(parse_qemu_img_info("nope").is_err());
        assert!(parse_qemu_img_info(r#"{"format":"raw"}"#).is_err());
        assert_eq!(
            DiskRef::of_path("/dev/vg1/vm1"),
            DiskRef::Lv {
                vg: "vg1".into(),
                lv: "vm1".into()
            }
        );
        assert_eq!(DiskRef::of_path("/s/vm1.raw").path(), "/s/vm1.raw");
    }
}
