//! Golden tests of the DRBD 8.x `/proc/drbd` parser over real-format fixtures
//! (tests/fixtures/drbd/README.md says where each comes from).

use vmwarden::probe::drbd::{
    parse_proc_drbd, ConnState, DiskState, DrbdPeer, DrbdSnapshot, DrbdSource, DrbdVolume,
    ReplState, Resync, ResyncKind, Role, WriteOrdering,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

fn load(name: &str) -> DrbdSnapshot {
    let path = format!("{}/tests/fixtures/drbd/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let p = parse_proc_drbd(&text);
    assert!(
        p.errors.is_empty(),
        "{name}: unexpected errors {:?}",
        p.errors
    );
    assert_eq!(p.value.source, DrbdSource::Proc8);
    p.value
}

fn peer(v: &DrbdVolume) -> &DrbdPeer {
    assert_eq!(v.peers.len(), 1, "8.x has exactly one peer");
    &v.peers[0]
}

fn resync(v: &DrbdVolume) -> &Resync {
    peer(v).resync.as_deref().expect("resync progress")
}

#[track_caller]
fn assert_states(
    v: &DrbdVolume,
    conn: ConnState,
    repl: ReplState,
    roles: (Role, Role),
    disks: (DiskState, DiskState),
) {
    let p = peer(v);
    assert_eq!(p.connection, conn, "connection of minor {}", v.minor);
    assert_eq!(p.replication, repl, "replication of minor {}", v.minor);
    assert_eq!(
        (v.role.clone(), p.role.clone()),
        roles,
        "roles of minor {}",
        v.minor
    );
    assert_eq!(
        (v.disk_state.clone(), p.disk_state.clone()),
        disks,
        "disks of minor {}",
        v.minor
    );
}

#[test]
fn v84_connected_primary_primary() {
    let s = load("proc84_connected_primary_primary.txt");
    assert_eq!(s.version.as_deref(), Some("8.4.11"));
    assert_eq!(
        s.build.as_deref(),
        Some("srcversion: 211FB288A383ED945B83420")
    );
    assert_eq!(s.volumes.len(), 2);
    let v = &s.volumes[0];
    assert_eq!((v.minor, v.resource.as_str(), v.volume), (0, "drbd0", 0));
    assert_states(
        v,
        ConnState::Connected,
        ReplState::Established,
        (Role::Primary, Role::Primary),
        (DiskState::UpToDate, DiskState::UpToDate),
    );
    let p = peer(v);
    assert_eq!(p.name, "peer");
    assert_eq!(p.protocol, Some('C'));
    assert_eq!(p.sent_bytes, Some(1_048_576 * KIB));
    assert_eq!(p.received_bytes, Some(524_288 * KIB));
    assert_eq!(v.written_bytes, Some(1_572_864 * KIB));
    assert_eq!(v.read_bytes, Some(2_097_152 * KIB));
    assert_eq!(v.al_writes, Some(12));
    assert_eq!(v.bm_writes, Some(0));
    assert_eq!(v.lower_pending, Some(0));
    assert_eq!(v.upper_pending, Some(0));
    assert_eq!(
        (p.pending, p.unacked, p.epochs),
        (Some(0), Some(0), Some(1))
    );
    assert_eq!(p.out_of_sync_bytes, Some(0));
    assert_eq!(v.write_ordering, Some(WriteOrdering::Flush));
    assert!(!v.io_suspended);
    assert_eq!(v.al_suspended, Some(false));
    assert_eq!(v.congestion, None);
    assert_eq!(p.congested, Some(false));
    assert!(!p.resync_suspended.any());
    assert!(p.resync.is_none());
    assert_eq!(v.quorum, None);
    assert_eq!(s.volumes[1].minor, 1);
    assert_eq!(s.volumes[1].read_bytes, Some(2416 * KIB));
}

#[test]
fn v84_connected_primary_secondary_with_a_hole() {
    let s = load("proc84_connected_primary_secondary.txt");
    assert_eq!(
        s.volumes.iter().map(|v| v.minor).collect::<Vec<_>>(),
        [0, 2]
    );
    assert_states(
        &s.volumes[0],
        ConnState::Connected,
        ReplState::Established,
        (Role::Primary, Role::Secondary),
        (DiskState::UpToDate, DiskState::UpToDate),
    );
    assert_eq!(peer(&s.volumes[0]).sent_bytes, Some(5_242_684 * KIB));
    let v2 = &s.volumes[1];
    assert_eq!(v2.resource, "drbd2");
    assert_eq!(
        (v2.role.clone(), peer(v2).role.clone()),
        (Role::Secondary, Role::Primary)
    );
    assert_eq!(v2.write_ordering, Some(WriteOrdering::Drain));
    assert_eq!(peer(v2).received_bytes, Some(969_536 * KIB));
}

// The done ratio comes from the exact amounts `(left/total)`, not from DRBD's rounded percentage.
#[test]
fn v84_syncsource_mib_on_one_line_and_kib_on_two() {
    let s = load("proc84_syncsource.txt");
    assert_eq!(s.version.as_deref(), Some("8.4.1"));
    assert!(s
        .build
        .as_deref()
        .unwrap()
        .starts_with("GIT-hash: 91b4c048c1a0"));
    let v = &s.volumes[0];
    assert_states(
        v,
        ConnState::Connected,
        ReplState::SyncSource,
        (Role::Primary, Role::Secondary),
        (DiskState::UpToDate, DiskState::Inconsistent),
    );
    assert_eq!(peer(v).out_of_sync_bytes, Some(12_685_660 * KIB));
    assert_eq!((peer(v).pending, peer(v).unacked), (Some(13), Some(4)));
    assert_eq!(v.write_ordering, Some(WriteOrdering::Barrier));
    let r = resync(v);
    assert_eq!(r.kind, ResyncKind::Sync);
    assert!((r.done_ratio.unwrap_or(f64::NAN) - (1.0 - 12_388.0 / 15_372.0)).abs() < 1e-9);
    assert_eq!(r.remaining_bytes, Some(12_388 * MIB));
    assert_eq!(r.total_bytes, Some(15_372 * MIB));
    assert_eq!(r.finish_seconds, Some(11 * 60));
    assert_eq!(r.speed_bytes_per_second, Some(19_188 * KIB));
    assert_eq!(r.average_speed_bytes_per_second, Some(24_468 * KIB));
    assert_eq!(r.want_bytes_per_second, None);
    assert!(!r.stalled);

    let r = resync(&s.volumes[1]);
    assert!((r.done_ratio.unwrap_or(f64::NAN) - (1.0 - 209_368.0 / 262_100.0)).abs() < 1e-9);
    assert_eq!(r.remaining_bytes, Some(209_368 * KIB));
    assert_eq!(r.total_bytes, Some(262_100 * KIB));
    assert_eq!(r.finish_seconds, Some(51));
    assert_eq!(r.speed_bytes_per_second, Some(4_056 * KIB));
}

#[test]
fn v84_synctarget_with_want() {
    let s = load("proc84_synctarget.txt");
    let v = &s.volumes[0];
    assert_states(
        v,
        ConnState::Connected,
        ReplState::SyncTarget,
        (Role::Secondary, Role::Secondary),
        (DiskState::Inconsistent, DiskState::UpToDate),
    );
    assert_eq!(v.lower_pending, Some(9));
    assert_eq!(peer(v).received_bytes, Some(90_397_696 * KIB));
    let r = resync(v);
    assert!((r.done_ratio.unwrap_or(f64::NAN) - (1.0 - 1_799_164.0 / 1_887_436.0)).abs() < 1e-9);
    assert_eq!(r.remaining_bytes, Some(1_799_164 * MIB));
    assert_eq!(r.total_bytes, Some(1_887_436 * MIB));
    assert_eq!(r.finish_seconds, Some(14 * 3600 + 11 * 60 + 31));
    assert_eq!(r.speed_bytes_per_second, Some(36_044 * KIB));
    assert_eq!(r.average_speed_bytes_per_second, Some(36_168 * KIB));
    assert_eq!(r.want_bytes_per_second, Some(3_280 * KIB));
    let r = resync(&s.volumes[1]);
    assert_eq!(r.want_bytes_per_second, Some(4_096 * KIB));
    assert_eq!(r.total_bytes, Some(262_100 * KIB));
}

#[test]
fn v84_standalone_has_no_protocol_and_keeps_state_as_is() {
    let s = load("proc84_standalone.txt");
    let v = &s.volumes[0];
    assert_states(
        v,
        ConnState::StandAlone,
        ReplState::Off,
        (Role::Primary, Role::Unknown),
        (DiskState::UpToDate, DiskState::DUnknown),
    );
    assert_eq!(peer(v).protocol, None);
    assert_eq!(v.al_suspended, Some(true), "r----s");
    assert_eq!(peer(v).out_of_sync_bytes, Some(20_970_844 * KIB));
    assert_eq!(v.written_bytes, Some(28_201 * KIB));
    assert_eq!(peer(&s.volumes[1]).out_of_sync_bytes, Some(4 * KIB));
    assert_eq!(s.volumes[1].al_suspended, Some(false));
}

#[test]
fn v84_wfconnection() {
    let s = load("proc84_wfconnection.txt");
    let v = &s.volumes[0];
    assert_states(
        v,
        ConnState::WFConnection,
        ReplState::Off,
        (Role::Primary, Role::Unknown),
        (DiskState::UpToDate, DiskState::DUnknown),
    );
    assert_eq!(peer(v).protocol, Some('C'));
    assert_eq!(peer(v).out_of_sync_bytes, Some(239_648 * KIB));
}

#[test]
fn v84_unconfigured() {
    let s = load("proc84_unconfigured.txt");
    assert_eq!(s.volumes.len(), 2);
    let v = &s.volumes[1];
    assert_eq!(v.minor, 1);
    assert_states(
        v,
        ConnState::Unconfigured,
        ReplState::Off,
        (Role::Secondary, Role::Unknown),
        (DiskState::Diskless, DiskState::DUnknown),
    );
    assert_eq!(v.read_bytes, None, "an unconfigured minor has no counters");
    assert_eq!(peer(v).sent_bytes, None);
}

#[test]
fn v84_online_verify() {
    let s = load("proc84_verify.txt");
    let v = &s.volumes[0];
    assert_states(
        v,
        ConnState::Connected,
        ReplState::VerifyS,
        (Role::Primary, Role::Secondary),
        (DiskState::UpToDate, DiskState::UpToDate),
    );
    let r = resync(v);
    assert_eq!(r.kind, ResyncKind::Verify);
    assert!((r.done_ratio.unwrap_or(f64::NAN) - (1.0 - 5_400.0 / 10_236.0)).abs() < 1e-9);
    assert_eq!(r.remaining_bytes, Some(5_400 * MIB));
    assert_eq!(r.total_bytes, Some(10_236 * MIB));
    assert_eq!(r.finish_seconds, Some(48));
    assert_eq!(r.speed_bytes_per_second, Some(102_912 * KIB));
    assert_eq!(r.want_bytes_per_second, Some(102_400 * KIB));
    let r = resync(&s.volumes[1]);
    assert_eq!(peer(&s.volumes[1]).replication, ReplState::VerifyT);
    assert_eq!(r.kind, ResyncKind::Verify);
    assert!((r.done_ratio.unwrap_or(f64::NAN) - (1.0 - 250_880.0 / 256_000.0)).abs() < 1e-9);
    assert_eq!(r.want_bytes_per_second, None);
}

#[test]
fn v83_connected_primary_primary() {
    let s = load("proc83_connected_primary_primary.txt");
    assert_eq!(s.version.as_deref(), Some("8.3.11"));
    assert_states(
        &s.volumes[0],
        ConnState::Connected,
        ReplState::Established,
        (Role::Primary, Role::Primary),
        (DiskState::UpToDate, DiskState::UpToDate),
    );
    assert_eq!(s.volumes[0].al_writes, Some(7));
}

#[test]
fn v83_connected_primary_secondary() {
    let s = load("proc83_connected_primary_secondary.txt");
    let v = &s.volumes[0];
    assert_states(
        v,
        ConnState::Connected,
        ReplState::Established,
        (Role::Primary, Role::Secondary),
        (DiskState::UpToDate, DiskState::UpToDate),
    );
    assert_eq!(v.read_bytes, Some(5_243_348 * KIB));
    assert_eq!(v.bm_writes, Some(320));
}

#[test]
fn v83_8_syncsource_five_flags_delay_probe_and_stalled() {
    let s = load("proc83_syncsource.txt");
    assert_eq!(s.version.as_deref(), Some("8.3.8"));
    let v = &s.volumes[0];
    assert_states(
        v,
        ConnState::Connected,
        ReplState::SyncSource,
        (Role::Primary, Role::Secondary),
        (DiskState::UpToDate, DiskState::Inconsistent),
    );
    assert_eq!(v.al_suspended, None, "5 flags: no AL-suspended flag yet");
    assert_eq!(peer(v).congested, Some(false));
    assert_eq!(v.read_bytes, Some(1_175_992_347 * KIB));
    assert_eq!((v.lower_pending, peer(v).unacked), (Some(37), Some(37)));
    let r = resync(v);
    assert!((r.done_ratio.unwrap_or(f64::NAN) - (1.0 - 294_656.0 / 510_908.0)).abs() < 1e-9);
    assert_eq!(r.remaining_bytes, Some(294_656 * MIB));
    assert_eq!(r.total_bytes, Some(510_908 * MIB));
    assert_eq!(r.finish_seconds, Some(3600 + 23 * 60 + 28));
    assert_eq!(r.speed_bytes_per_second, Some(60_172 * KIB));
    assert_eq!(r.average_speed_bytes_per_second, Some(51_448 * KIB));
    assert!(!r.stalled);
    let r = resync(&s.volumes[1]);
    assert!(r.stalled);
    assert_eq!(r.finish_seconds, None);
}

#[test]
fn v83_synctarget() {
    let s = load("proc83_synctarget.txt");
    let v = &s.volumes[0];
    assert_states(
        v,
        ConnState::Connected,
        ReplState::SyncTarget,
        (Role::Secondary, Role::Primary),
        (DiskState::Inconsistent, DiskState::UpToDate),
    );
    let r = resync(v);
    assert!((r.done_ratio.unwrap_or(f64::NAN) - (1.0 - 189_468.0 / 190_200.0)).abs() < 1e-9);
    assert_eq!(r.remaining_bytes, Some(189_468 * MIB));
    assert_eq!(r.finish_seconds, Some(5 * 3600 + 14 * 60 + 6));
    assert_eq!(r.want_bytes_per_second, Some(10_240 * KIB));
}

#[test]
fn v83_standalone() {
    let s = load("proc83_standalone.txt");
    let v = &s.volumes[0];
    assert_states(
        v,
        ConnState::StandAlone,
        ReplState::Off,
        (Role::Secondary, Role::Unknown),
        (DiskState::Inconsistent, DiskState::DUnknown),
    );
    assert_eq!(peer(v).protocol, None);
    assert_eq!(peer(v).out_of_sync_bytes, Some(4_194_304 * KIB));
    assert_eq!(v.write_ordering, Some(WriteOrdering::Barrier));
}

#[test]
fn v83_wfconnection() {
    let s = load("proc83_wfconnection.txt");
    assert_eq!(s.version.as_deref(), Some("8.3.7"));
    assert_states(
        &s.volumes[0],
        ConnState::WFConnection,
        ReplState::Off,
        (Role::Primary, Role::Unknown),
        (DiskState::UpToDate, DiskState::DUnknown),
    );
}

#[test]
fn v83_unconfigured_minors() {
    let s = load("proc83_unconfigured.txt");
    assert_eq!(
        s.volumes.iter().map(|v| v.minor).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    for v in &s.volumes[1..] {
        assert_eq!(peer(v).connection, ConnState::Unconfigured);
        assert_eq!(v.disk_state, DiskState::Diskless);
    }
}

#[test]
fn v82_st_alias_and_cache_lines() {
    let s = load("proc82_st_alias.txt");
    assert_eq!(s.version.as_deref(), Some("8.2.4"));
    let v = &s.volumes[0];
    assert_states(
        v,
        ConnState::Connected,
        ReplState::Established,
        (Role::Secondary, Role::Secondary),
        (DiskState::UpToDate, DiskState::UpToDate),
    );
    assert_eq!(v.bm_writes, Some(64));
    assert_eq!(peer(v).epochs, None, "no ep: before 8.3");
    assert_eq!(v.write_ordering, None);
    assert_eq!(peer(v).congested, None, "4 flags: no congestion flag");
}

#[test]
fn drbd9_proc_has_version_and_no_devices() {
    let s = load("proc9_transports.txt");
    assert_eq!(s.version.as_deref(), Some("9.2.8"));
    assert!(s.volumes.is_empty());
}

#[test]
fn malformed_lines_are_skipped_and_counted_good_minors_kept() {
    let path = format!(
        "{}/tests/fixtures/drbd/proc84_malformed.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let p = parse_proc_drbd(&std::fs::read_to_string(path).unwrap());
    let minors: Vec<u32> = p.value.volumes.iter().map(|v| v.minor).collect();
    assert_eq!(minors, [0, 2, 4, 5]);
    assert_eq!(p.errors.len(), 6, "{:#?}", p.errors);
    // The damaged line `1 cs:…` must not let minor 1's counters overwrite minor 0's.
    assert_eq!(peer(&p.value.volumes[0]).sent_bytes, Some(100 * KIB));
    // A bad counter loses that counter only.
    let v2 = &p.value.volumes[1];
    assert_eq!(peer(v2).sent_bytes, None);
    assert_eq!(v2.written_bytes, Some(400 * KIB));
    // A bad progress line loses the progress, not the device.
    assert!(peer(&p.value.volumes[2]).resync.is_none());
    assert_eq!(peer(&p.value.volumes[2]).replication, ReplState::SyncSource);
    assert_eq!(peer(&p.value.volumes[3]).received_bytes, Some(9 * KIB));
    assert!(p.errors.iter().any(|e| e.contains("ns:12x")));
    assert!(p
        .errors
        .iter()
        .any(|e| e.contains("minor 3") && e.contains("cs:")));
    assert!(p.errors.iter().any(|e| e.contains("garbage here")));
}

#[test]
fn empty_and_odd_inputs() {
    assert_eq!(parse_proc_drbd("").value, DrbdSnapshot::default());
    let p = parse_proc_drbd("\n\n  \n");
    assert!(p.errors.is_empty() && p.value.volumes.is_empty());
    // CRLF line ends are fine. (A missing final newline is not: that is a cut line, see
    // tests/drbd_degraded.rs; this test used to accept one as data.)
    let p = parse_proc_drbd(
        "version: 8.4.11 (api:1/proto:86-101)\r\nbuilt-in\r\n 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----\r\n    ns:1 nr:2 dw:3 dr:4 al:5 bm:6 lo:7 pe:8 ua:9 ap:10 ep:1 wo:n oos:11\r\n",
    );
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.value.build.as_deref(), Some("built-in"));
    let v = &p.value.volumes[0];
    assert_eq!(v.upper_pending, Some(10));
    assert_eq!(v.write_ordering, Some(WriteOrdering::None));
    assert_eq!(peer(v).out_of_sync_bytes, Some(11 * KIB));
    // Unknown states are kept as DRBD spelled them.
    let p = parse_proc_drbd(" 7: cs:SkippedSyncS ro:Primary/Frob ds:UpToDate/Weird C r-----\n");
    let v = &p.value.volumes[0];
    assert_eq!(peer(v).connection, ConnState::Other("SkippedSyncS".into()));
    assert_eq!(peer(v).role, Role::Other("Frob".into()));
    assert_eq!(peer(v).disk_state.as_str(), "Weird");
    // Congestion and suspension flags.
    let p =
        parse_proc_drbd(" 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C sapuns\n");
    let v = &p.value.volumes[0];
    assert!(v.io_suspended);
    assert_eq!(v.congestion, Some('n'));
    assert_eq!(peer(v).congested, Some(true));
    let rs = peer(v).resync_suspended;
    assert!(rs.user && rs.peer && rs.dependency);
    assert_eq!(v.al_suspended, Some(true));
}
