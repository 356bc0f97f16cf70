//! Domain state and reason as typed enums, mapped from libvirt's numbers (`virDomainState` and
//! the per-state `virDomain*Reason` enums in libvirt-domain.h — a stable ABI). Names are libvirt's
//! own enum names lowercased without the prefix: `VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT` →
//! `from_snapshot`. A number this build does not know (newer libvirt) is kept, not dropped.

use std::borrow::Cow;

/// Defines a reason enum with its libvirt numbers and names, plus `Other(n)` for numbers a newer
/// libvirt may add.
macro_rules! reasons {
    ($(#[$m:meta])* $ty:ident { $($num:literal => $var:ident $name:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $ty {
            $($var,)+
            /// A reason number this build does not know.
            Other(i32),
        }

        impl $ty {
            pub fn from_raw(n: i32) -> Self {
                match n {
                    $($num => $ty::$var,)+
                    other => $ty::Other(other),
                }
            }

            pub fn name(&self) -> Cow<'static, str> {
                match self {
                    $($ty::$var => Cow::Borrowed($name),)+
                    $ty::Other(n) => Cow::Owned(format!("unknown_{n}")),
                }
            }

            /// Every known name, in libvirt's order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];
        }
    };
}

reasons!(
    /// `virDomainNostateReason`
    NoStateReason { 0 => Unknown "unknown", }
);
reasons!(
    /// `virDomainRunningReason`
    RunningReason {
        0 => Unknown "unknown",
        1 => Booted "booted",
        2 => Migrated "migrated",
        3 => Restored "restored",
        4 => FromSnapshot "from_snapshot",
        5 => Unpaused "unpaused",
        6 => MigrationCanceled "migration_canceled",
        7 => SaveCanceled "save_canceled",
        8 => Wakeup "wakeup",
        9 => Crashed "crashed",
        10 => Postcopy "postcopy",
        11 => PostcopyFailed "postcopy_failed",
    }
);
reasons!(
    /// `virDomainBlockedReason`
    BlockedReason { 0 => Unknown "unknown", }
);
reasons!(
    /// `virDomainPausedReason`
    PausedReason {
        0 => Unknown "unknown",
        1 => User "user",
        2 => Migration "migration",
        3 => Save "save",
        4 => Dump "dump",
        5 => IoError "ioerror",
        6 => Watchdog "watchdog",
        7 => FromSnapshot "from_snapshot",
        8 => ShuttingDown "shutting_down",
        9 => Snapshot "snapshot",
        10 => Crashed "crashed",
        11 => StartingUp "starting_up",
        12 => Postcopy "postcopy",
        13 => PostcopyFailed "postcopy_failed",
        14 => ApiError "api_error",
    }
);
reasons!(
    /// `virDomainShutdownReason`
    ShutdownReason {
        0 => Unknown "unknown",
        1 => User "user",
    }
);
reasons!(
    /// `virDomainShutoffReason`
    ShutoffReason {
        0 => Unknown "unknown",
        1 => Shutdown "shutdown",
        2 => Destroyed "destroyed",
        3 => Crashed "crashed",
        4 => Migrated "migrated",
        5 => Saved "saved",
        6 => Failed "failed",
        7 => FromSnapshot "from_snapshot",
        8 => Daemon "daemon",
    }
);
reasons!(
    /// `virDomainCrashedReason`
    CrashedReason {
        0 => Unknown "unknown",
        1 => Panicked "panicked",
    }
);
reasons!(
    /// `virDomainPMSuspendedReason`
    PmSuspendedReason { 0 => Unknown "unknown", }
);

/// A domain's state with the reason libvirt gives for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainState {
    NoState(NoStateReason),
    Running(RunningReason),
    Blocked(BlockedReason),
    Paused(PausedReason),
    Shutdown(ShutdownReason),
    Shutoff(ShutoffReason),
    Crashed(CrashedReason),
    PmSuspended(PmSuspendedReason),
    /// A state number this build does not know (newer libvirt); raw numbers kept.
    Unknown {
        state: i32,
        reason: i32,
    },
}

impl Default for DomainState {
    fn default() -> Self {
        DomainState::NoState(NoStateReason::Unknown)
    }
}

impl DomainState {
    /// Every known state name, the `state` values of `vmwarden_domain_state`.
    pub const NAMES: &'static [&'static str] = &[
        "running",
        "blocked",
        "paused",
        "shutdown",
        "shutoff",
        "crashed",
        "pmsuspended",
        "nostate",
    ];

    /// From `virDomainGetState`'s (state, reason).
    pub fn from_raw(state: i32, reason: i32) -> Self {
        match state {
            0 => DomainState::NoState(NoStateReason::from_raw(reason)),
            1 => DomainState::Running(RunningReason::from_raw(reason)),
            2 => DomainState::Blocked(BlockedReason::from_raw(reason)),
            3 => DomainState::Paused(PausedReason::from_raw(reason)),
            4 => DomainState::Shutdown(ShutdownReason::from_raw(reason)),
            5 => DomainState::Shutoff(ShutoffReason::from_raw(reason)),
            6 => DomainState::Crashed(CrashedReason::from_raw(reason)),
            7 => DomainState::PmSuspended(PmSuspendedReason::from_raw(reason)),
            state => DomainState::Unknown { state, reason },
        }
    }

    /// libvirt's state name lowercased (`VIR_DOMAIN_PMSUSPENDED` → `pmsuspended`).
    pub fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            DomainState::NoState(_) => "nostate",
            DomainState::Running(_) => "running",
            DomainState::Blocked(_) => "blocked",
            DomainState::Paused(_) => "paused",
            DomainState::Shutdown(_) => "shutdown",
            DomainState::Shutoff(_) => "shutoff",
            DomainState::Crashed(_) => "crashed",
            DomainState::PmSuspended(_) => "pmsuspended",
            DomainState::Unknown { state, .. } => return Cow::Owned(format!("unknown_{state}")),
        })
    }

    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            DomainState::NoState(r) => r.name(),
            DomainState::Running(r) => r.name(),
            DomainState::Blocked(r) => r.name(),
            DomainState::Paused(r) => r.name(),
            DomainState::Shutdown(r) => r.name(),
            DomainState::Shutoff(r) => r.name(),
            DomainState::Crashed(r) => r.name(),
            DomainState::PmSuspended(r) => r.name(),
            DomainState::Unknown { reason, .. } => Cow::Owned(format!("unknown_{reason}")),
        }
    }

    /// True while a qemu process exists for the domain (libvirt's "active").
    pub fn is_active(&self) -> bool {
        !matches!(self, DomainState::Shutoff(_) | DomainState::NoState(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_reasons_map_to_libvirt_names() {
        // What LAB-NOTES observed: start, kill -9, virsh destroy, QMP quit, arrival by migration.
        let cases = [
            ((1, 1), "running", "booted"),
            ((5, 3), "shutoff", "crashed"),
            ((5, 2), "shutoff", "destroyed"),
            ((5, 1), "shutoff", "shutdown"),
            ((1, 2), "running", "migrated"),
            ((3, 5), "paused", "ioerror"),
            ((3, 14), "paused", "api_error"),
            ((5, 7), "shutoff", "from_snapshot"),
            ((6, 1), "crashed", "panicked"),
            ((7, 0), "pmsuspended", "unknown"),
            ((4, 1), "shutdown", "user"),
            ((2, 0), "blocked", "unknown"),
            ((0, 0), "nostate", "unknown"),
        ];
        for ((s, r), state, reason) in cases {
            let d = DomainState::from_raw(s, r);
            assert_eq!(
                (d.name().as_ref(), d.reason().as_ref()),
                (state, reason),
                "({s},{r})"
            );
        }
    }

    #[test]
    fn unknown_numbers_are_kept() {
        let d = DomainState::from_raw(5, 42);
        assert_eq!(d, DomainState::Shutoff(ShutoffReason::Other(42)));
        assert_eq!(d.reason(), "unknown_42");
        let d = DomainState::from_raw(9, 1);
        assert_eq!(d.name(), "unknown_9");
        assert_eq!(d.reason(), "unknown_1");
    }

    #[test]
    fn activity() {
        assert!(DomainState::from_raw(1, 1).is_active());
        assert!(DomainState::from_raw(3, 1).is_active());
        assert!(!DomainState::from_raw(5, 3).is_active());
    }
}
