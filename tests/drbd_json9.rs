//! Golden and tolerance tests of the DRBD 9 `drbdsetup status --json` parser.

use vmwarden::probe::drbd::{
    parse_status_json, ConnState, DiskState, DrbdSource, ReplState, ResyncKind, Role, WriteOrdering,
};

const KIB: u64 = 1024;

fn fixture() -> String {
    let path = format!(
        "{}/tests/fixtures/drbd/json9_two_peers_syncing.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn two_resources_two_peers_one_syncing() {
    let p = parse_status_json(&fixture()).unwrap();
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let s = p.value;
    assert_eq!(s.source, DrbdSource::Json9);
    assert_eq!(
        s.version, None,
        "the JSON has no version; probe() adds /proc/drbd's"
    );
    assert_eq!(s.volumes.len(), 2);

    let v = &s.volumes[0];
    assert_eq!(
        (v.resource.as_str(), v.volume, v.minor),
        ("vm-web1", 0, 1000)
    );
    assert_eq!(v.role, Role::Primary);
    assert_eq!(v.disk_state, DiskState::UpToDate);
    assert_eq!(v.quorum, Some(true));
    assert_eq!(v.client, Some(false));
    assert!(!v.io_suspended);
    assert_eq!(v.write_ordering, Some(WriteOrdering::Flush));
    assert_eq!(v.size_bytes, Some(20_971_520 * KIB));
    assert_eq!(v.read_bytes, Some(1_046_532 * KIB));
    assert_eq!(v.written_bytes, Some(8_388_952 * KIB));
    assert_eq!((v.al_writes, v.bm_writes), (Some(214), Some(9)));
    assert_eq!((v.upper_pending, v.lower_pending), (Some(0), Some(1)));
    assert_eq!(v.peers.len(), 2);

    let b = &v.peers[0];
    assert_eq!(b.name, "node-b");
    assert_eq!(b.node_id, Some(1));
    assert_eq!(b.connection, ConnState::Connected);
    assert_eq!(b.replication, ReplState::Established);
    assert_eq!(b.role, Role::Secondary);
    assert_eq!(b.disk_state, DiskState::UpToDate);
    assert_eq!(b.sent_bytes, Some(8_388_952 * KIB));
    assert_eq!(b.out_of_sync_bytes, Some(0));
    assert_eq!(b.congested, Some(false));
    assert_eq!(b.protocol, None);
    assert_eq!(b.client, Some(false));
    assert!(b.resync.is_none());

    let c = &v.peers[1];
    assert_eq!((c.name.as_ref(), c.node_id), ("node-c", Some(2)));
    assert_eq!(c.replication, ReplState::SyncSource);
    assert_eq!(c.disk_state, DiskState::Inconsistent);
    assert_eq!(c.out_of_sync_bytes, Some(10_485_760 * KIB));
    assert_eq!(c.sent_bytes, Some(10_486_784 * KIB));
    assert_eq!((c.pending, c.unacked), (Some(3), Some(0)));
    assert_eq!((c.ap_in_flight, c.rs_in_flight), (Some(0), Some(2048)));
    let r = c.resync.as_deref().unwrap();
    assert_eq!(r.kind, ResyncKind::Sync);
    assert!((r.done_ratio.unwrap_or(f64::NAN) - 0.5).abs() < 1e-9);
    assert_eq!(r.total_bytes, Some(41_943_040 * 512));
    assert_eq!(r.remaining_bytes, Some(20_971_520 * 512));
    assert_eq!(r.finish_seconds, Some(116));
    assert_eq!(r.speed_bytes_per_second, Some(88 * 1024 * 1024));
    assert_eq!(
        r.average_speed_bytes_per_second,
        Some((85.33f64 * 1048576.0).round() as u64)
    );
    assert_eq!(r.want_bytes_per_second, Some(90 * 1024 * 1024));

    let db = &s.volumes[1];
    assert_eq!(
        (db.resource.as_str(), db.minor, db.role.clone()),
        ("vm-db1", 1001, Role::Secondary)
    );
    let c = &db.peers[1];
    assert_eq!(c.connection, ConnState::Connecting);
    assert_eq!(c.role, Role::Unknown);
    assert_eq!(c.replication, ReplState::Off);
    assert_eq!(c.disk_state, DiskState::DUnknown);
    assert_eq!(
        c.ap_in_flight, None,
        "omitted by drbdsetup while not connected"
    );
    assert!(c.resync.is_none());
}

#[test]
fn missing_and_extra_fields_are_tolerated() {
    let text = r#"[{"name":"r0","role":"Secondary","future-field":{"x":[1,2]},
        "devices":[{"volume":0,"minor":7,"disk-state":"Outdated","open":false}],
        "connections":[{"name":"peer1","connection-state":"StandAlone","peer-role":"Unknown",
            "paths":[{"this_host":{"address":"10.0.0.1"}}],
            "peer_devices":[{"volume":0,"replication-state":"Off","peer-disk-state":"DUnknown"}]}]}]"#;
    let p = parse_status_json(text).unwrap();
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let v = &p.value.volumes[0];
    assert_eq!((v.minor, v.disk_state.clone()), (7, DiskState::Outdated));
    assert_eq!(v.read_bytes, None, "no statistics printed");
    assert_eq!(v.quorum, None);
    let pe = &v.peers[0];
    assert_eq!(pe.connection, ConnState::StandAlone);
    assert_eq!(pe.node_id, None);
    assert_eq!(pe.sent_bytes, None);
}

#[test]
fn wrong_types_are_skipped_with_messages_and_the_rest_kept() {
    let text = r#"[
        {"name":"good","role":"Primary","suspended":"yes",
         "devices":[{"volume":0,"minor":1,"disk-state":"UpToDate","read":"lots","written":-5}],
         "connections":[{"name":"p","connection-state":"Connected","peer-role":"Primary","peer_devices":[
             {"volume":0,"replication-state":"SyncTarget","peer-disk-state":"UpToDate","out-of-sync":2048,"percent-in-sync":75.5},
             {"volume":3,"replication-state":"Established"},
             "not an object"]}]},
        {"role":"Primary"},
        42,
        {"name":"nominor","role":"Secondary","devices":[{"volume":0}]}
    ]"#;
    let p = parse_status_json(text).unwrap();
    let vols = &p.value.volumes;
    assert_eq!(vols.len(), 1);
    let v = &vols[0];
    assert!(!v.io_suspended, "a non-boolean `suspended` is skipped");
    assert_eq!(v.read_bytes, None);
    assert_eq!(v.written_bytes, None);
    assert_eq!(v.peers.len(), 1);
    // A resync without details: progress from percent-in-sync, remaining from out-of-sync.
    let r = v.peers[0].resync.as_deref().unwrap();
    assert!((r.done_ratio.unwrap_or(f64::NAN) - 0.755).abs() < 1e-9);
    assert_eq!(r.remaining_bytes, Some(2048 * KIB));
    let e = p.errors.join("\n");
    for needle in [
        "`suspended`",
        "`read`",
        "`written`",
        "volume 3 has no local device",
        "peer device #2 is not an object",
        "resource #1: no `name`",
        "resource #2 is not an object",
        "no usable `minor`",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
    assert_eq!(p.errors.len(), 8, "{e}");
}

#[test]
fn not_json_or_not_an_array_is_an_error() {
    assert!(parse_status_json("").is_err());
    assert!(parse_status_json("drbdsetup: unrecognized option '--json'").is_err());
    assert!(parse_status_json("{}").unwrap_err().contains("array"));
    assert!(parse_status_json("[]").unwrap().value.volumes.is_empty());
}

#[test]
fn resync_suspension_reasons_and_verify() {
    let text = r#"[{"name":"r","role":"Secondary","devices":[{"volume":0,"minor":0,"disk-state":"UpToDate"}],
        "connections":[{"name":"p","connection-state":"Connected","peer-role":"Primary","peer_devices":[{"volume":0,
            "replication-state":"VerifyS","peer-disk-state":"UpToDate","resync-suspended":"user,dependency",
            "has-sync-details":true,"has-online-verify-details":true,
            "out-of-sync":0,"rs-total":1000,"ov-left":250,
            "estimated-seconds-to-finish":987654321,"want":0.00}]}]}]"#;
    let p = parse_status_json(text).unwrap();
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let pe = &p.value.volumes[0].peers[0];
    assert!(
        pe.resync_suspended.user && pe.resync_suspended.dependency && !pe.resync_suspended.peer
    );
    let r = pe.resync.as_deref().unwrap();
    assert_eq!(r.kind, ResyncKind::Verify);
    assert!(
        (r.done_ratio.unwrap_or(f64::NAN) - 0.75).abs() < 1e-9,
        "computed from rs-total and ov-left"
    );
    assert_eq!(r.remaining_bytes, Some(250 * 512));
    assert_eq!(r.finish_seconds, None, "987654321 means no estimate");
    assert_eq!(r.want_bytes_per_second, Some(0));
}
