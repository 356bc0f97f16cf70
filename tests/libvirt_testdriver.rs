//! The probe against libvirt's built-in test driver (`test:///<node.xml>`): real libvirt calls
//! through the real client library, no daemon, no root — so it runs everywhere. The node file
//! defines a paused, a running and a shut-off domain.

use std::time::Duration;

use vmwarden::config::LibvirtConfig;
use vmwarden::probe::libvirt::{DomainState, LibvirtProbe};

fn probe() -> LibvirtProbe {
    let node = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/libvirt/testdriver-node.xml"
    );
    LibvirtProbe::new(LibvirtConfig {
        enabled: true,
        uri: format!("test://{node}"),
    })
}

#[tokio::test]
async fn test_driver_domains() {
    let p = probe();
    let snap = p.probe(Duration::from_secs(10)).await.unwrap();
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    let s = snap.value;
    let names: Vec<_> = s.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["off1", "paused1", "run1"], "sorted by name");
    assert_eq!(s.reconnects, 0);

    let [off, paused, run] = [&s.domains[0], &s.domains[1], &s.domains[2]];
    assert_eq!(off.state.name(), "shutoff");
    assert!(!off.state.is_active());
    assert_eq!(off.cpu_seconds, None);

    assert_eq!(paused.state.name(), "paused");
    assert_eq!(paused.vcpus, 2);
    assert_eq!(paused.memory_bytes, 64 << 20);
    assert_eq!(paused.disks[0].source.as_deref(), Some("/dev/vg/paused1"));
    assert_eq!(paused.disks[0].source_type, "block");
    assert!(
        paused.disks[0].stats.is_some(),
        "paused domains still have counters"
    );
    let nic = &paused.interfaces[0];
    assert_eq!(nic.target.as_deref(), Some("testnet0"));
    assert_eq!(nic.mac.as_deref(), Some("52:54:00:00:00:01"));
    // Interface counters come from the bulk stats, whose test-driver version has only the state
    // group: none, rather than made-up zeros (libvirt_real.rs checks them on real libvirtd).
    assert_eq!(nic.stats, None);

    assert!(matches!(run.state, DomainState::Running(_)));
    assert!(run.cpu_seconds.is_some());
    assert_eq!(run.disks[0].source.as_deref(), Some("/images/run1.img"));
    assert!(run.persistent);

    // The connection is kept and reused.
    let again = p.probe(Duration::from_secs(10)).await.unwrap();
    assert_eq!(again.value.domains.len(), 3);
}

#[tokio::test]
async fn concurrent_probes_take_turns() {
    let p = probe();
    let t = Duration::from_secs(10);
    let (a, b, c) = tokio::join!(p.probe(t), p.probe(t), p.probe(t));
    for r in [a, b, c] {
        assert_eq!(r.unwrap().value.domains.len(), 3);
    }
}
