//! `VolumeLock`: the cluster-wide lock on one VM's disk, the only authority on "who may use it".
//!
//! Two backends, one API:
//! - [`LvmlockdLock`]: the VM's LV in a shared VG; lvmlockd takes the lock in sanlock when the LV
//!   is activated (`lvchange -aey` exclusive, `-asy` shared, `-an` release).
//! - [`SanlockLease`]: clusters without lvmlockd; one sanlock resource per VM, held by a small
//!   holder process (see docs/locking.md for why it outlives an agent restart but not the VM).
//!
//! Modes: `Exclusive` while a VM runs, `Shared` on both ends only during a live migration.
//! Every refusal is a [`LockError`] saying who holds the lock when lvm/sanlock can tell.
//! Names from users are checked by [`validate_name`] before they reach any argv.

mod error;
pub mod follow;
pub mod lvmlockd;
pub mod sanlock;

use std::time::Duration;

pub use error::LockError;
pub use lvmlockd::LvmlockdLock;
pub use sanlock::SanlockLease;

use crate::config::Config;

/// The lock mode this host holds on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Exclusive,
    Shared,
    None,
}

impl Held {
    pub fn as_str(self) -> &'static str {
        match self {
            Held::Exclusive => "exclusive",
            Held::Shared => "shared",
            Held::None => "unlocked",
        }
    }
}

/// A lock operation, named for plans and journals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOp {
    AcquireExclusive,
    AcquireShared,
    ConvertToShared,
    ConvertToExclusive,
    Release,
}

/// What a name is, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Vg,
    Lv,
    Vm,
    Lockspace,
}

impl NameKind {
    fn as_str(self) -> &'static str {
        match self {
            NameKind::Vg => "VG",
            NameKind::Lv => "LV",
            NameKind::Vm => "VM",
            NameKind::Lockspace => "lockspace",
        }
    }

    /// LVM allows 127 characters for VG/LV names; sanlock names (lockspace, resource) are at most
    /// 48 bytes (SANLK_NAME_LEN).
    fn max_len(self) -> usize {
        match self {
            NameKind::Vg | NameKind::Lv => 127,
            NameKind::Vm | NameKind::Lockspace => 48,
        }
    }
}

/// Accept only LVM's name charset `[A-Za-z0-9+_.-]`, not starting with `-` (would read as an
/// option), not `.`/`..`, within the length limit. Also rules out `/` and `:` (the separators of
/// `vg/lv` and of sanlock's `LS:NAME:PATH:OFFSET`).
pub fn validate_name(kind: NameKind, name: &str) -> Result<(), LockError> {
    let bad = |why: &'static str| {
        Err(LockError::InvalidName {
            kind: kind.as_str(),
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > kind.max_len() {
        return bad("too long (LVM allows 127 characters, sanlock 48)");
    }
    if name.starts_with('-') {
        return bad("must not start with '-'");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not names");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
    {
        return bad("only letters, digits and + _ . - are allowed");
    }
    Ok(())
}

/// Timeouts and retries shared by both backends (from `[lock]`).
#[derive(Debug, Clone)]
pub struct Tuning {
    pub command_timeout: Duration,
    pub retry_attempts: u32,
    pub retry_total: Duration,
}

impl Tuning {
    pub fn from_config(cfg: &Config) -> Tuning {
        Tuning {
            command_timeout: Duration::from_secs_f64(cfg.lock.command_timeout_seconds),
            retry_attempts: cfg.lock.convert_retry_attempts,
            retry_total: Duration::from_secs_f64(cfg.lock.convert_retry_total_seconds),
        }
    }
}

/// One VM's disk lock, whichever backend the cluster uses.
#[derive(Debug, Clone)]
pub enum VolumeLock {
    Lvmlockd(LvmlockdLock),
    Sanlock(SanlockLease),
}

impl VolumeLock {
    /// The lock for `vm` whose disk is the LV `vg/lv`, with the backend chosen by
    /// `[lock] backend` (`"lvmlockd"`: the LV itself; `"sanlock"`: the VM's lease, vg/lv unused).
    pub fn for_vm(cfg: &Config, vm: &str, vg: &str, lv: &str) -> Result<VolumeLock, LockError> {
        match cfg.lock.backend.as_str() {
            "lvmlockd" => Ok(VolumeLock::Lvmlockd(LvmlockdLock::new(cfg, vm, vg, lv)?)),
            "sanlock" => Ok(VolumeLock::Sanlock(SanlockLease::new(cfg, vm)?)),
            other => Err(LockError::Config(format!(
                "lock.backend = {other:?}: expected \"lvmlockd\" or \"sanlock\""
            ))),
        }
    }

    /// Human name of what is locked, e.g. `vm1's LV vg1/vm1`.
    pub fn target(&self) -> String {
        match self {
            VolumeLock::Lvmlockd(l) => l.target(),
            VolumeLock::Sanlock(l) => l.target(),
        }
    }

    /// The command(s) `op` runs, for `--dry-run` plans.
    pub fn describe(&self, op: LockOp) -> String {
        match self {
            VolumeLock::Lvmlockd(l) => l.describe(op),
            VolumeLock::Sanlock(l) => l.describe(op),
        }
    }

    /// Run `op`.
    pub async fn apply(&self, op: LockOp) -> Result<(), LockError> {
        match op {
            LockOp::AcquireExclusive => self.acquire_exclusive().await,
            LockOp::AcquireShared => self.acquire_shared().await,
            LockOp::ConvertToShared => self.convert_to_shared().await,
            LockOp::ConvertToExclusive => self.convert_to_exclusive().await,
            LockOp::Release => self.release().await,
        }
    }

    /// Take the lock exclusively (start a VM). Idempotent when already held exclusively here.
    pub async fn acquire_exclusive(&self) -> Result<(), LockError> {
        match self {
            VolumeLock::Lvmlockd(l) => l.acquire_exclusive().await,
            VolumeLock::Sanlock(l) => l.acquire_exclusive().await,
        }
    }

    /// Take the lock shared (migration target before the VM arrives).
    pub async fn acquire_shared(&self) -> Result<(), LockError> {
        match self {
            VolumeLock::Lvmlockd(l) => l.acquire_shared().await,
            VolumeLock::Sanlock(l) => l.acquire_shared().await,
        }
    }

    /// Exclusive → shared (migration source, so the target can join).
    pub async fn convert_to_shared(&self) -> Result<(), LockError> {
        match self {
            VolumeLock::Lvmlockd(l) => l.convert_to_shared().await,
            VolumeLock::Sanlock(l) => l.convert_to_shared().await,
        }
    }

    /// Shared → exclusive (migration target after the source released). Retried with bounded
    /// backoff (`[lock] convert_retry_*`): right after a peer's release the refusal can be stale.
    pub async fn convert_to_exclusive(&self) -> Result<(), LockError> {
        match self {
            VolumeLock::Lvmlockd(l) => l.convert_to_exclusive().await,
            VolumeLock::Sanlock(l) => l.convert_to_exclusive().await,
        }
    }

    /// Drop whatever this host holds. Idempotent.
    pub async fn release(&self) -> Result<(), LockError> {
        match self {
            VolumeLock::Lvmlockd(l) => l.release().await,
            VolumeLock::Sanlock(l) => l.release().await,
        }
    }

    /// Tie the held lock to the VM's qemu process once it runs, so the lock cannot outlive the
    /// VM. sanlock: the lease moves to a holder watching `vm_pid` without ever being free
    /// ([`SanlockLease::attach_vm`]). lvmlockd: nothing to do — the lock follows the LV's
    /// activation, which the stop/cleanup paths end with `release`.
    pub async fn attach_vm(&self, vm_pid: u32) -> Result<(), LockError> {
        match self {
            VolumeLock::Lvmlockd(_) => Ok(()),
            VolumeLock::Sanlock(l) => l.attach_vm(vm_pid).await,
        }
    }

    /// The sanlock host id of another host holding the lock, when sanlock can tell. Best effort,
    /// for wording refusals: never a reason to act.
    pub async fn other_holder(&self) -> Option<u64> {
        match self {
            VolumeLock::Lvmlockd(l) => l.other_holder().await,
            VolumeLock::Sanlock(l) => l.other_holder().await,
        }
    }

    /// What this host holds now, asked from the lock manager (never from cached state).
    pub async fn mode(&self) -> Result<Held, LockError> {
        match self {
            VolumeLock::Lvmlockd(l) => l.mode().await,
            VolumeLock::Sanlock(l) => l.mode().await,
        }
    }
}

/// Run `op` until it succeeds, fails for good, or the retry budget is spent. Only
/// [`LockError::is_transient`] errors are retried; backoff doubles from 200 ms.
pub(crate) async fn with_retry<F, Fut>(tuning: &Tuning, mut op: F) -> Result<(), LockError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), LockError>>,
{
    let start = std::time::Instant::now();
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(()) => return Ok(()),
            Err(e)
                if e.is_transient()
                    && attempt < tuning.retry_attempts.max(1)
                    && start.elapsed() + delay <= tuning.retry_total =>
            {
                tracing::debug!(attempt, error = %e, "lock refused, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["vm1", "vg_1", "a+b.c-d", "lv..x", "X"] {
            assert!(validate_name(NameKind::Lv, ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-aey", ".", "..", "vg/lv", "a b", "ls:x", "vm\n", "é", "$(x)",
        ] {
            assert!(validate_name(NameKind::Lv, bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(NameKind::Lv, &"a".repeat(127)).is_ok());
        assert!(validate_name(NameKind::Lv, &"a".repeat(128)).is_err());
        assert!(validate_name(NameKind::Vm, &"a".repeat(49)).is_err());
        let e = validate_name(NameKind::Vg, "-x").unwrap_err().to_string();
        assert!(e.contains("VG") && e.contains("'-'"), "{e}");
    }
}
