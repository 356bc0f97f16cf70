//! `probe::drbd::probe()` source choice, against fixture files and stand-in `drbdsetup` scripts.
//!
//! The stand-in scripts are written by `executable()` (support/executable.rs), so no fork of
//! another test thread can hold one open for writing when it runs (ETXTBSY).

#[path = "support/executable.rs"]
mod executable;

use std::path::{Path, PathBuf};
use std::time::Duration;

use vmwarden::config::DrbdConfig;
use vmwarden::probe::drbd::{probe, DrbdSource};
use vmwarden::probe::ProbeError;

const T: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/drbd/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn cfg(proc_path: &str, drbdsetup: &str) -> DrbdConfig {
    DrbdConfig {
        enabled: true,
        proc_path: proc_path.to_string(),
        drbdsetup: drbdsetup.to_string(),
        split_brain_dir: "/nonexistent/vmwarden-split-brain".to_string(),
    }
}

/// A stand-in drbdsetup: the test's own shell script (vmwarden itself runs argv only).
fn script(dir: &Path, name: &str, body: &str) -> String {
    let path: PathBuf = dir.join(name);
    executable::executable(&path, &format!("#!/bin/sh\n{body}\n"));
    path.display().to_string()
}

#[tokio::test]
async fn source_choice() {
    let dir = tempfile::tempdir().unwrap();
    let json = fixture("json9_two_peers_syncing.json");
    let drbdsetup9 = script(
        dir.path(),
        "drbdsetup9",
        &format!(
        "[ \"$1 $2\" = 'status --json' ] || {{ echo \"bad args: $*\" >&2; exit 3; }}\ncat '{json}'"
    ),
    );
    let drbdsetup84 = script(
        dir.path(),
        "drbdsetup84",
        "echo \"drbdsetup: unrecognized option '--json'\" >&2\nexit 20",
    );
    let broken = script(dir.path(), "broken", "echo 'not json'");
    let failing = script(
        dir.path(),
        "failing",
        "echo 'Could not connect to drbd' >&2\nexit 20",
    );
    let empty_84 = dir.path().join("proc_84_no_devices");
    std::fs::write(
        &empty_84,
        "version: 8.4.11 (api:1/proto:86-101)\nsrcversion: 211FB288A383ED945B83420 \n",
    )
    .unwrap();
    let empty_84 = empty_84.display().to_string();
    // Random bytes where /proc/drbd should be (a wrong proc_path, a damaged read).
    let garbage = dir.path().join("proc_garbage");
    std::fs::write(&garbage, b"\x8f\x01zq#\x00\xff\n%%\x13 junk\xfe\n").unwrap();
    let garbage = garbage.display().to_string();
    // DRBD 8 whose only device line is unreadable: nothing usable, not "no devices".
    let all_bad = dir.path().join("proc_84_all_bad");
    std::fs::write(
        &all_bad,
        "version: 8.4.11 (api:1/proto:86-101)\nsrcversion: X\n 0: cs:Connected C r-----\n",
    )
    .unwrap();
    let all_bad = all_bad.display().to_string();
    let missing = dir.path().join("no-such-proc-drbd").display().to_string();
    let no_tool = "/nonexistent/vmwarden-test/drbdsetup";

    // 8.x with devices: the proc file alone, drbdsetup never consulted.
    let p = probe(&cfg(&fixture("proc84_syncsource.txt"), no_tool), T)
        .await
        .unwrap();
    assert_eq!(p.value.source, DrbdSource::Proc8);
    assert_eq!(p.value.version.as_deref(), Some("8.4.1"));
    assert_eq!(p.value.volumes.len(), 2);
    assert!(p.errors.is_empty());

    // 8.x module loaded, nothing configured: still 8.x, an empty snapshot.
    let p = probe(&cfg(&empty_84, no_tool), T).await.unwrap();
    assert_eq!(p.value.source, DrbdSource::Proc8);
    assert!(p.value.volumes.is_empty());

    // Malformed proc: the good minors and the errors come back.
    let p = probe(&cfg(&fixture("proc84_malformed.txt"), no_tool), T)
        .await
        .unwrap();
    assert_eq!(p.value.volumes.len(), 4);
    assert_eq!(p.errors.len(), 6);

    // DRBD 9: /proc/drbd has no devices, so drbdsetup status --json; version from proc.
    let p = probe(&cfg(&fixture("proc9_transports.txt"), &drbdsetup9), T)
        .await
        .unwrap();
    assert_eq!(p.value.source, DrbdSource::Json9);
    assert_eq!(p.value.version.as_deref(), Some("9.2.8"));
    assert_eq!(p.value.volumes.len(), 2);
    assert!(p.errors.is_empty(), "{:?}", p.errors);

    // No proc file but drbdsetup answers: JSON, version unknown.
    let p = probe(&cfg(&missing, &drbdsetup9), T).await.unwrap();
    assert_eq!(p.value.source, DrbdSource::Json9);
    assert_eq!(p.value.version, None);

    // Neither: absent, and the message says why.
    match probe(&cfg(&missing, no_tool), T).await {
        Err(ProbeError::Absent(why)) => {
            assert!(why.starts_with("no DRBD on this node"), "{why}");
            assert!(
                why.contains("does not exist") && why.contains("not installed"),
                "{why}"
            );
        }
        other => panic!("expected Absent, got {other:?}"),
    }

    // 8.4 tools reject --json: an 8.x-only node; with no proc file that is no DRBD at all.
    match probe(&cfg(&missing, &drbdsetup84), T).await {
        Err(ProbeError::Absent(why)) => assert!(why.contains("8.4"), "{why}"),
        other => panic!("expected Absent, got {other:?}"),
    }

    // No module (no proc file) and drbdsetup fails: absent too.
    assert!(matches!(
        probe(&cfg(&missing, &failing), T).await,
        Err(ProbeError::Absent(_))
    ));

    // A proc file that exists but cannot be read (here: a directory) is a failure, not absence.
    let unreadable = dir.path().display().to_string();
    match probe(&cfg(&unreadable, no_tool), T).await {
        Err(ProbeError::Failed(why)) => assert!(why.contains("cannot read"), "{why}"),
        other => panic!("expected Failed, got {other:?}"),
    }

    // DRBD 9 module but no drbd-utils: a failure the operator must fix, not an absence.
    match probe(&cfg(&fixture("proc9_transports.txt"), no_tool), T).await {
        Err(ProbeError::Failed(why)) => assert!(why.contains("drbd-utils"), "{why}"),
        other => panic!("expected Failed, got {other:?}"),
    }

    // DRBD 9 and drbdsetup fails or prints garbage: failed, with what it said.
    match probe(&cfg(&fixture("proc9_transports.txt"), &failing), T).await {
        Err(ProbeError::Failed(why)) => assert!(why.contains("Could not connect"), "{why}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    match probe(&cfg(&fixture("proc9_transports.txt"), &broken), T).await {
        Err(ProbeError::Failed(why)) => assert!(why.contains("not its JSON"), "{why}"),
        other => panic!("expected Failed, got {other:?}"),
    }

    // Not DRBD's format at all: failed, saying what was seen, not "install drbd-utils"; with
    // the 8.4 tool too (that used to be a successful collection of nothing).
    for tool in [no_tool, drbdsetup84.as_str()] {
        match probe(&cfg(&garbage, tool), T).await {
            Err(ProbeError::Failed(why)) => {
                assert!(why.contains("not in DRBD's format"), "{why}");
                assert!(why.contains("proc_path"), "{why}");
                assert!(!why.contains("install drbd-utils"), "{why}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    // DRBD 8 where no device could be read: failed with the first problem.
    match probe(&cfg(&all_bad, no_tool), T).await {
        Err(ProbeError::Failed(why)) => {
            assert!(why.contains("nothing in it could be read"), "{why}");
            assert!(why.contains("without `ro:` and `ds:`"), "{why}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}
