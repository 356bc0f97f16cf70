//! A VM's status in Ganeti's words, from its intent, libvirt's state and reason, and — when the
//! watchdog saw it happen — the detail of the lifecycle event that stopped it. Pure.

use crate::probe::libvirt::{DomainState, PausedReason, ShutoffReason};

use super::intent::Want;

/// Why a VM stopped, as precisely as it is known: from the lifecycle event's detail when the
/// watchdog received it, else from libvirt's shut-off reason (which cannot tell a guest's own
/// poweroff from an operator's `virsh shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopCause {
    /// `virsh destroy` (or vmwarden's stop after its timeout).
    Destroyed,
    /// qemu died (killed, crashed) or the guest panicked.
    Crashed,
    /// The domain failed to start.
    Failed,
    /// The guest powered itself off (event detail "guest").
    ShutdownGuest,
    /// A host-initiated shutdown (`virsh shutdown`, libvirt-guests; event detail "host").
    ShutdownHost,
    /// A shutdown whose initiator is not known (only the shut-off reason was seen).
    Shutdown,
    Saved,
    Migrated,
    FromSnapshot,
    /// libvirt does not say (`shut off (unknown)`: after a node reboot or a libvirtd restart).
    Unknown,
}

impl StopCause {
    /// From libvirt's shut-off reason alone.
    pub fn from_shutoff(r: ShutoffReason) -> StopCause {
        match r {
            ShutoffReason::Shutdown => StopCause::Shutdown,
            ShutoffReason::Destroyed => StopCause::Destroyed,
            ShutoffReason::Crashed | ShutoffReason::Daemon => StopCause::Crashed,
            ShutoffReason::Migrated => StopCause::Migrated,
            ShutoffReason::Saved => StopCause::Saved,
            ShutoffReason::Failed => StopCause::Failed,
            ShutoffReason::FromSnapshot => StopCause::FromSnapshot,
            ShutoffReason::Unknown | ShutoffReason::Other(_) => StopCause::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StopCause::Destroyed => "destroyed",
            StopCause::Crashed => "crashed",
            StopCause::Failed => "failed",
            StopCause::ShutdownGuest => "shutdown_guest",
            StopCause::ShutdownHost => "shutdown_host",
            StopCause::Shutdown => "shutdown",
            StopCause::Saved => "saved",
            StopCause::Migrated => "migrated",
            StopCause::FromSnapshot => "from_snapshot",
            StopCause::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Status {
    Running,
    /// Paused by someone (not an I/O error, not a migration).
    Paused,
    /// Paused by qemu on a disk I/O error: left paused, alerted.
    PausedIoError,
    /// Runs although its intent is "stopped".
    ErrorUp,
    /// Stopped on purpose: through vmwarden, `virsh destroy`, a host-initiated `virsh shutdown`.
    AdminDown,
    /// The guest powered itself off and `user_shutdown = true`.
    UserDown,
    /// Should run and does not: crashed, killed, failed to start, guest poweroff with
    /// `user_shutdown = false`, or stopped by a node reboot.
    ErrorDown,
    /// Left this node by migration (runs elsewhere).
    Migrated,
    /// Not the watchdog's: no intent (and not adopted), opted out, or nothing vmwarden can lock.
    Unmanaged,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Running,
        Status::Paused,
        Status::PausedIoError,
        Status::ErrorUp,
        Status::AdminDown,
        Status::UserDown,
        Status::ErrorDown,
        Status::Migrated,
        Status::Unmanaged,
    ];

    /// Ganeti's words where it has one.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::PausedIoError => "paused_io_error",
            Status::ErrorUp => "ERROR_up",
            Status::AdminDown => "ADMIN_down",
            Status::UserDown => "USER_down",
            Status::ErrorDown => "ERROR_down",
            Status::Migrated => "migrated",
            Status::Unmanaged => "unmanaged",
        }
    }
}

/// The status of a managed VM (`want` is its intent; `by_guest`: a "stop" intent the watchdog
/// recorded because the guest powered itself off) in `state`, `cause` being how it stopped when
/// that is known better than the state's reason (the stop event's detail).
pub fn compute(
    want: Want,
    by_guest: bool,
    state: &DomainState,
    cause: Option<StopCause>,
    user_shutdown: bool,
) -> Status {
    if state.is_active() {
        return match (want, state) {
            (Want::Stop, _) => Status::ErrorUp,
            (_, DomainState::Paused(PausedReason::IoError)) => Status::PausedIoError,
            (_, DomainState::Paused(PausedReason::Migration | PausedReason::Postcopy)) => {
                Status::Running
            }
            (_, DomainState::Paused(_)) => Status::Paused,
            _ => Status::Running,
        };
    }
    if want == Want::Stop {
        return if by_guest {
            Status::UserDown
        } else {
            Status::AdminDown
        };
    }
    let cause = cause.unwrap_or(match state {
        DomainState::Shutoff(r) => StopCause::from_shutoff(*r),
        _ => StopCause::Unknown,
    });
    match cause {
        StopCause::Crashed | StopCause::Failed | StopCause::Unknown => Status::ErrorDown,
        StopCause::ShutdownGuest if user_shutdown => Status::UserDown,
        StopCause::ShutdownGuest => Status::ErrorDown,
        // Who shut it down is not known: never restart what may have been stopped on purpose.
        StopCause::ShutdownHost | StopCause::Shutdown => Status::AdminDown,
        StopCause::Destroyed | StopCause::Saved | StopCause::FromSnapshot => Status::AdminDown,
        StopCause::Migrated => Status::Migrated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::libvirt::RunningReason;

    #[test]
    fn ganeti_words() {
        let off = |r| DomainState::Shutoff(r);
        let run = DomainState::Running(RunningReason::Booted);
        assert_eq!(
            compute(Want::Run, false, &run, None, false),
            Status::Running
        );
        assert_eq!(
            compute(Want::Stop, false, &run, None, false),
            Status::ErrorUp
        );
        assert_eq!(
            compute(
                Want::Run,
                false,
                &DomainState::Paused(PausedReason::IoError),
                None,
                false
            ),
            Status::PausedIoError
        );
        assert_eq!(
            compute(Want::Run, false, &off(ShutoffReason::Crashed), None, false),
            Status::ErrorDown
        );
        assert_eq!(
            compute(
                Want::Run,
                false,
                &off(ShutoffReason::Destroyed),
                None,
                false
            ),
            Status::AdminDown
        );
        // The shut-off reason alone cannot tell who shut it down: left down.
        assert_eq!(
            compute(Want::Run, false, &off(ShutoffReason::Shutdown), None, false),
            Status::AdminDown
        );
        let guest = Some(StopCause::ShutdownGuest);
        assert_eq!(
            compute(
                Want::Run,
                false,
                &off(ShutoffReason::Shutdown),
                guest,
                false
            ),
            Status::ErrorDown
        );
        assert_eq!(
            compute(Want::Run, false, &off(ShutoffReason::Shutdown), guest, true),
            Status::UserDown
        );
        // After a node reboot libvirt says "unknown": it should run, so it comes back.
        assert_eq!(
            compute(Want::Run, false, &off(ShutoffReason::Unknown), None, false),
            Status::ErrorDown
        );
        assert_eq!(
            compute(Want::Stop, false, &off(ShutoffReason::Crashed), None, false),
            Status::AdminDown
        );
        assert_eq!(
            compute(Want::Run, false, &off(ShutoffReason::Migrated), None, false),
            Status::Migrated
        );
        assert_eq!(
            compute(Want::Stop, true, &off(ShutoffReason::Unknown), None, true),
            Status::UserDown
        );
    }
}
