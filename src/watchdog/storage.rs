//! Whether a VM paused on a disk I/O error may be resumed: the health of its storage path,
//! judged on one [`NodeMap`] (the same collection `/metrics` and `vmwarden check` judge). Pure.
//!
//! Healthy means all of:
//! - every DRBD volume under its disks is UpToDate here (a DRBD 9 diskless client: a connected
//!   peer is UpToDate), its I/O is not suspended, and it is connected to every peer it has. A
//!   peer may still be resyncing: connected is what matters, because on dual-primary DRBD the
//!   shared VG — and the sanlock leases lvmlockd keeps in it — live on that device. While the
//!   peers are disconnected each side sees only its own copy of the leases, so "this node holds
//!   the lock" no longer excludes the other node, and a resumed guest's writes would not reach
//!   it (the start of a split brain). A guest frozen a while longer loses nothing.
//! - the lock: lvmlockd backend: the VG's lockspace is started and every LV of a shared VG under
//!   its disks is locked exclusively by this host; sanlock lease backend: the lease lockspace is
//!   live and this host holds the VM's lease exclusively.
//!
//! A lock not held exclusively here (shared, not held, its lockspace stopped — lvmlockd's locks
//! live in it) is not something to wait for: it was lost while the guest was paused, another
//! node may have started the VM meanwhile, and resuming this copy would write over its disk. The
//! policy never resumes such a VM (and remembers it until a reset). Anything not observed
//! (a collector failed, lvmlockd not answering) is waited for, never taken as healthy.

use crate::node::NodeMap;
use crate::probe::drbd::DiskState;
use crate::probe::lvm::{LockMode, LvLock};
use crate::probe::sanlock::LeaseMode;

#[derive(Debug, Clone, PartialEq)]
pub enum PathHealth {
    Healthy,
    /// Not healthy yet: every reason, in the operator's words.
    Waiting(Vec<String>),
    /// The VM's lock is not held exclusively by this node: never resumed automatically.
    LockNotHeld(String),
}

/// Judge `vm`'s storage path on `map`.
pub fn judge(map: &NodeMap, vm: &str) -> PathHealth {
    let mut wait = Vec::new();
    let mut lost = Vec::new();
    if let Some(why) = map.libvirt.why_not() {
        return PathHealth::Waiting(vec![why.to_string()]);
    }
    let Some(d) = map.domains.iter().find(|d| d.name == vm) else {
        return PathHealth::Waiting(vec![format!("libvirt does not list {vm}")]);
    };

    // The lock.
    match &map.leases {
        Some(l) => {
            let subject = l.subject(vm);
            if let Some(why) = l.sanlock.why_not() {
                wait.push(format!("{why} (the lease {subject} is not known)"));
            } else {
                match l.mode(vm) {
                    Some(LeaseMode::Exclusive) => {}
                    Some(LeaseMode::Shared) => lost.push(format!(
                        "the lease {subject} is held shared here, not exclusive"
                    )),
                    None => lost.push(format!("this node no longer holds the lease {subject}")),
                }
                if !l.lockspace_live {
                    wait.push(format!(
                        "the lease lockspace {} is not live here (`sanlock client status`)",
                        l.lockspace
                    ));
                }
            }
        }
        None => {
            if let Some(why) = map.lvm.why_not() {
                wait.push(format!("{why} (the lock of its disks is not known)"));
            }
            for disk in &d.disks {
                let Some(lv) = map.lv(disk) else { continue };
                if !lv.shared_vg {
                    continue;
                }
                let name = lv.full_name();
                let started = map.lockd_started.as_ref().map(|vgs| vgs.contains(&lv.vg));
                match (started, lv.lock) {
                    (None, _) | (_, LvLock::Unknown) => wait.push(format!(
                        "lvmlockd did not answer: the lock on {name} is not known"
                    )),
                    (Some(false), _) => lost.push(format!(
                        "the lvmlockd lockspace of VG {} is not started here: the lock on {name} went with it",
                        lv.vg
                    )),
                    (Some(true), LvLock::Known(LockMode::Ex) | LvLock::NotShared) => {}
                    (Some(true), LvLock::Known(LockMode::Sh)) => {
                        lost.push(format!("the lock on {name} is shared here, not exclusive"))
                    }
                    (Some(true), LvLock::Known(LockMode::Un)) => {
                        lost.push(format!("this node no longer holds the lock on {name}"))
                    }
                }
            }
        }
    }

    // DRBD under the disks. Not observed: waited for where a disk is known to be on DRBD
    // without its state (a /dev/drbd path, or an LV whose PVs are DRBD devices) — a disk on
    // neither is not on DRBD as far as this node can tell.
    if let Some(why) = map.drbd.why_not() {
        let on_drbd = d.disks.iter().any(|k| {
            k.source
                .as_deref()
                .is_some_and(|s| s.starts_with("/dev/drbd"))
                || map.lv(k).is_some_and(|lv| !lv.drbd_minors.is_empty())
        });
        if on_drbd {
            wait.push(format!("{why} (DRBD under the disks is not known)"));
        }
    }
    for disk in &d.disks {
        for r in &disk.drbd {
            wait.extend(drbd_ref_problems(r));
        }
    }
    let dedup = |mut v: Vec<String>| {
        v.dedup();
        v
    };
    if !lost.is_empty() {
        return PathHealth::LockNotHeld(dedup(lost).join("; "));
    }
    if !wait.is_empty() {
        return PathHealth::Waiting(dedup(wait));
    }
    PathHealth::Healthy
}

/// What keeps the DRBD volume `r` from serving a guest's I/O on this node, in the operator's
/// words (empty: UpToDate — or a diskless client with a connected UpToDate peer —, I/O not
/// suspended, connected to every peer). The watchdog's resume waits for these; a live migration
/// target reports them and the source refuses.
pub fn drbd_ref_problems(r: &crate::node::DrbdRef) -> Vec<String> {
    let mut problems = Vec::new();
    let res = format!("DRBD {}/{}", r.resource, r.volume);
    let client = r.client && r.disk_state == DiskState::Diskless;
    if !client && r.disk_state != DiskState::UpToDate {
        problems.push(format!("{res} is {} here, not UpToDate", r.disk_state));
    }
    if client
        && !r
            .peers
            .iter()
            .any(|(_, up, ds)| *up && *ds == DiskState::UpToDate)
    {
        problems.push(format!(
            "{res} is a diskless client and no connected peer is UpToDate"
        ));
    }
    if r.io_suspended {
        problems.push(format!("{res}: I/O is suspended"));
    }
    for (peer, up, _) in &r.peers {
        if !up {
            problems.push(format!("{res} is not connected to {peer}"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{DiskMap, DomainMap, DrbdRef, LvRef, Observed};
    use crate::probe::libvirt::{DomainState, PausedReason};

    /// One VM on one LV of shared VG vg0 whose PV is DRBD r0/0 with one peer.
    pub(crate) fn map() -> NodeMap {
        NodeMap {
            domains: vec![DomainMap {
                name: "a".into(),
                state: DomainState::Paused(PausedReason::IoError),
                disks: vec![DiskMap {
                    target: "vda".into(),
                    source: Some("/dev/vg0/a".into()),
                    lv: Some(0),
                    drbd: vec![DrbdRef {
                        minor: 0,
                        resource: "r0".into(),
                        volume: 0,
                        disk_state: DiskState::UpToDate,
                        client: false,
                        io_suspended: false,
                        peers: vec![("n2".into(), true, DiskState::UpToDate)],
                    }],
                }],
            }],
            lvs: vec![LvRef {
                vg: "vg0".into(),
                name: "a".into(),
                uuid: "u".into(),
                shared_vg: true,
                lock: LvLock::Known(LockMode::Ex),
                drbd_minors: vec![0],
            }],
            libvirt: Observed::Yes,
            lvm: Observed::Yes,
            drbd: Observed::Yes,
            lockd_unknown: None,
            drbd_split_brain: vec![],
            leases: None,
            lockd_started: Some(vec!["vg0".into()]),
        }
    }

    #[test]
    fn healthy_when_everything_holds() {
        assert_eq!(judge(&map(), "a"), PathHealth::Healthy);
    }

    #[test]
    fn drbd_not_uptodate_disconnected_or_suspended_waits() {
        let mut m = map();
        m.domains[0].disks[0].drbd[0].disk_state = DiskState::Failed;
        m.domains[0].disks[0].drbd[0].peers[0].1 = false;
        m.domains[0].disks[0].drbd[0].io_suspended = true;
        let PathHealth::Waiting(w) = judge(&m, "a") else {
            panic!("{:?}", judge(&m, "a"))
        };
        assert_eq!(
            w,
            [
                "DRBD r0/0 is Failed here, not UpToDate",
                "DRBD r0/0: I/O is suspended",
                "DRBD r0/0 is not connected to n2"
            ]
        );
        // A peer still resyncing is fine once connected.
        let mut m = map();
        m.domains[0].disks[0].drbd[0].peers[0].2 = DiskState::Inconsistent;
        assert_eq!(judge(&m, "a"), PathHealth::Healthy);
    }

    #[test]
    fn a_lock_not_exclusive_here_is_lost_not_waited_for() {
        for (lock, started, want) in [
            (LockMode::Un, true, "no longer holds the lock on vg0/a"),
            (LockMode::Sh, true, "shared here"),
            (LockMode::Ex, false, "lockspace of VG vg0 is not started"),
        ] {
            let mut m = map();
            m.lvs[0].lock = LvLock::Known(lock);
            if !started {
                m.lockd_started = Some(vec![]);
            }
            // Even with DRBD unhealthy too: the lock decides.
            m.domains[0].disks[0].drbd[0].disk_state = DiskState::Diskless;
            match judge(&m, "a") {
                PathHealth::LockNotHeld(w) => assert!(w.contains(want), "{w}"),
                o => panic!("{lock:?}: {o:?}"),
            }
        }
    }

    #[test]
    fn what_was_not_observed_is_waited_for() {
        let mut m = map();
        m.lvs[0].lock = LvLock::Unknown;
        m.lockd_started = None;
        m.drbd = Observed::No("the drbd collector failed: timeout".into());
        let PathHealth::Waiting(w) = judge(&m, "a") else {
            panic!()
        };
        assert!(w[0].contains("lvmlockd did not answer"), "{w:?}");
        assert!(w[1].contains("drbd collector failed"), "{w:?}");
        // Without DRBD's state a disk not known to be on DRBD does not wait for it.
        let mut m = map();
        m.drbd = Observed::No("the drbd collector is disabled".into());
        m.domains[0].disks[0].drbd.clear();
        m.lvs[0].drbd_minors.clear();
        assert_eq!(judge(&m, "a"), PathHealth::Healthy);
        let mut m = map();
        m.libvirt = Observed::No("libvirt down".into());
        assert_eq!(
            judge(&m, "a"),
            PathHealth::Waiting(vec!["libvirt down".into()])
        );
    }

    #[test]
    fn lease_backend_needs_the_lease_exclusive_and_its_lockspace_live() {
        let mut m = map();
        m.leases = Some(crate::node::LeaseMap {
            lockspace: "vmwarden".into(),
            held: vec![("a".into(), LeaseMode::Exclusive)],
            sanlock: Observed::Yes,
            lockspace_live: true,
        });
        // The LV's lvmlockd lock does not count under the lease backend.
        m.lvs[0].lock = LvLock::Known(LockMode::Un);
        assert_eq!(judge(&m, "a"), PathHealth::Healthy);
        if let Some(l) = m.leases.as_mut() {
            l.lockspace_live = false;
        }
        assert!(matches!(judge(&m, "a"), PathHealth::Waiting(w) if w[0].contains("not live")));
        if let Some(l) = m.leases.as_mut() {
            l.held.clear();
        }
        assert!(matches!(judge(&m, "a"), PathHealth::LockNotHeld(w) if w.contains("vmwarden:a")));
    }
}
