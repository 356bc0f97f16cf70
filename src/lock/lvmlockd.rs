//! lvmlockd backend: the VM's LV in a shared VG. Activating the LV takes its lvmlockd lock in
//! sanlock (`lvchange -aey` exclusive, `-asy` shared, `-an` release; `-asy` on an ex-held LV and
//! `-aey` on a sh-held LV convert). The mode is read from `lvmlockctl --info` (`LK LV ex|sh UUID`):
//! `lvs` reports "active exclusively" even for a shared lock, so it cannot be used.

use crate::config::Config;
use crate::exec::Cmd;

use super::sanlock::who_holds;
use super::{validate_name, with_retry, Held, LockError, NameKind, Tuning};

/// One VM's LV lock through lvmlockd.
#[derive(Debug, Clone)]
pub struct LvmlockdLock {
    vm: String,
    vg: String,
    lv: String,
    lvm: String,
    lvmlockctl: String,
    sanlock: String,
    extra_args: Vec<String>,
    tuning: Tuning,
}

/// What an `lvchange` refusal means, from lvm's stderr (real texts: tests/fixtures/lock/lvm-*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LvmRefusal {
    /// `LV locked by other host: vg1/vm1` (lvmlockd got -EAGAIN from sanlock: -243 and friends).
    HeldByOther,
    /// `Cannot access VG vg1 due to failed lock.` / `lockspace is inactive` (lockspace not started).
    LockspaceInactive,
    /// `WARNING: lvmlockd process is not running.`
    LockdNotRunning,
    /// `Failed to find logical volume "vg1/nope"`
    NoSuchLv,
    /// `Volume group "vgnope" not found`
    NoSuchVg,
    Other,
}

/// Classify lvm's stderr. Order matters: "lvmlockd is not running" also prints the VG line.
pub fn classify_lvm_stderr(stderr: &str) -> LvmRefusal {
    if stderr.contains("lvmlockd process is not running") {
        LvmRefusal::LockdNotRunning
    } else if stderr.contains("LV locked by other host") {
        LvmRefusal::HeldByOther
    } else if stderr.contains("lockspace is inactive")
        || (stderr.contains("Cannot access VG") && stderr.contains("due to failed lock"))
        || stderr.contains("lockspace not found or started")
    {
        LvmRefusal::LockspaceInactive
    } else if stderr.contains("Failed to find logical volume") {
        LvmRefusal::NoSuchLv
    } else if stderr.contains("Volume group") && stderr.contains("not found") {
        LvmRefusal::NoSuchVg
    } else {
        LvmRefusal::Other
    }
}

/// The mode lvmlockd holds on the LV with this uuid, from `lvmlockctl --info`
/// (`LK LV ex <uuid>`, `LK LV sh <uuid>`, `LK LV un <uuid>`). Unknown or absent: `None`.
pub fn parse_lvmlockctl_info(text: &str, lv_uuid: &str) -> Held {
    for line in text.lines() {
        // Four fields read in place: this runs once per line of a long listing.
        let mut f = line.split_whitespace();
        if let [Some("LK"), Some("LV"), Some(mode), Some(uuid)] =
            [f.next(), f.next(), f.next(), f.next()]
        {
            if uuid == lv_uuid {
                return match mode {
                    "ex" => Held::Exclusive,
                    "sh" => Held::Shared,
                    _ => Held::None,
                };
            }
        }
    }
    Held::None
}

/// `lvs --noheadings -o lv_uuid,lv_lock_args` line: (`uuid`, sanlock offset from `1.0.0:70254592`).
pub fn parse_lvs_uuid_lock_args(text: &str) -> Option<(String, Option<u64>)> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let mut f = line.split_whitespace();
    let uuid = f.next()?.to_string();
    let offset = f
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|o| o.parse().ok());
    Some((uuid, offset))
}

impl LvmlockdLock {
    pub fn new(cfg: &Config, vm: &str, vg: &str, lv: &str) -> Result<LvmlockdLock, LockError> {
        validate_name(NameKind::Vm, vm)?;
        validate_name(NameKind::Vg, vg)?;
        validate_name(NameKind::Lv, lv)?;
        Ok(LvmlockdLock {
            vm: vm.to_string(),
            vg: vg.to_string(),
            lv: lv.to_string(),
            lvm: cfg.lvm.lvm.clone(),
            lvmlockctl: cfg.lvm.lvmlockctl.clone(),
            sanlock: cfg.sanlock.sanlock.clone(),
            extra_args: cfg.lock.lvchange_extra_args.clone(),
            tuning: Tuning::from_config(cfg),
        })
    }

    pub fn target(&self) -> String {
        format!("{}'s LV {}/{}", self.vm, self.vg, self.lv)
    }

    /// The command `op` runs, for `--dry-run` plans.
    pub fn describe(&self, op: super::LockOp) -> String {
        use super::LockOp::*;
        let flag = match op {
            AcquireExclusive | ConvertToExclusive => "-aey",
            AcquireShared | ConvertToShared => "-asy",
            Release => "-an",
        };
        let mut s = format!("{} lvchange {flag} {}", self.lvm, self.vg_lv());
        for a in &self.extra_args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }

    fn vg_lv(&self) -> String {
        format!("{}/{}", self.vg, self.lv)
    }

    pub async fn acquire_exclusive(&self) -> Result<(), LockError> {
        match self.mode().await? {
            Held::Exclusive => Ok(()),
            Held::Shared => Err(self.incompatible(
                Held::Shared,
                "exclusive",
                "use convert_to_exclusive (migration target) instead of a fresh acquire",
            )),
            Held::None => self.lvchange("-aey").await,
        }
    }

    pub async fn acquire_shared(&self) -> Result<(), LockError> {
        match self.mode().await? {
            Held::Shared => Ok(()),
            // -asy would silently downgrade the lock of a running VM: refuse.
            Held::Exclusive => Err(self.incompatible(
                Held::Exclusive,
                "shared",
                "use convert_to_shared (migration source) if that is what you mean",
            )),
            // Right after the holder's ex→sh the first refusal can be stale: retried.
            Held::None => with_retry(&self.tuning, || self.lvchange("-asy")).await,
        }
    }

    pub async fn convert_to_shared(&self) -> Result<(), LockError> {
        match self.mode().await? {
            Held::Shared => Ok(()),
            Held::Exclusive => self.lvchange("-asy").await,
            Held::None => Err(self.incompatible(Held::None, "shared", "acquire it first")),
        }
    }

    pub async fn convert_to_exclusive(&self) -> Result<(), LockError> {
        match self.mode().await? {
            Held::Exclusive => Ok(()),
            Held::Shared => with_retry(&self.tuning, || self.lvchange("-aey")).await,
            Held::None => Err(self.incompatible(Held::None, "exclusive", "acquire it first")),
        }
    }

    pub async fn release(&self) -> Result<(), LockError> {
        match self.lvchange("-an").await {
            // No lockspace means no lock held here: released is what the caller wants.
            Err(LockError::LockspaceInactive { .. }) => Ok(()),
            r => r,
        }
    }

    pub async fn mode(&self) -> Result<Held, LockError> {
        let (uuid, _) = self.uuid_and_offset().await?;
        let cmd = Cmd::new(&self.lvmlockctl).arg("--info");
        let out = cmd.run(self.tuning.command_timeout).await?;
        if !out.success() {
            if out.stderr.contains("connect failed") || out.stdout.contains("Cannot connect") {
                return Err(LockError::LockdNotRunning {
                    target: self.target(),
                });
            }
            return Err(failed(&cmd, &out.stderr));
        }
        Ok(parse_lvmlockctl_info(&out.stdout, &uuid))
    }

    /// The sanlock host id of another host holding the LV's lock, if sanlock can tell (only used
    /// to word a refusal).
    pub async fn other_holder(&self) -> Option<u64> {
        let (_, offset) = self.uuid_and_offset().await.ok()?;
        let lockspace = format!("lvm_{}", self.vg);
        who_holds(
            &self.sanlock,
            self.tuning.command_timeout,
            &lockspace,
            offset?,
        )
        .await
        .map(|h| h.host_id)
    }

    async fn uuid_and_offset(&self) -> Result<(String, Option<u64>), LockError> {
        let cmd = Cmd::new(&self.lvm).args([
            "lvs",
            "--noheadings",
            "-o",
            "lv_uuid,lv_lock_args",
            &self.vg_lv(),
        ]);
        let out = cmd.run(self.tuning.command_timeout).await?;
        if !out.success() {
            return Err(self.refusal(&cmd, &out.stderr, None).await);
        }
        parse_lvs_uuid_lock_args(&out.stdout).ok_or_else(|| failed(&cmd, "no LV in the output"))
    }

    async fn lvchange(&self, flag: &str) -> Result<(), LockError> {
        let cmd = Cmd::new(&self.lvm)
            .arg("lvchange")
            .args(self.extra_args.iter().cloned())
            .args([flag, &self.vg_lv()]);
        let out = cmd.run(self.tuning.command_timeout).await?;
        // `-an` with an inactive lockspace exits 0 but says it could not unlock.
        if out.success() && !out.stderr.contains("lockspace is inactive") {
            return Ok(());
        }
        let offset = match classify_lvm_stderr(&out.stderr) {
            LvmRefusal::HeldByOther => self.uuid_and_offset().await.ok().and_then(|(_, o)| o),
            _ => None,
        };
        Err(self.refusal(&cmd, &out.stderr, offset).await)
    }

    async fn refusal(&self, cmd: &Cmd, stderr: &str, offset: Option<u64>) -> LockError {
        match classify_lvm_stderr(stderr) {
            LvmRefusal::HeldByOther => {
                let lockspace = format!("lvm_{}", self.vg);
                let holder = match offset {
                    Some(off) => {
                        who_holds(&self.sanlock, self.tuning.command_timeout, &lockspace, off).await
                    }
                    None => None,
                };
                LockError::held_elsewhere(self.target(), &self.vm, holder)
            }
            LvmRefusal::LockspaceInactive => LockError::LockspaceInactive {
                vg: self.vg.clone(),
            },
            LvmRefusal::LockdNotRunning => LockError::LockdNotRunning {
                target: self.target(),
            },
            LvmRefusal::NoSuchLv => LockError::NotFound {
                what: "LV",
                name: self.vg_lv(),
            },
            LvmRefusal::NoSuchVg => LockError::NotFound {
                what: "VG",
                name: self.vg.clone(),
            },
            LvmRefusal::Other => failed(cmd, stderr),
        }
    }

    fn incompatible(&self, held: Held, wanted: &'static str, hint: &'static str) -> LockError {
        LockError::IncompatibleMode {
            target: self.target(),
            held: held.as_str(),
            wanted,
            hint,
        }
    }
}

/// `CommandFailed` with lvm's noise (the no-device-mapper warning) left out.
pub(crate) fn failed(cmd: &Cmd, stderr: &str) -> LockError {
    let text: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("WARNING: Activation disabled"))
        .collect();
    LockError::CommandFailed {
        command: cmd.display(),
        stderr: text.join(" / "),
    }
}
