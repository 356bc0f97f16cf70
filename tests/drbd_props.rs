//! Property tests: the DRBD parsers never panic on any input (arbitrary bytes, damaged real
//! fixtures), their output always renders, and valid device lines round-trip their numbers.

use proptest::prelude::*;
use vmwarden::metrics::Registry;
use vmwarden::probe::drbd::{
    parse_proc_drbd, parse_status_json, ConnState, DiskState, DrbdSnapshot, ReplState, Role,
};

const FIXTURES: &[&str] = &[
    "proc82_st_alias.txt",
    "proc83_connected_primary_primary.txt",
    "proc83_connected_primary_secondary.txt",
    "proc83_standalone.txt",
    "proc83_syncsource.txt",
    "proc83_synctarget.txt",
    "proc83_unconfigured.txt",
    "proc83_wfconnection.txt",
    "proc84_connected_primary_primary.txt",
    "proc84_connected_primary_secondary.txt",
    "proc84_malformed.txt",
    "proc84_standalone.txt",
    "proc84_syncsource.txt",
    "proc84_synctarget.txt",
    "proc84_unconfigured.txt",
    "proc84_verify.txt",
    "proc84_wfconnection.txt",
    "proc9_transports.txt",
    "json9_two_peers_syncing.json",
];

fn fixture(i: usize) -> Vec<u8> {
    let name = FIXTURES[i % FIXTURES.len()];
    std::fs::read(format!(
        "{}/tests/fixtures/drbd/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Parse with both parsers and render whatever came out: none of it may panic.
fn exercise(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let p = parse_proc_drbd(&text);
    render(&p.value);
    if let Ok(j) = parse_status_json(&text) {
        render(&j.value);
    }
}

fn render(s: &DrbdSnapshot) {
    let mut reg = Registry::default();
    vmwarden::metrics::drbd::encode(&mut reg, s);
    assert!(reg.to_openmetrics().ends_with("# EOF\n"));
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        // Bytes that matter to the parsers, most of the time.
        (
            any::<usize>(),
            prop::sample::select(b" \t\n:/%()[],.-0123456789Mk\"{}".to_vec())
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

fn apply(mut data: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let lines = || {
            data.split(|b| *b == b'\n')
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        };
        match *m {
            Mutation::DeleteLine(i) => {
                let mut l = lines();
                if !l.is_empty() {
                    let n = l.len();
                    l.remove(i % n);
                }
                data = l.join(&b'\n');
            }
            Mutation::DuplicateLine(i) => {
                let mut l = lines();
                if !l.is_empty() {
                    let n = l.len();
                    let dup = l[i % n].clone();
                    l.insert(i % n, dup);
                }
                data = l.join(&b'\n');
            }
            Mutation::Truncate(i) => data.truncate(i % (data.len() + 1)),
            Mutation::Flip(i, b) => {
                if !data.is_empty() {
                    let n = data.len();
                    data[i % n] ^= b | 1;
                }
            }
            Mutation::Insert(i, b) => {
                let n = data.len();
                data.insert(i % (n + 1), b);
            }
        }
    }
    data
}

/// One device block printed the way the 8.4 kernel prints it.
#[derive(Debug, Clone)]
struct Device {
    minor: u32,
    cs: &'static str,
    roles: (&'static str, &'static str),
    disks: (&'static str, &'static str),
    counters: [u32; 12],
}

fn device() -> impl Strategy<Value = Device> {
    let cs = prop::sample::select(vec![
        "Connected",
        "StandAlone",
        "WFConnection",
        "SyncSource",
        "SyncTarget",
        "VerifyS",
        "PausedSyncT",
        "Ahead",
        "Disconnecting",
        "WFReportParams",
    ]);
    let role = prop::sample::select(vec!["Primary", "Secondary", "Unknown"]);
    let disk = prop::sample::select(DiskState::ALL.to_vec());
    (
        0u32..1_048_576,
        cs,
        (role.clone(), role),
        (disk.clone(), disk),
        any::<[u32; 12]>(),
    )
        .prop_map(|(minor, cs, roles, disks, counters)| Device {
            minor,
            cs,
            roles,
            disks,
            counters,
        })
}

fn print(devs: &[Device]) -> String {
    let mut s = String::from(
        "version: 8.4.11 (api:1/proto:86-101)\nsrcversion: 211FB288A383ED945B83420 \n",
    );
    for d in devs {
        let c = d.counters;
        s.push_str(&format!(
            "{:2}: cs:{} ro:{}/{} ds:{}/{} C r-----\n    ns:{} nr:{} dw:{} dr:{} al:{} bm:{} lo:{} pe:{} ua:{} ap:{} ep:{} wo:f oos:{}\n",
            d.minor, d.cs, d.roles.0, d.roles.1, d.disks.0, d.disks.1,
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11]
        ));
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_text_of_drbd_words_never_panics(
        words in prop::collection::vec(
            prop::sample::select(vec![
                " 0:", "12:", "cs:", "cs:Connected", "ro:Primary/", "ds:/", "st:", "C", "r-----",
                "ns:", "ns:99999999999999999999", "oos:1", "wo:x", "[>...]", "sync'ed:", "verified:",
                "100.0%", "(1/2)M", "(3/)K", "finish:", "9:99:99", "speed:", "(1,2", "--", "3)",
                "want:", "K/sec", "(stalled)", "stalled", "version:", "\n", "\n\t", "  ", "%",
                "{", "}", "[", "]", "\"name\"", ":", ",", "\"devices\"", "\"minor\"", "1",
            ]),
            0..200,
        )
    ) {
        exercise(words.concat().as_bytes());
    }

    #[test]
    fn damaged_fixtures_never_panic(
        which in 0usize..FIXTURES.len(),
        muts in prop::collection::vec(mutation(), 1..12),
    ) {
        exercise(&apply(fixture(which), &muts));
    }

    #[test]
    fn device_lines_round_trip(mut devs in prop::collection::vec(device(), 1..20)) {
        devs.sort_by_key(|d| d.minor);
        devs.dedup_by_key(|d| d.minor);
        let p = parse_proc_drbd(&print(&devs));
        prop_assert!(p.errors.is_empty(), "{:?}", p.errors);
        prop_assert_eq!(p.value.volumes.len(), devs.len());
        for (d, v) in devs.iter().zip(&p.value.volumes) {
            let c = d.counters.map(u64::from);
            let peer = &v.peers[0];
            prop_assert_eq!(v.minor, d.minor);
            prop_assert_eq!(v.resource.clone(), format!("drbd{}", d.minor));
            prop_assert_eq!(&v.role, &Role::from_drbd(d.roles.0));
            prop_assert_eq!(&peer.role, &Role::from_drbd(d.roles.1));
            prop_assert_eq!(&v.disk_state, &DiskState::from_drbd(d.disks.0));
            prop_assert_eq!(&peer.disk_state, &DiskState::from_drbd(d.disks.1));
            let (conn, repl) = match d.cs {
                "Connected" => (ConnState::Connected, ReplState::Established),
                cs if ReplState::ALL.contains(&cs) => (ConnState::Connected, ReplState::from_drbd(cs)),
                cs => (ConnState::from_drbd(cs), ReplState::Off),
            };
            prop_assert_eq!(&peer.connection, &conn);
            prop_assert_eq!(&peer.replication, &repl);
            prop_assert_eq!(peer.sent_bytes, Some(c[0] * 1024));
            prop_assert_eq!(peer.received_bytes, Some(c[1] * 1024));
            prop_assert_eq!(v.written_bytes, Some(c[2] * 1024));
            prop_assert_eq!(v.read_bytes, Some(c[3] * 1024));
            prop_assert_eq!(v.al_writes, Some(c[4]));
            prop_assert_eq!(v.bm_writes, Some(c[5]));
            prop_assert_eq!(v.lower_pending, Some(c[6]));
            prop_assert_eq!(peer.pending, Some(c[7]));
            prop_assert_eq!(peer.unacked, Some(c[8]));
            prop_assert_eq!(v.upper_pending, Some(c[9]));
            prop_assert_eq!(peer.epochs, Some(c[10]));
            prop_assert_eq!(peer.out_of_sync_bytes, Some(c[11] * 1024));
        }
    }

    #[test]
    fn large_counters_round_trip(n in any::<u64>()) {
        // Values beyond 32 bits (a future kernel, or a 64-bit field) parse exactly, and the
        // KiB→bytes conversion saturates instead of overflowing.
        let p = parse_proc_drbd(&format!(" 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----\n    ns:0 al:{n} oos:{n}\n"));
        prop_assert!(p.errors.is_empty(), "{:?}", p.errors);
        prop_assert_eq!(p.value.volumes[0].al_writes, Some(n));
        prop_assert_eq!(p.value.volumes[0].peers[0].out_of_sync_bytes, Some(n.saturating_mul(1024)));
    }
}
