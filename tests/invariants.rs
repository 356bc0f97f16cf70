//! Node map and invariants on hand-built snapshots: the real lvm fixtures of host h1 (vm1 ex,
//! vm2 sh, vm3/vm4 unlocked in shared vg1; data, scratch in local vg_local), DRBD 8.4 fixtures,
//! and libvirt domains made here. Plus the golden rendering of the invariant families.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{fixture, golden, render, sorted_metrics};
use vmwarden::collect::{CollectorReport, Outcome, Snapshot};
use vmwarden::invariants::{
    check, format_report, Report, ALL, DRBD_NOT_UPTODATE, DRBD_SPLIT_BRAIN,
    LOCK_SHARED_OUTSIDE_MIGRATION, LOCK_WITHOUT_RUNNING_DOMAIN, RUNNING_WITHOUT_EXCLUSIVE_LOCK,
};
use vmwarden::node::NodeMap;
use vmwarden::probe::drbd::{parse_proc_drbd, DiskState, DrbdSnapshot};
use vmwarden::probe::libvirt::{
    Disk, DomainState, LibvirtDomain, LibvirtSnapshot, PausedReason, RunningReason, ShutoffReason,
};
use vmwarden::probe::lvm::{
    parse_fullreport, parse_lockctl_info, LockMode, LockdStatus, LvLock, LvmSnapshot,
};
use vmwarden::probe::sanlock::{LeaseMode, Resource, SanlockSnapshot};

const RUNNING: DomainState = DomainState::Running(RunningReason::Booted);
const SHUTOFF: DomainState = DomainState::Shutoff(ShutoffReason::Shutdown);

fn ok<T>(v: T) -> CollectorReport<T> {
    CollectorReport {
        outcome: Outcome::Ok(v),
        duration: Duration::from_millis(1),
    }
}

fn failed<T>() -> CollectorReport<T> {
    CollectorReport {
        outcome: Outcome::Failed("timed out".into()),
        duration: Duration::from_millis(1),
    }
}

/// h1's LVM view as the probe builds it (None = lvmlockd unavailable).
fn h1_lvm(lockd: bool) -> LvmSnapshot {
    let rep = parse_fullreport(&fixture("lvm/h1-fullreport.json")).unwrap();
    LvmSnapshot {
        vgs: rep.value.vgs,
        lvs: rep.value.lvs,
        lockd: if lockd {
            LockdStatus::Up(parse_lockctl_info(&fixture("lvm/h1-lvmlockctl-info.txt")).value)
        } else {
            LockdStatus::Unavailable(
                "`lvmlockctl --info` failed: Cannot connect to lvmlockd.".into(),
            )
        },
    }
}

fn drbd(file: &str) -> DrbdSnapshot {
    parse_proc_drbd(&fixture(file)).value
}

fn dom(name: &str, state: DomainState, sources: &[&str]) -> LibvirtDomain {
    LibvirtDomain {
        name: name.into(),
        state,
        disks: sources
            .iter()
            .enumerate()
            .map(|(i, s)| Disk {
                target: format!("vd{}", (b'a' + i as u8) as char),
                device: "disk".into(),
                source_type: "block".into(),
                source: Some(s.to_string()),
                stats: None,
            })
            .collect(),
        ..Default::default()
    }
}

fn snap(domains: Vec<LibvirtDomain>, lvm: LvmSnapshot, drbd_snap: DrbdSnapshot) -> Snapshot {
    Snapshot {
        drbd: ok(drbd_snap),
        lvm: ok(lvm),
        sanlock: ok(Default::default()),
        libvirt: ok(LibvirtSnapshot {
            domains,
            reconnects: 0,
            ..Default::default()
        }),
    }
}

fn run(s: &Snapshot, migrating: &[&str]) -> Report {
    let m: BTreeSet<String> = migrating.iter().map(|s| s.to_string()).collect();
    check(&NodeMap::build(s), &m)
}

/// (invariant, domain, subject) of every violation.
fn found(r: &Report) -> Vec<(&str, &str, &str)> {
    r.violations
        .iter()
        .map(|v| (v.invariant, v.domain.as_str(), v.subject.as_str()))
        .collect()
}

#[test]
fn map_resolves_lv_paths_dm_names_and_drbd() {
    let mut lvm = h1_lvm(true);
    // An LV and VG with dashes, to exercise device-mapper's `--` escaping.
    let mut dashed = lvm.lvs[0].clone();
    dashed.vg = "vg_local".into();
    dashed.name = "vm-disk-0".into();
    dashed.uuid = "dashed".into();
    dashed.path = String::new();
    dashed.dm_path = String::new();
    lvm.lvs.push(dashed);
    let s = snap(
        vec![dom(
            "vm1",
            RUNNING,
            &[
                "/dev/vg1/vm1",
                "/dev/mapper/vg1-vm2",
                "/dev/mapper/vg_local-vm--disk--0",
                "/var/lib/libvirt/images/a.qcow2",
                "/dev/drbd1",
                "/dev/drbd/by-res/drbd0/0",
                "/dev/vg1/nosuch",
            ],
        )],
        lvm,
        drbd("drbd/proc84_synctarget.txt"),
    );
    let map = NodeMap::build(&s);
    let d = &map.domains[0];
    let lv = |i: usize| map.lv(&d.disks[i]).map(|l| (l.full_name(), l.lock));
    assert_eq!(lv(0), Some(("vg1/vm1".into(), LvLock::Known(LockMode::Ex))));
    assert_eq!(lv(1), Some(("vg1/vm2".into(), LvLock::Known(LockMode::Sh))));
    assert_eq!(
        lv(2),
        Some(("vg_local/vm-disk-0".into(), LvLock::NotShared))
    );
    assert_eq!(lv(3), None);
    assert_eq!(lv(6), None);
    assert!(map.lv(&d.disks[0]).unwrap().shared_vg);
    assert!(d.disks[0].drbd.is_empty());
    assert_eq!(d.disks[4].drbd.len(), 1);
    assert_eq!(d.disks[4].drbd[0].minor, 1);
    assert_eq!(d.disks[4].drbd[0].disk_state, DiskState::Inconsistent);
    assert_eq!(d.disks[5].drbd[0].minor, 0);
    // The reported dm path resolves too.
    assert_eq!(
        vmwarden::node::resolve_lv("/dev/mapper/vg1-vm3", Some(&h1_lvm(true))),
        Some(2)
    );
}

#[test]
fn leaked_locks_are_reported_with_the_lv_and_the_fix() {
    let r = run(&snap(vec![], h1_lvm(true), DrbdSnapshot::default()), &[]);
    assert_eq!(
        found(&r),
        vec![
            (LOCK_WITHOUT_RUNNING_DOMAIN, "", "vg1/vm1"),
            (LOCK_WITHOUT_RUNNING_DOMAIN, "", "vg1/vm2"),
        ]
    );
    assert!(r.violations[0].message.contains("lvchange -an vg1/vm1"));
    assert!(r.violations[0].message.contains("exclusive"));
    assert!(r.violations[0].message.contains("blocks failover"));
    assert!(r.not_checked.is_empty());
}

#[test]
fn a_stopped_domain_on_a_locked_lv_is_named() {
    let s = snap(
        vec![
            dom("vm1", SHUTOFF, &["/dev/vg1/vm1"]),
            dom("vm2", RUNNING, &["/dev/vg1/vm2"]),
        ],
        h1_lvm(true),
        DrbdSnapshot::default(),
    );
    let r = run(&s, &["vm2"]);
    assert_eq!(
        found(&r),
        vec![(LOCK_WITHOUT_RUNNING_DOMAIN, "vm1", "vg1/vm1")]
    );
    assert!(r.violations[0].message.contains("vm1 is shutoff"));
}

#[test]
fn exclusive_lock_with_running_domain_holds() {
    let s = snap(
        vec![
            dom("vm1", RUNNING, &["/dev/vg1/vm1", "/dev/vg_local/data"]),
            dom(
                "vm2",
                DomainState::Paused(PausedReason::User),
                &["/dev/mapper/vg1-vm2"],
            ),
        ],
        h1_lvm(true),
        DrbdSnapshot::default(),
    );
    // vm2 is shared: fine only while migrating.
    assert_eq!(found(&run(&s, &["vm2"])), vec![]);
    let r = run(&s, &[]);
    assert_eq!(
        found(&r),
        vec![(LOCK_SHARED_OUTSIDE_MIGRATION, "vm2", "vg1/vm2")]
    );
    assert!(r.violations[0].message.contains("lvchange -aey vg1/vm2"));
}

#[test]
fn running_on_an_unlocked_lv_is_reported() {
    let s = snap(
        vec![
            dom("vm1", RUNNING, &["/dev/vg1/vm1"]),
            dom("vm2", RUNNING, &["/dev/vg1/vm2"]),
            dom("vm3", RUNNING, &["/dev/vg1/vm3", "/dev/vg1/vm3"]),
        ],
        h1_lvm(true),
        DrbdSnapshot::default(),
    );
    // Migration does not excuse no lock at all; the same LV twice is one violation.
    let r = run(&s, &["vm2", "vm3"]);
    assert_eq!(
        found(&r),
        vec![(RUNNING_WITHOUT_EXCLUSIVE_LOCK, "vm3", "vg1/vm3")]
    );
    assert!(r.violations[0].message.contains("holds no lock on vg1/vm3"));
}

#[test]
fn drbd_backing_must_be_uptodate() {
    let doms = vec![
        dom("a", RUNNING, &["/dev/drbd0"]),
        dom("b", RUNNING, &["/dev/drbd/by-res/drbd1/0"]),
        dom("c", SHUTOFF, &["/dev/drbd0"]),
    ];
    let r = run(
        &snap(
            doms.clone(),
            LvmSnapshot::default(),
            drbd("drbd/proc84_synctarget.txt"),
        ),
        &[],
    );
    assert_eq!(
        found(&r),
        vec![
            (DRBD_NOT_UPTODATE, "a", "drbd0/0"),
            (DRBD_NOT_UPTODATE, "b", "drbd1/0"),
        ]
    );
    assert!(r.violations[0].message.contains("Inconsistent"));
    let r = run(
        &snap(
            doms,
            LvmSnapshot::default(),
            drbd("drbd/proc84_connected_primary_primary.txt"),
        ),
        &[],
    );
    assert_eq!(found(&r), vec![]);
}

#[test]
fn an_lv_on_drbd_brings_its_drbd_state() {
    let mut lvm = h1_lvm(true);
    for lv in &mut lvm.lvs {
        lv.devices = lv.devices.replace("/dev/loop1", "/dev/drbd1");
    }
    let s = snap(
        vec![dom("vm1", RUNNING, &["/dev/vg1/vm1"])],
        lvm,
        drbd("drbd/proc84_synctarget.txt"),
    );
    let r = run(&s, &[]);
    assert!(
        found(&r).contains(&(DRBD_NOT_UPTODATE, "vm1", "drbd1/0")),
        "{r:?}"
    );
}

#[test]
fn a_failed_libvirt_collector_judges_nothing() {
    let mut s = snap(vec![], h1_lvm(true), drbd("drbd/proc84_synctarget.txt"));
    s.libvirt = failed();
    let r = run(&s, &[]);
    assert_eq!(found(&r), vec![]);
    let skipped: Vec<&str> = r.not_checked.iter().map(|n| n.invariant).collect();
    // Split brain is DRBD's alone: judged without libvirt; running_on_several_nodes is judged
    // with the peers' answers (check_cluster, below).
    assert_eq!(skipped.len(), ALL.len() - 2, "{r:?}");
    assert!(r.checked(DRBD_SPLIT_BRAIN));
    assert!(r.not_checked[0].why.contains("libvirt collector failed"));
    assert!(format_report(&r).contains("NOT CHECKED lock_without_running_domain"));
}

#[test]
fn a_failed_lvm_collector_leaves_lock_invariants_unjudged() {
    let mut s = snap(
        vec![
            dom("vm3", RUNNING, &["/dev/vg1/vm3"]),
            dom("a", RUNNING, &["/dev/drbd0"]),
        ],
        LvmSnapshot::default(),
        drbd("drbd/proc84_synctarget.txt"),
    );
    s.lvm = failed();
    let r = run(&s, &[]);
    // Direct DRBD disks are still judged.
    assert_eq!(found(&r), vec![(DRBD_NOT_UPTODATE, "a", "drbd0/0")]);
    assert!(!r.checked(RUNNING_WITHOUT_EXCLUSIVE_LOCK));
    assert!(!r.checked(LOCK_WITHOUT_RUNNING_DOMAIN));
    assert!(!r.checked(LOCK_SHARED_OUTSIDE_MIGRATION));
    assert!(
        !r.checked(DRBD_NOT_UPTODATE),
        "LVs over DRBD were not judged"
    );
}

#[test]
fn lvmlockd_unavailable_leaves_lock_invariants_unjudged() {
    let s = snap(
        vec![dom("vm3", RUNNING, &["/dev/vg1/vm3"])],
        h1_lvm(false),
        DrbdSnapshot::default(),
    );
    let r = run(&s, &[]);
    assert_eq!(found(&r), vec![]);
    assert!(!r.checked(LOCK_WITHOUT_RUNNING_DOMAIN));
    assert!(r.not_checked[0].why.contains("Cannot connect to lvmlockd"));
    assert!(r.checked(DRBD_NOT_UPTODATE));
}

#[test]
fn a_failed_drbd_collector_leaves_drbd_unjudged_and_absent_drbd_holds() {
    let doms = vec![dom("a", RUNNING, &["/dev/drbd0"])];
    let mut s = snap(doms, h1_lvm(true), DrbdSnapshot::default());
    s.drbd = failed();
    let r = run(&s, &["x"]);
    assert!(!r.checked(DRBD_NOT_UPTODATE));
    assert!(r.checked(LOCK_WITHOUT_RUNNING_DOMAIN));
    s.drbd = CollectorReport {
        outcome: Outcome::Absent("no DRBD".into()),
        duration: Duration::ZERO,
    };
    let r = run(&s, &[]);
    assert!(r.checked(DRBD_NOT_UPTODATE));
}

#[test]
fn all_clear_says_so() {
    let s = snap(
        vec![dom("f", RUNNING, &["/var/lib/libvirt/images/f.raw"])],
        LvmSnapshot::default(),
        DrbdSnapshot::default(),
    );
    let r = run(&s, &[]);
    assert_eq!(format_report(&r), "all invariants hold\n");
}

/// The invariant families for h1 with vm3 running unlocked, vm2 shared outside a migration and
/// a domain on an Inconsistent DRBD volume, plus the lvm collector's lock view.
fn golden_snapshot() -> Snapshot {
    snap(
        vec![
            dom("vm2", RUNNING, &["/dev/vg1/vm2"]),
            dom("vm3", RUNNING, &["/dev/vg1/vm3"]),
            dom("a", RUNNING, &["/dev/drbd0"]),
        ],
        h1_lvm(true),
        drbd("drbd/proc84_synctarget.txt"),
    )
}

#[test]
fn golden_rendering() {
    let r = run(&golden_snapshot(), &[]);
    let text = render(|reg| vmwarden::metrics::invariants::encode(reg, &r));
    golden("invariants/h1.metrics", &sorted_metrics(&text));
}

#[test]
fn the_agent_rendering_carries_the_invariants() {
    let obs = vmwarden::collect::Observation::judge(golden_snapshot(), None, &Default::default());
    let text = vmwarden::metrics::render(&obs, &Default::default()).to_openmetrics();
    assert!(text.contains(
        "vmwarden_invariant_violation{invariant=\"lock_without_running_domain\",domain=\"\",subject=\"vg1/vm1\"} 1"
    ), "{text}");
    assert!(text.contains("vmwarden_invariant_checked{invariant=\"drbd_not_uptodate\"} 1"));
}

fn lease(vm: &str, mode: LeaseMode) -> Resource {
    Resource {
        lockspace: "vmwarden".into(),
        name: vm.into(),
        mode,
        ..Default::default()
    }
}

/// The sanlock lease backend: a VM's lock is its lease `vmwarden:VM` in `client status`.
#[test]
fn lease_backend_judges_leases() {
    let mut s = snap(
        vec![
            dom("ok", RUNNING, &["/var/lib/vms/ok.img"]),
            dom("bare", RUNNING, &["/var/lib/vms/bare.img"]),
            dom("half", RUNNING, &["/var/lib/vms/half.img"]),
            dom("moving", RUNNING, &["/var/lib/vms/moving.img"]),
            dom("stopped", SHUTOFF, &["/var/lib/vms/stopped.img"]),
        ],
        LvmSnapshot::default(),
        DrbdSnapshot::default(),
    );
    s.lvm = failed();
    s.sanlock = ok(SanlockSnapshot {
        resources: vec![
            lease("ok", LeaseMode::Exclusive),
            lease("half", LeaseMode::Shared),
            lease("moving", LeaseMode::Shared),
            lease("stopped", LeaseMode::Exclusive),
            lease("gone", LeaseMode::Shared),
            Resource {
                lockspace: "lvm_vg1".into(),
                name: "bare".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    let migrating: BTreeSet<String> = ["moving".to_string()].into();
    let r = check(
        &NodeMap::build_with_leases(&s, Some("vmwarden")),
        &migrating,
    );
    assert_eq!(
        found(&r),
        vec![
            (LOCK_SHARED_OUTSIDE_MIGRATION, "half", "vmwarden:half"),
            (LOCK_WITHOUT_RUNNING_DOMAIN, "", "vmwarden:gone"),
            (LOCK_WITHOUT_RUNNING_DOMAIN, "stopped", "vmwarden:stopped"),
            (RUNNING_WITHOUT_EXCLUSIVE_LOCK, "bare", "vmwarden:bare"),
        ]
    );
    // lvm failing does not leave the lock invariants unchecked: the leases are the locks.
    for inv in [
        RUNNING_WITHOUT_EXCLUSIVE_LOCK,
        LOCK_WITHOUT_RUNNING_DOMAIN,
        LOCK_SHARED_OUTSIDE_MIGRATION,
    ] {
        assert!(r.checked(inv), "{inv}: {r:?}");
    }
    assert!(format_report(&r).contains("vmwarden lock release gone"));

    // Without sanlock observations nothing about leases may be concluded.
    s.sanlock = failed();
    let r = check(
        &NodeMap::build_with_leases(&s, Some("vmwarden")),
        &migrating,
    );
    assert_eq!(found(&r), vec![]);
    assert!(!r.checked(RUNNING_WITHOUT_EXCLUSIVE_LOCK));
    assert!(
        r.not_checked[0].why.contains("VM leases in vmwarden"),
        "{r:?}"
    );
}

#[test]
fn split_brain_is_a_violation_with_the_way_out() {
    let mut d = drbd("drbd/proc84_standalone.txt");
    d.volumes[0].split_brain = Some("r0".into());
    let s = snap(vec![], LvmSnapshot::default(), d);
    let r = run(&s, &[]);
    let sb: Vec<_> = r
        .violations
        .iter()
        .filter(|v| v.invariant == DRBD_SPLIT_BRAIN)
        .collect();
    assert_eq!(sb.len(), 1, "{r:?}");
    assert!(
        sb[0].message.contains("connect --discard-my-data r0"),
        "{}",
        sb[0].message
    );
    let mut s = s;
    s.drbd = failed();
    assert!(!run(&s, &[]).checked(DRBD_SPLIT_BRAIN));
}

// ---------------------------------------------------------------------------------------------
// running_on_several_nodes: this node's map and what the peers said.

fn peer(node: &str, active: Result<&[&str], &str>) -> vmwarden::invariants::PeerVms {
    vmwarden::invariants::PeerVms {
        node: node.into(),
        active: active
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .map_err(str::to_string),
    }
}

#[test]
fn a_vm_running_here_and_on_a_peer_is_a_violation_naming_both() {
    use vmwarden::invariants::{check_cluster, RUNNING_ON_SEVERAL_NODES};
    // golden_snapshot's vm2 runs here (h1).
    let map = vmwarden::node::NodeMap::build(&golden_snapshot());
    let running_here: Vec<&str> = map
        .domains
        .iter()
        .filter(|d| d.uses_disks())
        .map(|d| d.name.as_str())
        .collect();
    assert!(running_here.contains(&"vm2"), "{running_here:?}");
    let r = check_cluster("h1", &map, &[peer("h2", Ok(&["vm2", "other"]))]);
    assert_eq!(found(&r), vec![(RUNNING_ON_SEVERAL_NODES, "vm2", "h1,h2")]);
    assert!(r.violations[0]
        .message
        .contains("vm2 runs on h1 and h2 at once"));
    assert!(r.not_checked.is_empty() && r.checked(RUNNING_ON_SEVERAL_NODES));
    // Three nodes: all named, sorted; one VM on two peers is seen here too.
    let r = check_cluster(
        "h1",
        &map,
        &[peer("h3", Ok(&["vm2", "x"])), peer("h2", Ok(&["vm2", "x"]))],
    );
    assert_eq!(
        found(&r),
        vec![
            (RUNNING_ON_SEVERAL_NODES, "vm2", "h1,h2,h3"),
            (RUNNING_ON_SEVERAL_NODES, "x", "h2,h3")
        ]
    );
    assert!(r.violations[0].message.contains("h1, h2 and h3"));
    // Nowhere else: none; no peers at all: checked, nothing to compare.
    assert!(check_cluster("h1", &map, &[peer("h2", Ok(&["other"]))])
        .violations
        .is_empty());
    let r = check_cluster("h1", &map, &[]);
    assert!(r.violations.is_empty() && r.checked(RUNNING_ON_SEVERAL_NODES));
}

#[test]
fn an_unreachable_peer_leaves_it_unchecked_never_silently() {
    use vmwarden::invariants::{check_cluster, RUNNING_ON_SEVERAL_NODES};
    let map = vmwarden::node::NodeMap::build(&golden_snapshot());
    let r = check_cluster(
        "h1",
        &map,
        &[
            peer(
                "h2",
                Err("cannot reach the agent at http://h2:10177: refused"),
            ),
            peer("h3", Ok(&["vm2"])),
        ],
    );
    assert!(!r.checked(RUNNING_ON_SEVERAL_NODES));
    assert!(
        r.not_checked[0].why.contains("peer h2 could not be asked")
            && r.not_checked[0].why.contains("refused")
    );
    // What h3 said is still judged.
    assert_eq!(found(&r), vec![(RUNNING_ON_SEVERAL_NODES, "vm2", "h1,h3")]);
    // This node's libvirt unread: not compared, said so.
    let mut s = golden_snapshot();
    s.libvirt = failed();
    let r = check_cluster(
        "h1",
        &vmwarden::node::NodeMap::build(&s),
        &[peer("h2", Ok(&["vm2"]))],
    );
    assert!(r.violations.is_empty());
    assert!(
        r.not_checked[0].why.contains("libvirt collector failed"),
        "{r:?}"
    );
}

#[test]
fn the_paused_end_of_a_live_migration_does_not_count() {
    use vmwarden::invariants::counts_as_running;
    assert!(counts_as_running("running", "booted", true));
    assert!(counts_as_running("paused", "user", true));
    assert!(!counts_as_running("paused", "migration", true));
    assert!(!counts_as_running("shutoff", "destroyed", false));
}

#[test]
fn the_agent_rendering_exports_the_peers_and_the_cluster_violation() {
    let obs = vmwarden::collect::Observation::judge(golden_snapshot(), None, &Default::default())
        .with_peers(
            "h1",
            vec![peer("h2", Ok(&["vm2"])), peer("h3", Err("timeout"))],
        );
    let text = vmwarden::metrics::render(&obs, &Default::default()).to_openmetrics();
    for want in [
        "vmwarden_invariant_violation{invariant=\"running_on_several_nodes\",domain=\"vm2\",subject=\"h1,h2\"} 1",
        "vmwarden_invariant_checked{invariant=\"running_on_several_nodes\"} 0",
        "vmwarden_peer_up{peer=\"h2\"} 1",
        "vmwarden_peer_up{peer=\"h3\"} 0",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    // The node's own violations are still there, sorted with the new one.
    assert!(text.contains("invariant=\"lock_without_running_domain\""));
}

/// What a live migration's target reports about the DRBD under disks it does not run yet
/// (`node::drbd_problems_under`, the preflight's `drbd_problems`): direct DRBD paths and LVs on
/// DRBD physical volumes, judged like the watchdog's resume; an unknown state is a problem where
/// a disk is known to be on DRBD, nothing where DRBD is off.
#[test]
fn a_migration_target_reports_the_drbd_under_the_disks() {
    use vmwarden::node::drbd_problems_under;
    let paths = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut lvm = h1_lvm(true);
    for lv in &mut lvm.lvs {
        lv.devices = lv.devices.replace("/dev/loop1", "/dev/drbd1");
    }
    let lvm = Outcome::Ok(lvm);
    let syncing = Outcome::Ok(drbd("drbd/proc84_synctarget.txt"));
    let healthy = Outcome::Ok(drbd("drbd/proc84_connected_primary_primary.txt"));

    // An LV on /dev/drbd1, and /dev/drbd0 itself, both Inconsistent (SyncTarget) here.
    let p = drbd_problems_under(&syncing, &lvm, &paths(&["/dev/vg1/vm1", "/dev/drbd0"]));
    assert!(
        p.iter()
            .any(|x| x.contains("drbd1/0") && x.contains("Inconsistent")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|x| x.contains("drbd0/0") && x.contains("Inconsistent")),
        "{p:?}"
    );
    // Connected, UpToDate on both sides: nothing.
    let p = drbd_problems_under(&healthy, &lvm, &paths(&["/dev/vg1/vm1", "/dev/drbd0"]));
    assert!(p.is_empty(), "{p:?}");
    // A local LV not on DRBD: nothing, whatever DRBD says.
    let p = drbd_problems_under(&syncing, &lvm, &paths(&["/dev/vg_local/data"]));
    assert!(p.is_empty(), "{p:?}");
    // A minor DRBD does not list here.
    let p = drbd_problems_under(&healthy, &lvm, &paths(&["/dev/drbd7"]));
    assert!(p.iter().any(|x| x.contains("drbd7")), "{p:?}");
    // DRBD not read: a problem for a disk on DRBD, never a pass; the collector off: nothing.
    let failed_drbd = Outcome::Failed("timed out".into());
    let p = drbd_problems_under(&failed_drbd, &lvm, &paths(&["/dev/vg1/vm1"]));
    assert!(
        p.iter()
            .any(|x| x.contains("not known") && x.contains("timed out")),
        "{p:?}"
    );
    let p = drbd_problems_under(&Outcome::Disabled, &lvm, &paths(&["/dev/vg1/vm1"]));
    assert!(p.is_empty(), "{p:?}");
}
