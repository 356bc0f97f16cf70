//! vmwarden's parsers over text the real stack printed: tests/fixtures/real/, captured in the
//! storage lab (`make storage-lab-capture`, docs/storage-lab.md) from Debian 12's lvm2 + lvmlockd,
//! sanlock and the DRBD 8.4.11 kernel module (versions in tests/fixtures/real/VERSIONS). Fast: no
//! lab needed. Guests: sa = sanlock host_id 1, sb = host_id 2; shared VG vg1 with lv1..lv3.

mod support;

use vmwarden::probe::drbd::{parse_proc_drbd, ConnState, DiskState, DrbdSnapshot, ReplState, Role};
use vmwarden::probe::lvm::{
    parse_fullreport, parse_lockctl_info, Activity, LockMode, LockdStatus, LvState, LvmSnapshot,
};
use vmwarden::probe::sanlock::{parse_gets, parse_status, HostState, LeaseMode};

fn real(name: &str) -> String {
    support::fixture(&format!("real/{name}"))
}

fn drbd(name: &str) -> DrbdSnapshot {
    let p = parse_proc_drbd(&real(name));
    assert!(p.errors.is_empty(), "{name}: {:?}", p.errors);
    assert_eq!(p.value.version.as_deref(), Some("8.4.11"), "{name}");
    assert_eq!(p.value.volumes.len(), 1, "{name}");
    p.value
}

/// (connection, replication, role, peer role, disk, peer disk) of minor 0.
fn drbd_states(name: &str) -> (ConnState, ReplState, Role, Role, DiskState, DiskState) {
    let s = drbd(name);
    let v = &s.volumes[0];
    assert_eq!(v.minor, 0);
    let p = &v.peers[0];
    (
        p.connection.clone(),
        p.replication.clone(),
        v.role.clone(),
        p.role.clone(),
        v.disk_state.clone(),
        p.disk_state.clone(),
    )
}

#[test]
fn drbd84_connected_secondary_inconsistent() {
    assert_eq!(
        drbd_states("proc-drbd-connected-secondary-inconsistent.txt"),
        (
            ConnState::Connected,
            ReplState::Established,
            Role::Secondary,
            Role::Secondary,
            DiskState::Inconsistent,
            DiskState::Inconsistent
        )
    );
}

#[test]
fn drbd84_sync_source_and_target() {
    let (c, r, role, peer_role, d, pd) = drbd_states("proc-drbd-syncsource.txt");
    assert_eq!((c, r), (ConnState::Connected, ReplState::SyncSource));
    assert_eq!((role, peer_role), (Role::Primary, Role::Secondary));
    assert_eq!((d, pd), (DiskState::UpToDate, DiskState::Inconsistent));
    let (c, r, role, peer_role, d, pd) = drbd_states("proc-drbd-synctarget.txt");
    assert_eq!((c, r), (ConnState::Connected, ReplState::SyncTarget));
    assert_eq!((role, peer_role), (Role::Secondary, Role::Primary));
    assert_eq!((d, pd), (DiskState::Inconsistent, DiskState::UpToDate));

    for name in ["proc-drbd-syncsource.txt", "proc-drbd-synctarget.txt"] {
        let s = drbd(name);
        let p = &s.volumes[0].peers[0];
        let rs = p
            .resync
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no resync"));
        let ratio = rs.done_ratio.unwrap_or(f64::NAN);
        assert!(ratio > 0.0 && ratio < 1.0, "{name}: ratio {ratio}");
        // 64 MiB device with internal metadata: the whole of it is being synced.
        let total = rs.total_bytes.expect("total");
        assert!(
            (60 << 20..=64 << 20).contains(&total),
            "{name}: total {total}"
        );
        let remaining = rs.remaining_bytes.expect("remaining");
        assert!(remaining < total, "{name}");
        // The ratio comes from the exact amounts, not DRBD's printed "sync'ed: P%": DRBD 8.4
        // computes P from (left >> 10) and (total >> 10) in 4 KiB bitmap bits, so on this 64 MiB
        // device P moves in steps of 1/16 ("25.0% (53208/65496)K" is 18.8 % done).
        let exact = 1.0 - remaining as f64 / total as f64;
        assert!(
            (ratio - exact).abs() < 1e-9,
            "{name}: ratio {ratio} vs exact {exact}"
        );
        // Fixed resync rate 3 MiB/s (r0.res: c-plan-ahead 0; resync-rate 3M).
        let speed = rs.speed_bytes_per_second.expect("speed");
        assert!(
            (1 << 20..=4 << 20).contains(&speed),
            "{name}: speed {speed}"
        );
        assert!(p.out_of_sync_bytes.unwrap_or(0) > 0, "{name}");
    }
}

#[test]
fn drbd84_primary_primary() {
    assert_eq!(
        drbd_states("proc-drbd-connected-primary-primary.txt"),
        (
            ConnState::Connected,
            ReplState::Established,
            Role::Primary,
            Role::Primary,
            DiskState::UpToDate,
            DiskState::UpToDate
        )
    );
    let s = drbd("proc-drbd-connected-primary-primary.txt");
    let p = &s.volumes[0].peers[0];
    assert!(p.resync.is_none());
    assert_eq!(p.out_of_sync_bytes, Some(0));
    // sa sent the whole 64 MiB device (minus DRBD's internal metadata) during the initial sync.
    assert!(p.sent_bytes.unwrap_or(0) >= 60 << 20, "{:?}", p.sent_bytes);
}

#[test]
fn drbd84_disconnected() {
    let (c, r, role, peer_role, d, pd) = drbd_states("proc-drbd-standalone.txt");
    assert_eq!((c, r), (ConnState::StandAlone, ReplState::Off));
    assert_eq!((role, peer_role), (Role::Primary, Role::Unknown));
    assert_eq!((d, pd), (DiskState::UpToDate, DiskState::DUnknown));
    let (c, _, role, peer_role, d, pd) = drbd_states("proc-drbd-wfconnection.txt");
    assert_eq!(c, ConnState::WFConnection);
    assert_eq!((role, peer_role), (Role::Primary, Role::Unknown));
    assert_eq!((d, pd), (DiskState::UpToDate, DiskState::DUnknown));
}

#[test]
fn drbd84_split_brain_is_standalone_on_both() {
    for name in [
        "proc-drbd-split-brain-sa.txt",
        "proc-drbd-split-brain-sb.txt",
    ] {
        let (c, r, role, peer_role, d, _) = drbd_states(name);
        assert_eq!((c, r), (ConnState::StandAlone, ReplState::Off), "{name}");
        assert_eq!((role, peer_role), (Role::Primary, Role::Unknown), "{name}");
        assert_eq!(d, DiskState::UpToDate, "{name}");
        // /proc/drbd itself says nothing about the split brain (the handler marker does).
        assert_eq!(drbd(name).volumes[0].split_brain, None, "{name}");
    }
    let dmesg = real("dmesg-split-brain-sa.txt");
    assert!(
        dmesg.contains("Split-Brain detected but unresolved, dropping connection!"),
        "{dmesg}"
    );
}

/// lv1's uuid (its sanlock resource name), from the captured report.
fn lv1_uuid() -> String {
    let r = parse_fullreport(&real("lvm-fullreport-lv1-ex.json")).unwrap();
    let lv1 = r.value.lvs.into_iter().find(|l| l.name == "lv1").unwrap();
    assert_eq!(lv1.uuid.len(), 38, "lvm uuid format: {}", lv1.uuid);
    lv1.uuid
}

fn lvm(report: &str, lockd: &str) -> LvmSnapshot {
    let r = parse_fullreport(&real(report)).unwrap_or_else(|e| panic!("{report}: {e}"));
    assert!(r.errors.is_empty(), "{report}: {:?}", r.errors);
    let l = parse_lockctl_info(&real(lockd));
    assert!(l.errors.is_empty(), "{lockd}: {:?}", l.errors);
    LvmSnapshot {
        vgs: r.value.vgs,
        lvs: r.value.lvs,
        lockd: LockdStatus::Up(l.value),
    }
}

fn state_of(s: &LvmSnapshot, name: &str) -> LvState {
    let lv = s.lvs.iter().find(|l| l.name == name).expect(name);
    s.lv_state(lv)
}

#[test]
fn lvm_real_shared_vg_and_lv_lock_modes() {
    // lv1 exclusive on sa.
    let ex = lvm("lvm-fullreport-lv1-ex.json", "lvmlockctl-info-lv1-ex.txt");
    let vg = ex.vg("vg1").expect("vg1");
    assert!(vg.is_shared());
    assert_eq!(vg.lock_type, "sanlock");
    assert_eq!(vg.lock_args, "1.0.0:lvmlock");
    assert_eq!(ex.lvs.len(), 3, "the hidden lvmlock LV is not listed");
    let lv1 = ex.lvs.iter().find(|l| l.name == "lv1").unwrap();
    assert_eq!(lv1.size_bytes, Some(64 << 20));
    assert_eq!(lv1.activity, Activity::Active);
    assert_eq!(lv1.lock_args, "1.0.0:70254592", "first LV lease at 67 MiB");
    assert_eq!(lv1.path, "/dev/vg1/lv1");
    assert_eq!(lv1.dm_path, "/dev/mapper/vg1-lv1");
    assert_eq!(lv1.devices, "/dev/vdb(64)");
    assert_eq!(state_of(&ex, "lv1"), LvState::Exclusive);
    assert_eq!(state_of(&ex, "lv2"), LvState::Inactive);
    assert_eq!(state_of(&ex, "lv3"), LvState::Inactive);

    // lv1 shared by both, seen from sb: lvs says "active exclusively" all the same.
    let sh = lvm("lvm-fullreport-lv1-sh.json", "lvmlockctl-info-lv1-sh.txt");
    let lv1 = sh.lvs.iter().find(|l| l.name == "lv1").unwrap();
    assert_eq!(
        lv1.active_exclusively,
        Some(true),
        "the trap: lvs reports a shared LV as active exclusively"
    );
    assert_eq!(state_of(&sh, "lv1"), LvState::Shared);
    assert_eq!(state_of(&sh, "lv2"), LvState::Inactive);
}

#[test]
fn lvmlockctl_info_real() {
    let ex = parse_lockctl_info(&real("lvmlockctl-info-lv1-ex.txt")).value;
    let sh = parse_lockctl_info(&real("lvmlockctl-info-lv1-sh.txt")).value;
    for (info, mode) in [(&ex, LockMode::Ex), (&sh, LockMode::Sh)] {
        assert_eq!(info.vgs.len(), 1);
        let vg = &info.vgs[0];
        assert_eq!(vg.vg_name, "vg1");
        assert_eq!(vg.lock_type, "sanlock");
        assert_eq!(vg.lockspace, "lvm_vg1");
        let lv1_uuid = lv1_uuid();
        assert_eq!(
            vg.lv_locks
                .iter()
                .find(|(u, _)| *u == lv1_uuid)
                .map(|(_, m)| *m),
            Some(mode)
        );
    }
    // The host that has touched lv2/lv3 keeps `un` entries for them.
    assert!(
        ex.vgs[0]
            .lv_locks
            .iter()
            .filter(|(_, m)| *m == LockMode::Un)
            .count()
            >= 2
    );
}

#[test]
fn sanlock_status_real_lv_leases() {
    let lv1_uuid = lv1_uuid();
    for (name, host_id, mode, lver) in [
        ("sanlock-status-D-lv1-ex.txt", 1, LeaseMode::Exclusive, true),
        ("sanlock-status-D-lv1-sh.txt", 2, LeaseMode::Shared, false),
    ] {
        let p = parse_status(&real(name));
        assert!(p.errors.is_empty(), "{name}: {:?}", p.errors);
        let s = p.value;
        assert_eq!(
            s.daemon.as_ref().and_then(|d| d.version.as_deref()),
            Some("3.8.5")
        );
        let ls = s
            .lockspaces
            .iter()
            .find(|l| l.name == "lvm_vg1")
            .expect(name);
        assert_eq!(ls.host_id, host_id, "{name}");
        assert_eq!(ls.path, "/dev/mapper/vg1-lvmlock");
        assert_eq!(ls.offset, 0);
        assert_eq!(ls.io_timeout, Some(10));
        assert_eq!(ls.renewal_last_result, Some(1));
        let r = s
            .resources
            .iter()
            .find(|r| r.lockspace == "lvm_vg1" && r.name == lv1_uuid)
            .expect(name);
        assert_eq!(r.mode, mode, "{name}");
        assert_eq!(r.lver.is_some(), lver, "{name}");
        assert_eq!(r.disks[0].path, "/dev/mapper/vg1-lvmlock");
        assert_eq!(r.disks[0].offset, 70254592);
        assert_eq!(s.client_name(r.pid), "lvmlockd", "{name}");
    }
}

#[test]
fn sanlock_gets_real_both_hosts_live() {
    let p = parse_gets(&real("sanlock-gets-h1.txt"));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let ls = p
        .value
        .iter()
        .find(|l| l.name == "lvm_vg1")
        .expect("lvm_vg1");
    assert_eq!(ls.host_id, 1);
    let hosts = ls.hosts.as_ref().expect("hosts");
    let ids: Vec<(u64, &HostState)> = hosts.iter().map(|h| (h.host_id, &h.state)).collect();
    assert_eq!(ids, vec![(1, &HostState::Live), (2, &HostState::Live)]);
}

#[test]
fn lvchange_refusals_real() {
    use vmwarden::lock::lvmlockd::{classify_lvm_stderr, LvmRefusal};
    for name in [
        "lvchange-aey-held-ex-by-other.txt",
        "lvchange-aey-shared-by-both.txt",
    ] {
        let t = real(name);
        assert!(
            t.contains("LV locked by other host: vg1/lv1"),
            "{name}: {t}"
        );
        assert_eq!(classify_lvm_stderr(&t), LvmRefusal::HeldByOther, "{name}");
    }
}

#[test]
fn versions_recorded() {
    let v = real("VERSIONS");
    for want in [
        "kernel: 6.1.",
        "drbd module: version: 8.4.11",
        "lvm:",
        "sanlock:",
    ] {
        assert!(v.contains(want), "VERSIONS lacks {want:?}:\n{v}");
    }
}
