//! The node's invariants, judged on a [`NodeMap`]. Pure: no I/O, no clock.
//!
//! Only what was observed is judged: an invariant whose inputs a collector could not provide
//! (failed or disabled; lvmlockd not answering for a shared VG) reports no violation and is listed
//! in [`Report::not_checked`] instead. A source that does not exist on the node (no DRBD, no lvm)
//! counts as observed and empty.
//!
//! A domain "uses" its disks while a qemu process exists for it (libvirt's active states: running,
//! paused, blocked, shutting down, crashed-and-kept, pmsuspended).

use std::collections::{BTreeMap, BTreeSet};

use crate::node::{DomainMap, NodeMap};
use crate::probe::drbd::DiskState;
use crate::probe::lvm::{LockMode, LvLock};

pub const RUNNING_WITHOUT_EXCLUSIVE_LOCK: &str = "running_without_exclusive_lock";
pub const LOCK_WITHOUT_RUNNING_DOMAIN: &str = "lock_without_running_domain";
pub const LOCK_SHARED_OUTSIDE_MIGRATION: &str = "lock_shared_outside_migration";
pub const DRBD_NOT_UPTODATE: &str = "drbd_not_uptodate";
pub const DRBD_SPLIT_BRAIN: &str = "drbd_split_brain";
/// A VM active on more than one node of the cluster (this one and its peers, as they answered).
pub const RUNNING_ON_SEVERAL_NODES: &str = "running_on_several_nodes";

/// Every invariant, in report order.
pub const ALL: [&str; 6] = [
    RUNNING_WITHOUT_EXCLUSIVE_LOCK,
    LOCK_WITHOUT_RUNNING_DOMAIN,
    LOCK_SHARED_OUTSIDE_MIGRATION,
    DRBD_NOT_UPTODATE,
    DRBD_SPLIT_BRAIN,
    RUNNING_ON_SEVERAL_NODES,
];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub invariant: &'static str,
    /// The domain concerned; for a leaked lock, a domain defined here that uses the LV, or "".
    pub domain: String,
    /// What is wrong: `vg/lv` for lock invariants, the DRBD `resource/volume` for DRBD ones.
    pub subject: String,
    /// What is wrong, why it matters, what to do.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotChecked {
    pub invariant: &'static str,
    pub why: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Sorted by (invariant, domain, subject); no duplicates.
    pub violations: Vec<Violation>,
    pub not_checked: Vec<NotChecked>,
}

impl Report {
    /// Whether `invariant` was fully checked.
    pub fn checked(&self, invariant: &str) -> bool {
        !self.not_checked.iter().any(|n| n.invariant == invariant)
    }
}

/// Violations keyed by (invariant, domain, subject): the first message wins (two disks of a
/// domain on the same LV are one violation, and one metric series).
#[derive(Default)]
struct Violations(BTreeMap<(&'static str, String, String), Violation>);

impl Violations {
    fn insert(&mut self, v: Violation) {
        self.0
            .entry((v.invariant, v.domain.clone(), v.subject.clone()))
            .or_insert(v);
    }
}

/// Judge every invariant. `in_migration`: domains being live-migrated (their LV may be shared).
pub fn check(map: &NodeMap, in_migration: &BTreeSet<String>) -> Report {
    let mut v = Violations::default();
    let mut not_checked = Vec::new();
    let mut skip = |inv: &'static str, why: &str| {
        not_checked.push(NotChecked {
            invariant: inv,
            why: why.to_string(),
        })
    };

    let lock_invs = [
        RUNNING_WITHOUT_EXCLUSIVE_LOCK,
        LOCK_WITHOUT_RUNNING_DOMAIN,
        LOCK_SHARED_OUTSIDE_MIGRATION,
    ];
    let lock_blocker = map
        .libvirt
        .why_not()
        .or(map.lvm.why_not())
        .map(str::to_string);
    let locks_ok = lock_blocker.is_none();
    match &lock_blocker {
        // Under the lease backend a VM's lock is its lease: LVs are judged when lvm answered,
        // and their absence does not leave the lock invariants unchecked.
        Some(_) if map.leases.is_some() => {}
        Some(why) => lock_invs.iter().for_each(|i| skip(i, why)),
        None => {
            if let Some(why) = &map.lockd_unknown {
                let why = format!("{why} (LVs of shared VGs not judged)");
                lock_invs.iter().for_each(|i| skip(i, &why));
            }
        }
    }
    let lease_blocker = map.leases.as_ref().and_then(|l| {
        map.libvirt
            .why_not()
            .or(l.sanlock.why_not())
            .map(|w| format!("{w} (VM leases in {} not judged)", l.lockspace))
    });
    if let Some(why) = &lease_blocker {
        lock_invs.iter().for_each(|i| skip(i, why));
    }
    if let Some(why) = map.drbd.why_not() {
        skip(DRBD_SPLIT_BRAIN, why);
    }
    let drbd_blocker = map
        .libvirt
        .why_not()
        .or(map.drbd.why_not())
        .map(str::to_string);
    match &drbd_blocker {
        Some(why) => skip(DRBD_NOT_UPTODATE, why),
        None => {
            if let Some(why) = map.lvm.why_not() {
                skip(
                    DRBD_NOT_UPTODATE,
                    &format!("{why} (disks on LVs over DRBD not judged)"),
                );
            }
        }
    }

    if locks_ok {
        for d in map.domains.iter().filter(|d| d.uses_disks()) {
            for disk in &d.disks {
                let Some(lv) = map.lv(disk) else { continue };
                if !lv.shared_vg {
                    continue;
                }
                let name = lv.full_name();
                match lv.lock {
                    LvLock::Known(LockMode::Ex) | LvLock::NotShared | LvLock::Unknown => {}
                    LvLock::Known(LockMode::Sh) => {
                        if !in_migration.contains(&d.name) {
                            v.insert(Violation {
                                invariant: LOCK_SHARED_OUTSIDE_MIGRATION,
                                domain: d.name.clone(),
                                subject: name.clone(),
                                message: format!(
                                    "{dom} is {st} with its disk {tgt} on {name} held in shared mode by this host, \
                                     and no migration of {dom} is in progress. A shared lock lets another host \
                                     activate the LV too and start a second copy of {dom}, which corrupts its disk. \
                                     Check that {dom} runs nowhere else (`virsh domstate {dom}` on every other host), \
                                     then take the lock exclusive: `lvchange -aey {name}`.",
                                    dom = d.name,
                                    st = d.state.name(),
                                    tgt = disk.target,
                                ),
                            });
                        }
                    }
                    LvLock::Known(LockMode::Un) => {
                        v.insert(Violation {
                            invariant: RUNNING_WITHOUT_EXCLUSIVE_LOCK,
                            domain: d.name.clone(),
                            subject: name.clone(),
                            message: format!(
                                "{dom} is {st} but this host holds no lock on {name} (its disk {tgt}). Nothing \
                                 stops another host from activating {name} and starting {dom} there, which \
                                 corrupts its disk. Check that {dom} runs nowhere else \
                                 (`virsh domstate {dom}` on every other host), then take the lock: \
                                 `lvchange -aey {name}` (if it fails, another host holds it: stop {dom} here).",
                                dom = d.name,
                                st = d.state.name(),
                                tgt = disk.target,
                            ),
                        });
                    }
                }
            }
        }
        // Per LV: used by a domain that has its disks open; else the first domain defined on it.
        let mut used = vec![false; map.lvs.len()];
        let mut defined: Vec<Option<&DomainMap>> = vec![None; map.lvs.len()];
        for d in &map.domains {
            for i in d.disks.iter().filter_map(|k| k.lv) {
                if d.uses_disks() {
                    if let Some(u) = used.get_mut(i) {
                        *u = true;
                    }
                } else if let Some(slot @ None) = defined.get_mut(i) {
                    *slot = Some(d);
                }
            }
        }
        for (i, lv) in map.lvs.iter().enumerate() {
            let LvLock::Known(mode @ (LockMode::Ex | LockMode::Sh)) = lv.lock else {
                continue;
            };
            if !lv.shared_vg {
                continue;
            }
            if used.get(i).copied().unwrap_or(false) {
                continue;
            }
            let defined = defined.get(i).copied().flatten();
            let name = lv.full_name();
            let whose = match defined {
                Some(d) => format!("its domain {} is {} here", d.name, d.state.name()),
                None => "no domain on this host uses it".to_string(),
            };
            v.insert(Violation {
                invariant: LOCK_WITHOUT_RUNNING_DOMAIN,
                domain: defined.map(|d| d.name.clone()).unwrap_or_default(),
                subject: name.clone(),
                message: format!(
                    "this host holds the lock on {name} in {mode} mode but {whose}. A leaked lock blocks \
                     failover: no other host can start the VM on {name}. Check that no host runs a VM on \
                     {name} (`virsh domblklist` on each host), then release it: `lvchange -an {name}`.",
                    mode = if mode == LockMode::Ex { "exclusive" } else { "shared" },
                ),
            });
        }
    }

    if let (Some(leases), None) = (&map.leases, &lease_blocker) {
        check_leases(map, leases, in_migration, &mut v);
    }

    for (r, name) in &map.drbd_split_brain {
        let res = format!("{}/{}", r.resource, r.volume);
        v.insert(Violation {
            invariant: DRBD_SPLIT_BRAIN,
            domain: String::new(),
            subject: res.clone(),
            message: format!(
                "DRBD reported a split brain on {res} (minor {minor}): both sides wrote while disconnected and \
                 their data now differ; the peers stay disconnected (StandAlone) until an operator decides. \
                 Pick the node whose changes are lost (the one whose VMs you would rather roll back), stop \
                 or migrate its VMs off the device, then there: `drbdadm disconnect {name}; drbdadm secondary \
                 {name}; drbdadm connect --discard-my-data {name}`; on the surviving node: `drbdadm connect \
                 {name}`. The resync that follows overwrites the victim's changes.",
                minor = r.minor,
            ),
        });
    }

    if drbd_blocker.is_none() {
        for d in map.domains.iter().filter(|d| d.uses_disks()) {
            for disk in &d.disks {
                for r in &disk.drbd {
                    if r.disk_state == DiskState::UpToDate
                        || (r.client && r.disk_state == DiskState::Diskless)
                    {
                        continue;
                    }
                    let res = format!("{}/{}", r.resource, r.volume);
                    v.insert(Violation {
                        invariant: DRBD_NOT_UPTODATE,
                        domain: d.name.clone(),
                        subject: res.clone(),
                        message: format!(
                            "{dom} is {st} on DRBD {res} (minor {minor}, under its disk {tgt}) whose local disk \
                             is {ds}, not UpToDate. The VM's data here is incomplete or stale: reads go to \
                             peers or fail, and losing the peer loses the VM's disk. Look at \
                             `drbdadm status {resname}` and resync or reattach the disk (`drbdadm adjust \
                             {resname}`); consider migrating {dom} to a node where it is UpToDate.",
                            dom = d.name,
                            st = d.state.name(),
                            minor = r.minor,
                            tgt = disk.target,
                            ds = r.disk_state,
                            resname = r.resource,
                        ),
                    });
                }
            }
        }
    }

    Report {
        violations: v.0.into_values().collect(),
        not_checked,
    }
}

/// The lock invariants for the sanlock lease backend: a VM's lock is its lease `LOCKSPACE:VM`.
fn check_leases(
    map: &NodeMap,
    leases: &crate::node::LeaseMap,
    in_migration: &BTreeSet<String>,
    v: &mut Violations,
) {
    use crate::probe::sanlock::LeaseMode;
    for d in map.domains.iter().filter(|d| d.uses_disks()) {
        let subject = leases.subject(&d.name);
        let (dom, st) = (d.name.as_str(), d.state.name());
        match leases.mode(&d.name) {
            Some(LeaseMode::Exclusive) => {}
            Some(LeaseMode::Shared) if in_migration.contains(&d.name) => {}
            Some(LeaseMode::Shared) => v.insert(Violation {
                invariant: LOCK_SHARED_OUTSIDE_MIGRATION,
                domain: d.name.clone(),
                subject: subject.clone(),
                message: format!(
                    "{dom} is {st} and this host holds its lease {subject} shared, with no migration of {dom} \
                     in progress: another host could join the lease and start a second copy, which corrupts \
                     its disk. Check that {dom} runs nowhere else (`vmwarden ctl status {dom}`), then make it \
                     exclusive: `vmwarden lock to-exclusive {dom}`."
                ),
            }),
            None => v.insert(Violation {
                invariant: RUNNING_WITHOUT_EXCLUSIVE_LOCK,
                domain: d.name.clone(),
                subject: subject.clone(),
                message: format!(
                    "{dom} is {st} but this host holds no lease {subject}: nothing stops another host from \
                     starting {dom} too, which corrupts its disk. Check that {dom} runs nowhere else \
                     (`vmwarden ctl status {dom}`), then take it: `vmwarden lock exclusive {dom}` (if it is \
                     refused, {dom} runs elsewhere: stop it here)."
                ),
            }),
        }
    }
    for (vm, mode) in &leases.held {
        if map.domains.iter().any(|d| &d.name == vm && d.uses_disks()) {
            continue;
        }
        let subject = leases.subject(vm);
        let defined = map.domains.iter().find(|d| &d.name == vm);
        let whose = match defined {
            Some(d) => format!("{vm} is {} here", d.state.name()),
            None => format!("no domain {vm} runs on this host"),
        };
        v.insert(Violation {
            invariant: LOCK_WITHOUT_RUNNING_DOMAIN,
            domain: defined.map(|d| d.name.clone()).unwrap_or_default(),
            subject: subject.clone(),
            message: format!(
                "this host holds the lease {subject} ({}) but {whose}. A leaked lease blocks failover: no \
                 other host can start {vm}. Check that {vm} runs nowhere (`vmwarden ctl status {vm}`), then \
                 release it: `vmwarden lock release {vm}`.",
                if *mode == LeaseMode::Exclusive { "exclusive" } else { "shared" },
            ),
        });
    }
}

/// What this node learned from one peer: the VMs active there (a qemu process exists), or why
/// the peer could not be asked. The collector asks; this module only judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerVms {
    pub node: String,
    pub active: Result<Vec<String>, String>,
}

/// Whether a VM in this libvirt state counts as running on its node for
/// `running_on_several_nodes`: a qemu process exists (`active`), except the paused end of a live
/// migration (`paused` for `migration`: the target before the switchover, the source right
/// after), which every migration shows for a moment on one of its two nodes.
pub fn counts_as_running(state: &str, reason: &str, active: bool) -> bool {
    active && !(state == "paused" && reason == "migration")
}

/// `vm` is active on each of `nodes` (this node's name and peers' names, any order): a violation
/// when that is more than one node. `subject` is the sorted node list joined by `,`.
pub fn running_on_several(vm: &str, nodes: &[String]) -> Option<Violation> {
    let set: BTreeSet<&str> = nodes.iter().map(String::as_str).collect();
    if set.len() < 2 {
        return None;
    }
    let list: Vec<&str> = set.into_iter().collect();
    let (last, first) = list.split_last()?;
    let named = format!("{} and {last}", first.join(", "));
    Some(Violation {
        invariant: RUNNING_ON_SEVERAL_NODES,
        domain: vm.to_string(),
        subject: list.join(","),
        message: format!(
            "{vm} runs on {named} at once: two qemu processes write the same disk, which corrupts it. \
             It was started behind vmwarden's back (a plain `virsh start` where the hook is off, or a \
             lock not honoured). Decide which copy to keep, then destroy every other one at once \
             (`virsh destroy {vm}` on that node) and check the disk; vmwarden refuses every start \
             of {vm} until it runs on one node only (`vmwarden ctl vms --cluster` shows where)."
        ),
    })
}

/// `running_on_several_nodes` over this node's map (`here` is its name) and what the peers said.
/// A peer that could not be asked leaves the invariant not fully checked (never silently
/// skipped); what the others said is still judged.
pub fn check_cluster(here: &str, map: &NodeMap, peers: &[PeerVms]) -> Report {
    let mut on: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut not_checked = Vec::new();
    match map.libvirt.why_not() {
        Some(why) if !peers.is_empty() => not_checked.push(NotChecked {
            invariant: RUNNING_ON_SEVERAL_NODES,
            why: format!("{why} (the VMs running here are not compared with the peers')"),
        }),
        _ => {
            for d in map
                .domains
                .iter()
                .filter(|d| counts_as_running(&d.state.name(), &d.state.reason(), d.uses_disks()))
            {
                on.entry(d.name.as_str())
                    .or_default()
                    .push(here.to_string());
            }
        }
    }
    for p in peers {
        match &p.active {
            Ok(vms) => {
                for vm in vms {
                    on.entry(vm.as_str()).or_default().push(p.node.clone());
                }
            }
            Err(why) => not_checked.push(NotChecked {
                invariant: RUNNING_ON_SEVERAL_NODES,
                why: format!("peer {} could not be asked: {why}", p.node),
            }),
        }
    }
    let mut violations: Vec<Violation> = on
        .iter()
        .filter_map(|(vm, nodes)| running_on_several(vm, nodes))
        .collect();
    violations.sort();
    Report {
        violations,
        not_checked,
    }
}

impl Report {
    /// This report with `other`'s violations and unchecked invariants added (kept sorted).
    pub fn merged(mut self, other: Report) -> Report {
        self.violations.extend(other.violations);
        self.violations.sort();
        self.violations.dedup();
        self.not_checked.extend(other.not_checked);
        self
    }
}

/// The human report `vmwarden check` prints.
pub fn format_report(r: &Report) -> String {
    let mut out = String::new();
    for v in &r.violations {
        let dom = if v.domain.is_empty() {
            "-"
        } else {
            v.domain.as_str()
        };
        out.push_str(&format!(
            "VIOLATED {} domain={} subject={}\n    {}\n",
            v.invariant, dom, v.subject, v.message
        ));
    }
    if r.violations.is_empty() {
        if r.not_checked.is_empty() {
            out.push_str("all invariants hold\n");
        } else {
            out.push_str("all invariants that could be checked hold\n");
        }
    } else {
        out.push_str(&format!(
            "{} violation(s) of the node's invariants\n",
            r.violations.len()
        ));
    }
    for n in &r.not_checked {
        out.push_str(&format!("NOT CHECKED {}: {}\n", n.invariant, n.why));
    }
    out
}
