//! sanlock parsers over real captures (tests/fixtures/sanlock/, see its README), malformed input,
//! arbitrary bytes, and the rendered metrics of one capture (golden file).

mod support;

use proptest::prelude::*;
use support::{fixture, golden, render, samples};
use vmwarden::probe::sanlock::{
    merge_gets, parse_gets, parse_renewal, parse_status, HostState, LeaseMode, ListState,
    SanlockSnapshot,
};

const LEASES: &str = "/tmp/vmwarden-sanlock-capture.H0lXOs/leases";

/// status -D + gets -h 1 + renewal of one capture, as the probe combines them.
fn snapshot(status: &str, gets: &str, renewal: Option<&str>) -> (SanlockSnapshot, Vec<String>) {
    let mut p = parse_status(&fixture(status));
    let g = parse_gets(&fixture(gets));
    p.errors.extend(g.errors);
    merge_gets(&mut p.value, g.value, &mut p.errors);
    if let Some(r) = renewal {
        let r = parse_renewal(&fixture(r));
        p.errors.extend(r.errors);
        p.value.lockspaces[0].renewal = r.value;
    }
    (p.value, p.errors)
}

#[test]
fn status_d_of_host_1() {
    let p = parse_status(&fixture("sanlock/h1-status-D.txt"));
    assert_eq!(p.errors, Vec::<String>::new());
    let s = p.value;
    let d = s.daemon.as_ref().unwrap();
    assert_eq!(d.host_name, "8e6f974c-2247-47b3-98bd-3801a48d8e4e.vm");
    assert_eq!(d.version.as_deref(), Some("3.8.5"));
    assert_eq!(d.monotime, Some(2259));
    assert_eq!(s.monotime, Some(2259));
    // helper, listener, two lease holders (registered without a name), status
    assert_eq!(s.clients.len(), 5);
    assert!(s.clients.iter().any(|c| c.pid == 3632 && c.name.is_empty()));
    assert_eq!(s.client_name(-1), "helper");

    assert_eq!(s.lockspaces.len(), 1);
    let ls = &s.lockspaces[0];
    assert_eq!(
        (ls.name.as_str(), ls.host_id, ls.path.as_str(), ls.offset),
        ("LS", 1, LEASES, 0)
    );
    assert_eq!(ls.state, ListState::Active);
    assert_eq!(ls.io_timeout, Some(1));
    assert_eq!(ls.host_generation, Some(1));
    assert_eq!(ls.space_dead, Some(0));
    assert_eq!(ls.killing_pids, Some(0));
    assert_eq!(ls.renewal_last_result, Some(1));
    assert_eq!(ls.renewal_last_success, Some(2257));
    assert_eq!(ls.acquire_last_success, Some(2249));
    assert_eq!(s.renewal_age_seconds(ls), Some(2));

    assert_eq!(s.resources.len(), 2);
    let vm2 = &s.resources[0];
    assert_eq!((vm2.lockspace.as_str(), vm2.name.as_str()), ("LS", "vm2"));
    assert_eq!(vm2.mode, LeaseMode::Shared);
    assert_eq!(vm2.lver, None);
    assert_eq!(vm2.pid, 3643);
    assert_eq!(vm2.disks.len(), 1);
    assert_eq!(
        (vm2.disks[0].path.as_str(), vm2.disks[0].offset),
        (LEASES, 2097152)
    );
    let vm1 = &s.resources[1];
    assert_eq!(vm1.name, "vm1");
    assert_eq!(vm1.mode, LeaseMode::Exclusive);
    assert_eq!(vm1.lver, Some(1));
    assert_eq!(vm1.pid, 3632);
    assert_eq!(vm1.state, ListState::Active);
}

#[test]
fn plain_status_has_the_same_lines_without_details() {
    let p = parse_status(&fixture("sanlock/h1-status.txt"));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.value.lockspaces[0].host_id, 1);
    assert_eq!(p.value.lockspaces[0].io_timeout, None);
    assert_eq!(p.value.resources.len(), 2);
    assert_eq!(p.value.monotime, None);
}

#[test]
fn host_2_holds_vm3_exclusively_and_vm2_shared() {
    let p = parse_status(&fixture("sanlock/h2-status-D.txt"));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.value.lockspaces[0].host_id, 2);
    let r: Vec<_> = p
        .value
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.mode, r.pid))
        .collect();
    assert_eq!(
        r,
        vec![
            ("vm3", LeaseMode::Exclusive, 3699),
            ("vm2", LeaseMode::Shared, 3688)
        ]
    );
}

#[test]
fn gets_two_hosts_live_from_both_sides() {
    for (f, me) in [("sanlock/h1-gets-h1.txt", 1), ("sanlock/h2-gets-h1.txt", 2)] {
        let g = parse_gets(&fixture(f));
        assert!(g.errors.is_empty(), "{f}: {:?}", g.errors);
        assert_eq!(g.value.len(), 1);
        assert_eq!(g.value[0].name, "LS");
        assert_eq!(g.value[0].host_id, me);
        let hosts = g.value[0].hosts.as_ref().unwrap();
        assert_eq!(hosts.len(), 2);
        assert!(hosts
            .iter()
            .all(|h| h.state == HostState::Live && h.generation == 1));
        assert_eq!(hosts[0].host_id, 1);
        assert_eq!(hosts[1].host_id, 2);
    }
}

#[test]
fn gets_peer_fail_then_dead() {
    let g = parse_gets(&fixture("sanlock/h1-gets-h1-peer-fail.txt"));
    assert!(g.errors.is_empty(), "{:?}", g.errors);
    let ls = g.value.iter().find(|l| l.name == "LS").unwrap();
    let h2 = &ls.hosts.as_ref().unwrap()[1];
    assert_eq!(
        (h2.host_id, h2.timestamp, &h2.state),
        (2, 2260, &HostState::Fail)
    );
    // LS2 was still being added: "hosts error -2", no host list.
    let ls2 = g.value.iter().find(|l| l.name == "LS2").unwrap();
    assert_eq!(ls2.hosts, None);

    let g = parse_gets(&fixture("sanlock/h1-gets-h1-peer-dead.txt"));
    assert!(g.errors.is_empty(), "{:?}", g.errors);
    let ls = g.value.iter().find(|l| l.name == "LS").unwrap();
    let h2 = &ls.hosts.as_ref().unwrap()[1];
    assert_eq!(
        (h2.host_id, h2.timestamp, &h2.state),
        (2, 2260, &HostState::Dead)
    );
    assert_eq!(
        g.value
            .iter()
            .find(|l| l.name == "LS2")
            .unwrap()
            .hosts
            .as_ref()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn lockspace_being_added() {
    let p = parse_status(&fixture("sanlock/h1-status-D-adding.txt"));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let ls2 = p.value.lockspaces.iter().find(|l| l.name == "LS2").unwrap();
    assert_eq!(ls2.state, ListState::Adding);
    assert_eq!(ls2.io_timeout, Some(10));
    assert_eq!(ls2.host_generation, Some(0));
    // Never renewed yet: no age rather than a huge one.
    assert_eq!(p.value.renewal_age_seconds(ls2), None);
}

#[test]
fn renewal_history() {
    let r = parse_renewal(&fixture("sanlock/h1-renewal.txt"));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let r = r.value.unwrap();
    assert_eq!(r.entries, 4);
    assert_eq!(
        (r.last_timestamp, r.last_read_ms, r.last_write_ms),
        (2257, 1, 0)
    );
    assert_eq!((r.timeouts, r.errors), (0, 0));
    assert_eq!(parse_renewal("").value, None);
}

#[test]
fn lvmlockd_leases_are_named_by_lv_uuid() {
    let (s, errors) = snapshot(
        "sanlock/lvmlockd-h1-status-D.txt",
        "sanlock/lvmlockd-h1-gets-h1.txt",
        None,
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(s.lockspaces[0].name, "lvm_vg1");
    assert_eq!(s.lockspaces[0].path, "/dev/mapper/vg1-lvmlock");
    let modes: Vec<_> = s
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.mode, r.disks[0].offset))
        .collect();
    assert_eq!(
        modes,
        vec![
            (
                "bnIrtr-Bgzs-GjFM-Cezq-iMMs-Vs4T-ztSTMJ",
                LeaseMode::Shared,
                71303168
            ),
            (
                "ViULTC-qzY8-8mX0-Kas7-ZP3o-4oNd-yofUEQ",
                LeaseMode::Exclusive,
                70254592
            ),
        ]
    );
    // lvmlockd holds all LV leases of the host.
    assert!(s
        .resources
        .iter()
        .all(|r| s.client_name(r.pid) == "lvmlockd"));
}

#[test]
fn host_status_and_acquire_outputs_are_not_status() {
    // Other captured outputs fed to the status parser: skipped line by line, never a panic.
    for f in [
        "sanlock/h1-host-status-D.txt",
        "sanlock/h2-acquire-vm1-held-by-h1.txt",
        "sanlock/no-daemon.txt",
    ] {
        let p = parse_status(&fixture(f));
        assert!(
            p.value.lockspaces.is_empty() && p.value.resources.is_empty(),
            "{f}"
        );
        assert!(!p.errors.is_empty(), "{f}");
    }
}

#[test]
fn malformed_lines_are_skipped_and_counted() {
    let text = "\
daemon abc.vm
    monotime=notanumber
p x broken
s LS:1:/leases:0
    io_timeout=10
    renewal_last_success=95
s :1:/x:0
s LS3:notanid:/x:0
r LS:vm1:/leases:1048576:7 p 12
r LS:vm9:/leases:1048576:weird p 12
r LS:vm8:/leases p 12
r LS:vm7:/leases:2097152:SH p notapid
r LS:vm6:/leases:3145728:SH p 13 ORPHAN
what is this
    detail_without_equals
";
    let p = parse_status(text);
    let s = &p.value;
    assert_eq!(s.daemon.as_ref().unwrap().monotime, None);
    assert_eq!(s.lockspaces.len(), 1);
    assert_eq!(s.lockspaces[0].io_timeout, Some(10));
    let names: Vec<_> = s.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["vm1", "vm6"]);
    assert_eq!(s.resources[1].state, ListState::Orphan);
    // monotime, p x, s :1, s LS3, vm9, vm8, vm7, "what is this", detail_without_equals
    assert_eq!(p.errors.len(), 9, "{:#?}", p.errors);

    let g = parse_gets(
        "h 1 gen 1 timestamp 5 LIVE\ns LS:1:/l:0 \nh 1 gen 1 timestamp 5 LIVE\nh 2 gen x timestamp 5 LIVE\nh 3 gen 2 timestamp 9 ERROR\ngets error -2\n",
    );
    let hosts = g.value[0].hosts.as_ref().unwrap();
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[1].state, HostState::Other("ERROR".into()));
    assert_eq!(g.errors.len(), 3, "{:#?}", g.errors);

    let r = parse_renewal("timestamp=1 read_ms=2 write_ms=3 next_timeouts=1 next_errors=0\ngarbage\ntimestamp=x\ntimestamp=4 read_ms=5 write_ms=6 next_timeouts=2 next_errors=1\n");
    assert_eq!(r.errors.len(), 2);
    let r = r.value.unwrap();
    assert_eq!(
        (r.entries, r.last_read_ms, r.timeouts, r.errors),
        (2, 5, 3, 1)
    );
}

#[test]
fn paths_with_colons_are_unescaped() {
    let p = parse_status("s LS:1:/dev/disk/by-path/pci-0000\\:00\\:05.0:0\nr LS:r:/dev/disk/by-path/pci-0000\\:00\\:05.0:1048576:SH p 7\n");
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(
        p.value.lockspaces[0].path,
        "/dev/disk/by-path/pci-0000:00:05.0"
    );
    assert_eq!(
        p.value.resources[0].disks[0].path,
        "/dev/disk/by-path/pci-0000:00:05.0"
    );
}

#[test]
fn metrics_golden_host_1() {
    let (s, errors) = snapshot(
        "sanlock/h1-status-D.txt",
        "sanlock/h1-gets-h1.txt",
        Some("sanlock/h1-renewal.txt"),
    );
    assert!(errors.is_empty(), "{errors:?}");
    let text = render(|reg| vmwarden::metrics::sanlock::encode(reg, &s));
    let lines = samples(&text);
    assert!(
        lines.contains(
            &r#"vmwarden_sanlock_resource_held{lockspace="LS",resource="vm1",mode="ex"} 1"#
        ),
        "{text}"
    );
    assert!(
        lines.contains(
            &r#"vmwarden_sanlock_resource_held{lockspace="LS",resource="vm2",mode="sh"} 1"#
        ),
        "{text}"
    );
    assert!(
        lines
            .contains(&r#"vmwarden_sanlock_host_state{lockspace="LS",host_id="2",state="LIVE"} 1"#),
        "{text}"
    );
    assert!(
        lines.contains(&r#"vmwarden_sanlock_renewal_age_seconds{lockspace="LS"} 2"#),
        "{text}"
    );
    golden("sanlock/h1.metrics", &support::sorted_metrics(&text));
}

#[test]
fn metrics_peer_dead_and_lockspace_adding() {
    let (s, errors) = snapshot(
        "sanlock/h1-status-D-adding.txt",
        "sanlock/h1-gets-h1-peer-fail.txt",
        None,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let text = render(|reg| vmwarden::metrics::sanlock::encode(reg, &s));
    let lines = samples(&text);
    assert!(
        lines
            .contains(&r#"vmwarden_sanlock_host_state{lockspace="LS",host_id="2",state="FAIL"} 1"#),
        "{text}"
    );
    assert!(
        lines.contains(&r#"vmwarden_sanlock_lockspace_state{lockspace="LS2",state="adding"} 1"#),
        "{text}"
    );
    // No hosts listed for LS2 yet, and no renewal age before its first renewal.
    assert!(!text.contains(r#"host_state{lockspace="LS2""#), "{text}");
    assert!(
        !text.contains(r#"renewal_age_seconds{lockspace="LS2""#),
        "{text}"
    );

    let (s, errors) = snapshot(
        "sanlock/h1-status-D-peer-dead.txt",
        "sanlock/h1-gets-h1-peer-dead.txt",
        None,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let text = render(|reg| vmwarden::metrics::sanlock::encode(reg, &s));
    assert!(
        samples(&text)
            .contains(&r#"vmwarden_sanlock_host_state{lockspace="LS",host_id="2",state="DEAD"} 1"#),
        "{text}"
    );
    assert!(
        samples(&text).contains(&r#"vmwarden_sanlock_renewal_age_seconds{lockspace="LS"} 1"#),
        "{text}"
    );
    assert!(
        samples(&text).contains(&r#"vmwarden_sanlock_renewal_age_seconds{lockspace="LS2"} 10"#),
        "{text}"
    );
}

fn all_fixtures() -> Vec<String> {
    let dir = support::repo().join("tests/fixtures/sanlock");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "txt"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    v.sort();
    v
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let s = parse_status(&text).value;
        let _ = parse_gets(&text);
        let _ = parse_renewal(&text);
        let _ = render(|reg| vmwarden::metrics::sanlock::encode(reg, &s));
    }

    #[test]
    fn arbitrary_lines_never_panic(lines in proptest::collection::vec("[ a-zA-Z0-9:=\\\\/._-]{0,60}", 0..40)) {
        let text = lines.join("\n");
        let _ = parse_status(&text);
        let _ = parse_gets(&text);
        let _ = parse_renewal(&text);
    }

    /// Real captures with bytes deleted, replaced or lines cut: never a panic, and
    /// everything parsed still renders.
    #[test]
    fn mutated_fixtures_never_panic(
        which in 0usize..64,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..16),
    ) {
        let all = all_fixtures();
        let mut bytes = all[which % all.len()].clone().into_bytes();
        for (idx, b, op) in edits {
            if bytes.is_empty() { break; }
            let i = idx.index(bytes.len());
            match op {
                0 => { bytes.remove(i); }
                1 => bytes[i] = b,
                _ => bytes.truncate(i),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut p = parse_status(&text);
        let g = parse_gets(&text);
        merge_gets(&mut p.value, g.value, &mut p.errors);
        let _ = parse_renewal(&text);
        let _ = render(|reg| vmwarden::metrics::sanlock::encode(reg, &p.value));
    }
}
