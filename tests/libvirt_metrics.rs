//! libvirt metrics: a golden rendering of a hand-built snapshot (regenerate with UPDATE_GOLDEN=1)
//! (docs/metrics.md is checked against the code in tests/metrics_contract.rs).

use vmwarden::metrics::Registry;
use vmwarden::probe::libvirt::{
    BlockStats, Disk, DomainState, Interface, InterfaceStats, LibvirtDomain, LibvirtSnapshot,
    PausedReason, RunningReason, ShutoffReason,
};

fn snapshot() -> LibvirtSnapshot {
    let vm1 = LibvirtDomain {
        name: "vm1".into(),
        uuid: "29b6163c-732f-44fa-9cea-cce83d12d08f".into(),
        state: DomainState::Running(RunningReason::Migrated),
        persistent: true,
        autostart: false,
        vcpus: 2,
        memory_bytes: 1 << 30,
        max_memory_bytes: 2 << 30,
        cpu_seconds: Some(12.5),
        disks: vec![
            Disk {
                target: "vda".into(),
                device: "disk".into(),
                source_type: "block".into(),
                source: Some("/dev/vg_cluster/vm1-root".into()),
                stats: Some(BlockStats {
                    read_bytes: Some(4096),
                    written_bytes: Some(8192),
                    read_requests: Some(1),
                    write_requests: Some(2),
                }),
            },
            Disk {
                target: "vdb".into(),
                device: "disk".into(),
                source_type: "network".into(),
                source: Some("rbd:pool/vm1-data".into()),
                // A hypervisor that reports no request counts (-1 in libvirt).
                stats: Some(BlockStats {
                    read_bytes: Some(0),
                    written_bytes: Some(0),
                    read_requests: None,
                    write_requests: None,
                }),
            },
            Disk {
                target: "sda".into(),
                device: "cdrom".into(),
                source_type: "file".into(),
                source: None,
                stats: None,
            },
        ],
        interfaces: vec![
            Interface {
                target: Some("vnet0".into()),
                mac: Some("52:54:00:2b:09:b7".into()),
                if_type: "bridge".into(),
                stats: Some(InterfaceStats {
                    rx_bytes: Some(1500),
                    rx_packets: Some(10),
                    rx_drops: Some(0),
                    tx_bytes: Some(3000),
                    tx_packets: Some(20),
                    tx_drops: Some(1),
                }),
            },
            Interface {
                target: None,
                mac: Some("52:54:00:dd:ee:ff".into()),
                if_type: "network".into(),
                stats: None,
            },
        ],
        intent: None,
    };
    let vm2 = LibvirtDomain {
        name: "vm2".into(),
        uuid: "3f0c6b7e-0000-4000-8000-000000000002".into(),
        state: DomainState::Shutoff(ShutoffReason::Crashed),
        persistent: true,
        autostart: true,
        vcpus: 1,
        memory_bytes: 64 << 20,
        max_memory_bytes: 64 << 20,
        cpu_seconds: None,
        disks: vec![Disk {
            target: "vda".into(),
            device: "disk".into(),
            source_type: "block".into(),
            source: Some("/dev/drbd1000".into()),
            stats: None,
        }],
        interfaces: vec![],
        intent: None,
    };
    let vm3 = LibvirtDomain {
        name: "vm3".into(),
        uuid: "3f0c6b7e-0000-4000-8000-000000000003".into(),
        state: DomainState::Paused(PausedReason::IoError),
        persistent: false,
        autostart: false,
        vcpus: 4,
        memory_bytes: 512 << 20,
        max_memory_bytes: 1 << 30,
        cpu_seconds: Some(0.25),
        disks: vec![],
        interfaces: vec![],
        intent: None,
    };
    // A state a newer libvirt might report.
    let vm4 = LibvirtDomain {
        name: "vm4".into(),
        uuid: "3f0c6b7e-0000-4000-8000-000000000004".into(),
        state: DomainState::from_raw(9, 2),
        ..LibvirtDomain::default()
    };
    LibvirtSnapshot {
        domains: vec![vm1, vm2, vm3, vm4],
        reconnects: 2,
        ..Default::default()
    }
}

fn render(snap: &LibvirtSnapshot) -> String {
    let mut reg = Registry::default();
    vmwarden::metrics::libvirt::encode(&mut reg, snap);
    normalize(&reg.to_openmetrics())
}

/// Families keep their order; samples inside a family are sorted (the golden file does not
/// depend on the order the encoder pushes them in).
fn normalize(text: &str) -> String {
    let mut out = Vec::new();
    let mut samples: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            samples.sort();
            out.append(&mut samples);
            out.push(line);
        } else {
            samples.push(line);
        }
    }
    samples.sort();
    out.append(&mut samples);
    out.join("\n") + "\n"
}

#[test]
fn golden_rendering() {
    let got = render(&snapshot());
    let path = format!(
        "{}/tests/fixtures/libvirt/snapshot.metrics",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
        eprintln!("updated {path}");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (create it with UPDATE_GOLDEN=1)"));
    assert_eq!(
        got, want,
        "rendering changed; if intended, rerun with UPDATE_GOLDEN=1"
    );
}

#[test]
fn facts_in_the_rendering() {
    let got = render(&snapshot());
    for line in [
        r#"vmwarden_domain_state{domain="vm1",state="running",reason="migrated"} 1"#,
        r#"vmwarden_domain_state{domain="vm2",state="shutoff",reason="crashed"} 1"#,
        r#"vmwarden_domain_state{domain="vm3",state="paused",reason="ioerror"} 1"#,
        // A state number this build does not know still shows.
        r#"vmwarden_domain_state{domain="vm4",state="unknown_9",reason="unknown_2"} 1"#,
        r#"vmwarden_domain_disk_source_info{domain="vm2",device="vda",type="block",source="/dev/drbd1000"} 1"#,
        r#"vmwarden_domain_memory_bytes{domain="vm1",kind="max"} 2147483648"#,
        r#"vmwarden_domain_cpu_seconds_total{domain="vm1"} 12.5"#,
        r#"vmwarden_domain_network_transmit_bytes_total{domain="vm1",interface="vnet0"} 3000"#,
    ] {
        assert!(got.lines().any(|l| l == line), "missing {line}\n{got}");
    }
    // No runtime counters for a stopped domain, no source series for an empty CD-ROM, no request
    // counters the hypervisor did not report.
    assert!(!got.contains(r#"cpu_seconds_total{domain="vm2"}"#));
    assert!(!got.contains(r#"device="sda""#));
    assert!(!got.contains(r#"read_requests_total{domain="vm1",device="vdb"}"#));
    // One state series per domain, at 1, carrying state and reason (no 0/1 series per state).
    for vm in ["vm1", "vm2", "vm3", "vm4"] {
        let series: Vec<&str> = got
            .lines()
            .filter(|l| l.starts_with(&format!("vmwarden_domain_state{{domain=\"{vm}\",")))
            .collect();
        assert_eq!(series.len(), 1, "{vm}: {series:?}");
        assert!(series[0].ends_with(" 1"), "{vm}: {series:?}");
    }
}
