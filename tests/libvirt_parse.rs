//! Pure parts of the libvirt probe: disk/interface extraction from domain XML (fixtures are real
//! `virsh dumpxml` output from libvirt 9.0, the running one extended with the disk kinds a cluster
//! node has) and the state/reason mapping.

use proptest::prelude::*;
use vmwarden::probe::libvirt::{
    parse_domain_xml, Disk, DomainState, Interface, PausedReason, RunningReason, ShutoffReason,
};

fn fixture(name: &str) -> String {
    let p = format!(
        "{}/tests/fixtures/libvirt/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn disk(target: &str, device: &str, ty: &str, source: Option<&str>) -> Disk {
    Disk {
        target: target.into(),
        device: device.into(),
        source_type: ty.into(),
        source: source.map(Into::into),
        stats: None,
    }
}

#[test]
fn running_domain_disks_and_interfaces() {
    let p = parse_domain_xml(&fixture("domain-running.xml"));
    assert_eq!(
        p.value.disks,
        vec![
            disk(
                "vda",
                "disk",
                "file",
                Some("/var/lib/libvirt/images/vm1-seed.raw")
            ),
            disk("vdb", "disk", "block", Some("/dev/vg_cluster/vm1-root")),
            disk("vdc", "disk", "block", Some("/dev/drbd1000")),
            // The overlay, not its backing file (which has a <source> of its own, nested).
            disk(
                "vdd",
                "disk",
                "file",
                Some("/var/lib/libvirt/images/vm1-overlay.qcow2")
            ),
            disk("vde", "disk", "network", Some("rbd:rbd-pool/vm1-data")),
            disk("vdf", "disk", "network", Some("nbd://storage1:10809")),
            disk("vdg", "disk", "volume", Some("default/vm1-scratch.img")),
            disk("sda", "cdrom", "file", None),
        ]
    );
    // The disk without <target dev> is skipped and said so.
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert!(
        p.errors[0].contains("domain vm1") && p.errors[0].contains("target"),
        "{:?}",
        p.errors
    );
    assert_eq!(
        p.value.interfaces,
        vec![
            Interface {
                target: Some("vnet0".into()),
                mac: Some("52:54:00:2b:09:b7".into()),
                if_type: "ethernet".into(),
                stats: None
            },
            Interface {
                target: Some("vnet7".into()),
                mac: Some("52:54:00:aa:bb:cc".into()),
                if_type: "bridge".into(),
                stats: None
            },
            Interface {
                target: None,
                mac: Some("52:54:00:dd:ee:ff".into()),
                if_type: "network".into(),
                stats: None
            },
        ]
    );
}

#[test]
fn inactive_domain_has_sources_but_no_tap_names() {
    let p = parse_domain_xml(&fixture("domain-inactive.xml"));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(
        p.value.disks,
        vec![disk(
            "vda",
            "disk",
            "block",
            Some("/dev/vg_cluster/vm2-root")
        )]
    );
    assert_eq!(p.value.interfaces.len(), 1);
    assert_eq!(p.value.interfaces[0].target, None);
    assert_eq!(p.value.interfaces[0].if_type, "ethernet");
}

#[test]
fn bad_xml_is_a_note_not_a_panic() {
    for (xml, want) in [
        ("", "does not parse"),
        ("<domain><devices><disk>", "does not parse"),
        ("<network><name>x</name></network>", "expected <domain>"),
        (
            "<!DOCTYPE d [<!ENTITY a 'aaaa'>]><domain>&a;</domain>",
            "does not parse",
        ),
    ] {
        let p = parse_domain_xml(xml);
        assert_eq!(p.value.disks.len() + p.value.interfaces.len(), 0, "{xml}");
        assert!(
            p.errors.iter().any(|e| e.contains(want)),
            "{xml}: {:?}",
            p.errors
        );
    }
    // A domain without devices is fine and empty.
    let p = parse_domain_xml("<domain type='kvm'><name>x</name></domain>");
    assert!(p.errors.is_empty() && p.value.disks.is_empty());
}

#[test]
fn state_and_reason_mapping() {
    assert_eq!(
        DomainState::from_raw(1, 1),
        DomainState::Running(RunningReason::Booted)
    );
    assert_eq!(
        DomainState::from_raw(5, 3),
        DomainState::Shutoff(ShutoffReason::Crashed)
    );
    assert_eq!(
        DomainState::from_raw(3, 5),
        DomainState::Paused(PausedReason::IoError)
    );
    let names: Vec<_> = (0..=8)
        .map(|r| DomainState::from_raw(5, r).reason().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "unknown",
            "shutdown",
            "destroyed",
            "crashed",
            "migrated",
            "saved",
            "failed",
            "from_snapshot",
            "daemon"
        ]
    );
    assert_eq!(ShutoffReason::NAMES.len(), 9);
    assert_eq!(RunningReason::NAMES[1], "booted");
    // Every known state has a series in the StateSet.
    for s in 0..=7 {
        let d = DomainState::from_raw(s, 0);
        assert!(DomainState::NAMES.contains(&d.name().as_ref()), "{d:?}");
    }
    assert_eq!(DomainState::from_raw(-1, -1).name(), "unknown_-1");
}

proptest! {
    #[test]
    fn xml_extractor_never_panics(s in ".{0,400}") {
        let _ = parse_domain_xml(&s);
    }

    #[test]
    fn xml_extractor_never_panics_on_domain_like_input(
        parts in prop::collection::vec(
            prop_oneof![
                Just("<domain>".to_string()), Just("</domain>".to_string()),
                Just("<devices>".to_string()), Just("</devices>".to_string()),
                Just("<disk type='network'>".to_string()), Just("</disk>".to_string()),
                Just("<source protocol='rbd'/>".to_string()), Just("<source>".to_string()),
                Just("</source>".to_string()), Just("<host/>".to_string()),
                Just("<target dev=''/>".to_string()), Just("<target dev='vda'/>".to_string()),
                Just("<interface>".to_string()), Just("</interface>".to_string()),
                Just("<mac address='x'/>".to_string()), "[a-z<>/='\" &;]{0,12}",
            ],
            0..40,
        )
    ) {
        let _ = parse_domain_xml(&parts.concat());
    }
}
