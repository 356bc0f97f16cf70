//! Degraded DRBD input (issue 16, part 3): cut lines, missing state fields, NULs in the flags,
//! details promised but absent. Each input is read the best way it can be, never as a confident
//! wrong value: what cannot be read is counted in `errors` and exports nothing.

use vmwarden::probe::drbd::{
    parse_proc_drbd, parse_status_json, ConnState, DiskState, ReplState, Role,
};

const HEAD: &str = "version: 8.4.11 (api:1/proto:86-101)\nsrcversion: 0123456789ABCDEF\n";
const DEV0: &str = " 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----\n    ns:10 nr:0 dw:20 dr:30 al:1 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0\n";

/// Every cut point inside a device line (after `cs:Stand`, inside `ro:`, inside `ds:`…) loses
/// that minor, never exports a prefix as a state; earlier minors keep everything.
#[test]
fn a_device_line_cut_anywhere_exports_no_state_of_it() {
    let line = " 1: cs:StandAlone ro:Secondary/Unknown ds:UpToDate/DUnknown   r-----";
    for cut in 4..line.len() {
        let text = format!("{HEAD}{DEV0}{}", &line[..cut]);
        let p = parse_proc_drbd(&text);
        let minors: Vec<u32> = p.value.volumes.iter().map(|v| v.minor).collect();
        assert_eq!(minors, [0], "cut at {cut}: `{}`", &line[..cut]);
        assert_eq!(p.errors.len(), 1, "cut at {cut}: {:?}", p.errors);
        assert!(p.errors[0].contains("cut short"), "{:?}", p.errors);
        assert_eq!(p.value.volumes[0].peers[0].sent_bytes, Some(10 * 1024));
    }
    // The example from the issue: no connection state named `Stand` anywhere.
    let p = parse_proc_drbd(&format!("{HEAD} 0: cs:Stand"));
    assert!(p.value.volumes.is_empty());
    assert!(p.errors[0].contains("`0: cs:Stand`"), "{:?}", p.errors);
}

/// A cut counters or progress line loses that line only (a `ns:12` cut from `ns:1234` would be
/// a wrong counter); the device's states, on their complete line, stay.
#[test]
fn a_cut_counter_or_progress_line_loses_only_that_line() {
    let p = parse_proc_drbd(&format!(
        "{HEAD} 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----\n    ns:12"
    ));
    let v = &p.value.volumes[0];
    assert_eq!(v.disk_state, DiskState::UpToDate);
    assert_eq!(v.peers[0].sent_bytes, None, "ns:12 may be a prefix");
    assert_eq!(p.errors.len(), 1);

    let p = parse_proc_drbd(&format!(
        "{HEAD} 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----\n    ns:1 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:100\n\t[=>..................] sync'ed:  1"
    ));
    let pe = &p.value.volumes[0].peers[0];
    assert_eq!(pe.replication, ReplState::SyncSource);
    assert!(pe.resync.is_none(), "`sync'ed:  1` may be 10 % or 19.5 %");
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    // Trailing blanks or NUL padding after the last newline are not a cut line.
    let p = parse_proc_drbd(&format!("{HEAD}{DEV0}\0\0  "));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
}

/// A configured minor without `ro:`, `ds:` or both (or with an unreadable one) is skipped with
/// a message: role Unknown / disk DUnknown would be made up (and raise `drbd_not_uptodate`).
#[test]
fn a_device_line_missing_ro_or_ds_is_skipped_and_counted() {
    for (line, want) in [
        (" 1: cs:Connected C r-----", "`ro:` and `ds:`"),
        (" 1: cs:Connected ds:UpToDate/UpToDate C r-----", "`ro:`"),
        (" 1: cs:WFConnection ro:Primary/Unknown C r-----", "`ds:`"),
        (" 1: cs:Connected st:Primary/Secondary C r---", "`ds:`"),
        (
            " 1: cs:Connected ro:Primary ds:UpToDate/UpToDate C r-----",
            "`ro:Primary`",
        ),
        (
            " 1: cs: ro:Primary/Secondary ds:UpToDate/UpToDate C r-----",
            "`cs:`",
        ),
    ] {
        let text = format!("{HEAD}{DEV0}{line}\n    ns:5 nr:0 dw:0 dr:0\n");
        let p = parse_proc_drbd(&text);
        let minors: Vec<u32> = p.value.volumes.iter().map(|v| v.minor).collect();
        assert_eq!(minors, [0], "{line}");
        assert_eq!(p.errors.len(), 1, "{line}: {:?}", p.errors);
        assert!(p.errors[0].contains(want), "{line}: {:?}", p.errors);
        // The skipped block's counters must not land on minor 0.
        assert_eq!(p.value.volumes[0].peers[0].sent_bytes, Some(10 * 1024));
    }
    // `cs:Unconfigured` alone is DRBD's real output, not a missing field.
    let p = parse_proc_drbd(&format!("{HEAD} 3: cs:Unconfigured\n"));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.value.volumes[0].role, Role::Secondary);
}

/// 8.3.0/8.3.1 print an uncongested device's congestion reason as a NUL (`r---\0`, and with
/// the AL flag after it): the flag is "not congested", not lost; NULs elsewhere in the field too.
#[test]
fn a_nul_in_the_io_flags_is_an_unset_flag() {
    let dev = |flags: &str| {
        let p = parse_proc_drbd(&format!(
            "{HEAD} 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C {flags}\n"
        ));
        assert!(p.errors.is_empty(), "{flags:?}: {:?}", p.errors);
        p.value.volumes.into_iter().next().expect("minor 0")
    };
    let v = dev("r---\0");
    assert_eq!(v.peers[0].congested, Some(false), "5th flag read as unset");
    assert_eq!(v.congestion, None);
    let v = dev("r---\0s");
    assert_eq!(v.peers[0].congested, Some(false));
    assert_eq!(v.al_suspended, Some(true), "a flag after the NUL is kept");
    let v = dev("s-\0-n-");
    assert!(v.io_suspended);
    assert_eq!(v.congestion, Some('n'));
    assert_eq!(v.peers[0].congested, Some(true));
    let v = dev("r---n\0\0\0");
    assert_eq!(v.congestion, Some('n'));
    assert_eq!(v.al_suspended, Some(false), "NUL padding is an unset flag");
    // The 8.0-8.2 four-flag form still has no congestion flag at all.
    assert_eq!(dev("r---").peers[0].congested, None);
}

fn peer_device(extra: &str) -> String {
    format!(
        r#"[{{"name":"r","role":"Primary","devices":[{{"volume":0,"minor":0,"disk-state":"UpToDate"}}],
        "connections":[{{"name":"p","connection-state":"Connected","peer-role":"Secondary",
          "peer_devices":[{{"volume":0,"replication-state":"SyncSource","peer-disk-state":"Inconsistent",
            "out-of-sync":1024{extra}}}]}}]}}]"#
    )
}

/// `has-sync-details: true` without `rs-total`/`percent-resync-done`: progress from
/// `percent-in-sync` (drbdsetup's own fallback), counted; without any figure, no ratio at all.
#[test]
fn sync_details_promised_but_absent_fall_back_to_percent_in_sync() {
    let p = parse_status_json(&peer_device(
        r#","has-sync-details":true,"percent-in-sync":42.5"#,
    ))
    .unwrap();
    let r = p.value.volumes[0].peers[0]
        .resync
        .as_deref()
        .expect("resync");
    assert_eq!(r.done_ratio, Some(0.425));
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert!(p.errors[0].contains("percent-in-sync"), "{:?}", p.errors);

    // rs-total 0 is no better than none.
    let p = parse_status_json(&peer_device(
        r#","has-sync-details":true,"rs-total":0,"percent-in-sync":10.0"#,
    ))
    .unwrap();
    let r = p.value.volumes[0].peers[0]
        .resync
        .as_deref()
        .expect("resync");
    assert_eq!(r.done_ratio, Some(0.1));

    for extra in [
        r#","has-sync-details":true"#,
        r#","has-sync-details":false"#,
    ] {
        let p = parse_status_json(&peer_device(extra)).unwrap();
        let r = p.value.volumes[0].peers[0]
            .resync
            .as_deref()
            .expect("resync");
        assert_eq!(r.done_ratio, None, "{extra}: no figure, no made-up 0");
        assert_eq!(p.errors.len(), 1, "{extra}: {:?}", p.errors);
    }
}

/// A missing state in the JSON skips that object (resource, device, connection, peer device)
/// with a message naming the key, instead of the enum's default.
#[test]
fn json_objects_missing_a_state_are_skipped_not_defaulted() {
    let base = peer_device(r#","percent-in-sync":50.0"#);
    let cases = [
        (r#""role":"Primary","#, "`role`", 0, 0, 1),
        // Its peer device then has no local device to attach to: said too.
        (r#""disk-state":"UpToDate""#, "`disk-state`", 0, 0, 2),
        (
            r#""connection-state":"Connected","#,
            "`connection-state`",
            1,
            0,
            1,
        ),
        (
            r#""replication-state":"SyncSource","#,
            "`replication-state`",
            1,
            0,
            1,
        ),
        (
            r#""peer-disk-state":"Inconsistent","#,
            "`peer-disk-state`",
            1,
            0,
            1,
        ),
    ];
    for (cut, key, vols, peers, n_errors) in cases {
        assert!(base.contains(cut), "{cut}");
        let text = base.replacen(cut, "", 1).replace(",}", "}");
        let p = parse_status_json(&text).unwrap_or_else(|e| panic!("{cut}: {e}\n{text}"));
        assert_eq!(p.value.volumes.len(), vols, "{key}");
        if let Some(v) = p.value.volumes.first() {
            assert_eq!(v.peers.len(), peers, "{key}");
            assert_eq!(v.disk_state, DiskState::UpToDate);
        }
        assert_eq!(p.errors.len(), n_errors, "{key}: {:?}", p.errors);
        assert!(p.errors[0].contains(key), "{key}: {:?}", p.errors);
    }
    // A missing peer-role is DRBD's own `Unknown`, counted.
    let p = parse_status_json(&base.replacen(r#""peer-role":"Secondary","#, "", 1)).unwrap();
    let pe = &p.value.volumes[0].peers[0];
    assert_eq!(
        (pe.role.clone(), pe.connection.clone()),
        (Role::Unknown, ConnState::Connected)
    );
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
}
