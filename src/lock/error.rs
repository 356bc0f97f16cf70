//! `LockError`: every refusal of a lock operation, typed, with a message an operator can act on
//! (what happened, why, what to do next).

use crate::exec::ExecError;

/// Why a lock operation did not happen. `target` is always the human name of the locked thing:
/// `vm1's LV vg1/vm1` (lvmlockd) or `vm1's lease LS:vm1` (sanlock).
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{target} is locked by {} — it is probably running there: `vmwarden ctl status {vm}`", host_text(*.host_id))]
    HeldByOtherHost {
        target: String,
        vm: String,
        /// sanlock host id of the holder, when lvm/sanlock told us.
        host_id: Option<u64>,
    },
    #[error("{target} is still locked by host {host_id}, which stopped renewing its sanlock lease (crashed or cut off); its lock stays until sanlock declares it dead (≈140 s after its last renewal with default timeouts: 8 × io_timeout + 60 s) — wait and retry, and check the host: `sanlock client gets -h 1`")]
    HostNotDeadYet { target: String, host_id: u64 },
    #[error("the lock space of VG {vg} is not started on this host, so no lock in it can be taken — start it: `vgchange --lock-start {vg}` (and check lvmlockd and sanlock are running)")]
    LockspaceInactive { vg: String },
    #[error("sanlock lockspace {lockspace} is not joined on this host, so no lease in it can be taken — join it: `sanlock client add_lockspace -s {lockspace}:HOST_ID:PATH:0` (see docs/locking.md)")]
    LeaseLockspaceMissing { lockspace: String },
    #[error("{target}: the lock storage did not answer in time (sanlock I/O timeout) — check the shared disk/SAN path (`dmesg`, `sanlock client log_dump`) before retrying")]
    IoTimeout { target: String },
    #[error("{target} is held {held} here but {wanted} was asked; {hint}")]
    IncompatibleMode {
        target: String,
        held: &'static str,
        wanted: &'static str,
        hint: &'static str,
    },
    #[error("{target}: lvmlockd is not running on this host, so shared-VG locks cannot be taken — start it (`systemctl start lvmlockd`) and the lock space (`vgchange --lock-start VG`)")]
    LockdNotRunning { target: String },
    #[error("{what} {name:?} does not exist — check the name (`lvs`, `vgs`) and the VM's disk configuration")]
    NotFound { what: &'static str, name: String },
    #[error("invalid {kind} name {name:?}: {why}")]
    InvalidName {
        kind: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("lock configuration: {0}")]
    Config(String),
    #[error("`{command}` failed: {stderr}")]
    CommandFailed { command: String, stderr: String },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

fn host_text(h: Option<u64>) -> String {
    match h {
        Some(id) => format!("host {id}"),
        None => "another host".to_string(),
    }
}

impl LockError {
    /// Worth retrying soon by itself (a peer may be releasing right now).
    pub fn is_transient(&self) -> bool {
        matches!(self, LockError::HeldByOtherHost { .. })
    }
}

impl LockError {
    /// Another host holds the lock: if sanlock already sees that host failing, the refusal says the
    /// lock will only be free once the host is declared dead; otherwise it names the holder.
    pub(crate) fn held_elsewhere(
        target: String,
        vm: &str,
        holder: Option<super::sanlock::Holder>,
    ) -> LockError {
        match holder {
            Some(h) if h.failing => LockError::HostNotDeadYet {
                target,
                host_id: h.host_id,
            },
            h => LockError::HeldByOtherHost {
                target,
                vm: vm.to_string(),
                host_id: h.map(|h| h.host_id),
            },
        }
    }
}
