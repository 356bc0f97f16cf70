//! DRBD metrics: golden renderings of fixtures (regenerate with `UPDATE_GOLDEN=1 cargo test`),
//! (docs/metrics.md is checked against the code in tests/metrics_contract.rs).

use vmwarden::metrics::drbd::encode as encode_drbd;
use vmwarden::metrics::Registry;
use vmwarden::probe::drbd::{parse_proc_drbd, parse_status_json, DrbdSnapshot};

fn dir() -> String {
    format!("{}/tests/fixtures/drbd", env!("CARGO_MANIFEST_DIR"))
}

fn render(snap: &DrbdSnapshot) -> String {
    let mut reg = Registry::default();
    encode_drbd(&mut reg, snap);
    reg.to_openmetrics()
}

fn proc_snapshot(name: &str) -> DrbdSnapshot {
    let p = parse_proc_drbd(&std::fs::read_to_string(format!("{}/{name}", dir())).unwrap());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    p.value
}

fn json_snapshot() -> DrbdSnapshot {
    let text = std::fs::read_to_string(format!("{}/json9_two_peers_syncing.json", dir())).unwrap();
    let mut s = parse_status_json(&text).unwrap().value;
    s.version = Some("9.2.8".into());
    s
}

/// Sort each family's samples so the golden file is readable and does not depend on the order
/// the encoder pushes them in.
fn canonical(text: &str) -> String {
    let mut out = String::new();
    let mut samples: Vec<&str> = Vec::new();
    let flush = |samples: &mut Vec<&str>, out: &mut String| {
        samples.sort_unstable();
        for s in samples.drain(..) {
            out.push_str(s);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut samples, &mut out);
            out.push_str(line);
            out.push('\n');
        } else {
            samples.push(line);
        }
    }
    flush(&mut samples, &mut out);
    out
}

fn golden(name: &str, actual: &str) {
    let actual = canonical(actual);
    let actual = actual.as_str();
    let path = format!("{}/{name}", dir());
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run with UPDATE_GOLDEN=1 to create it)"));
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(5)
            .map(|(i, (e, a))| format!("line {}:\n  expected {e}\n  actual   {a}", i + 1))
            .collect();
        panic!(
            "{name} differs from the rendering ({} vs {} lines); UPDATE_GOLDEN=1 regenerates it.\n{}",
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn golden_proc84_syncsource() {
    golden(
        "proc84_syncsource.metrics",
        &render(&proc_snapshot("proc84_syncsource.txt")),
    );
}

#[test]
fn golden_json9() {
    golden("json9_two_peers_syncing.metrics", &render(&json_snapshot()));
}

#[test]
fn key_samples_have_the_right_values() {
    let out = render(&proc_snapshot("proc84_syncsource.txt"));
    let has = |line: &str| assert!(out.lines().any(|l| l == line), "missing `{line}` in\n{out}");
    let l = r#"resource="drbd0",volume="0",minor="0""#;
    let lp = r#"resource="drbd0",volume="0",minor="0",peer="peer""#;
    has(r#"vmwarden_drbd_info{source="proc",version="8.4.1"} 1"#);
    has(&format!(
        r#"vmwarden_drbd_state{{{l},role="Primary",disk_state="UpToDate"}} 1"#
    ));
    has(&format!(
        r#"vmwarden_drbd_peer_state{{{lp},connection="Connected",replication="SyncSource",peer_role="Secondary",peer_disk_state="Inconsistent"}} 1"#
    ));
    // One state series per volume and per peer: no 0/1 series for the states it is not in.
    assert!(!out.contains(r#",role="Secondary""#), "{out}");
    has(&format!(
        "vmwarden_drbd_out_of_sync_bytes{{{lp}}} {}",
        12_685_660u64 * 1024
    ));
    has(&format!(
        "vmwarden_drbd_disk_read_bytes_total{{{l}}} {}",
        3_075_736u64 * 1024
    ));
    has(&format!(
        "vmwarden_drbd_network_sent_bytes_total{{{lp}}} {}",
        3_071_368u64 * 1024
    ));
    has(&format!(
        "vmwarden_drbd_resync_done_ratio{{{lp}}} 0.19411917772573507"
    ));
    has(&format!(
        "vmwarden_drbd_resync_remaining_seconds{{{lp}}} 660"
    ));
    // A state outside the known lists still shows, spelled as DRBD printed it.
    let out = render(
        &parse_proc_drbd(" 0: cs:SkippedSyncS ro:Primary/Frobbing ds:UpToDate/Melting C r-----\n")
            .value,
    );
    assert!(
        out.contains(r#"connection="SkippedSyncS",replication="Off",peer_role="Frobbing",peer_disk_state="Melting"} 1"#),
        "{out}"
    );
}

/// Series a scrape carries for each volume (one peer), by source: the budget of docs/metrics.md
/// § Series budget (at most 20 outside a resync; a running resync or verify adds its 5).
#[test]
fn series_per_volume_stay_within_the_budget() {
    fn per_volume(text: &str) -> Vec<usize> {
        let mut by_minor: std::collections::BTreeMap<String, usize> = Default::default();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some(at) = l.find("minor=\"") {
                let m = &l[at + 7..];
                let m = &m[..m.find('"').unwrap()];
                *by_minor.entry(m.to_string()).or_default() += 1;
            }
        }
        by_minor.into_values().collect()
    }
    let connected = render(&proc_snapshot("proc84_connected_primary_secondary.txt"));
    let counts = per_volume(&connected);
    assert!(!counts.is_empty(), "{connected}");
    for n in &counts {
        assert_eq!(*n, 17, "8.x connected volume: {connected}");
    }
    // While a resync runs: its progress families on top (at most five; 8.x prints no `want:`
    // on a SyncSource).
    for n in per_volume(&render(&proc_snapshot("proc84_syncsource.txt"))) {
        assert!((18..=22).contains(&n), "{n} series for a syncing volume");
    }
}
