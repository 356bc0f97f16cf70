//! Against the real libvirtd (qemu:///system) with real qemu guests: one running, one whose qemu
//! was killed with SIGKILL. Checks the probe API and `vmwarden collect`. Needs root and
//! `scripts/test-services.sh` run first; skipped loudly otherwise (failed under
//! VMWARDEN_REQUIRE_REAL=1).

#[path = "support/libvirt-guest.rs"]
mod guest;

use std::time::{Duration, Instant};

use guest::{libvirtd_available, sample, virsh, Guest, URI};
use vmwarden::config::LibvirtConfig;
use vmwarden::probe::libvirt::{
    DomainState, LibvirtDomain, LibvirtProbe, LibvirtSnapshot, RunningReason, ShutoffReason,
};

/// Two guests started, the second's qemu killed -9 and seen by libvirt as crashed.
fn running_and_crashed(tag: &str) -> (Guest, Guest) {
    let a = Guest::define(&format!("{tag}-a"));
    let b = Guest::define(&format!("{tag}-b"));
    a.start();
    b.start();
    b.kill_qemu();
    b.wait_state("shut off (crashed)", Duration::from_secs(20));
    assert_eq!(a.state(), "running (booted)");
    (a, b)
}

fn probe() -> LibvirtProbe {
    LibvirtProbe::new(LibvirtConfig {
        enabled: true,
        uri: URI.to_string(),
    })
}

fn find<'a>(s: &'a LibvirtSnapshot, name: &str) -> &'a LibvirtDomain {
    s.domains
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("{name} not in the snapshot: {s:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_sees_running_and_crashed_guests() {
    if !libvirtd_available("probe_sees_running_and_crashed_guests") {
        return;
    }
    let (a, b) = running_and_crashed("probe");
    let p = probe();
    let t0 = Instant::now();
    let snap = p.probe(Duration::from_secs(10)).await.unwrap();
    eprintln!("probe took {:?}", t0.elapsed());
    let errs: Vec<_> = snap
        .errors
        .iter()
        .filter(|e| e.contains(&a.name) || e.contains(&b.name))
        .collect();
    assert!(errs.is_empty(), "{errs:?}");

    let da = find(&snap.value, &a.name);
    assert_eq!(da.state, DomainState::Running(RunningReason::Booted));
    assert!(da.persistent && !da.autostart);
    assert_eq!(da.vcpus, 1);
    assert_eq!(da.max_memory_bytes, 64 << 20);
    assert_eq!(da.memory_bytes, 64 << 20, "balloon.current");
    assert!(da.cpu_seconds.unwrap() > 0.0, "{da:?}");
    assert_eq!(da.uuid.len(), 36);
    assert_eq!(da.disks.len(), 1);
    assert_eq!(da.disks[0].target, "vda");
    assert_eq!(da.disks[0].source_type, "file");
    assert_eq!(da.disks[0].source.as_deref(), a.disk.to_str());
    // From the bulk stats' block group, matched to the XML's disk by its target name.
    let bs = da.disks[0].stats.as_ref().expect("block stats");
    assert!(
        bs.read_requests.is_some() && bs.written_bytes.is_some(),
        "{bs:?}"
    );
    assert_eq!(da.interfaces.len(), 1);
    let tap = da.interfaces[0].target.as_deref().unwrap();
    assert!(tap.starts_with("vnet"), "{tap}");
    let ns = da.interfaces[0].stats.as_ref().expect("interface stats");
    assert!(ns.rx_bytes.is_some() && ns.tx_drops.is_some(), "{ns:?}");
    assert!(da.interfaces[0].mac.is_some());

    let db = find(&snap.value, &b.name);
    assert_eq!(db.state, DomainState::Shutoff(ShutoffReason::Crashed));
    assert_eq!(db.cpu_seconds, None);
    assert_eq!(db.disks[0].source.as_deref(), b.disk.to_str());
    assert_eq!(db.disks[0].stats, None);
    assert_eq!(db.interfaces[0].target, None);

    // The connection is kept: a second probe works the same.
    let again = p.probe(Duration::from_secs(10)).await.unwrap();
    assert_eq!(find(&again.value, &a.name).state, da.state);
}

#[test]
fn collect_binary_exports_guest_metrics() {
    if !libvirtd_available("collect_binary_exports_guest_metrics") {
        return;
    }
    let (a, b) = running_and_crashed("collect");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vmwarden.toml");
    std::fs::write(
        &cfg,
        "[drbd]\nenabled = false\n[lvm]\nenabled = false\n[sanlock]\nenabled = false\n\
         [libvirt]\nuri = \"qemu:///system\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmwarden"))
        .args(["collect", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (an, bn) = (a.name.as_str(), b.name.as_str());
    let v = |name: &str, labels: &[(&str, &str)]| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };

    assert_eq!(
        v("vmwarden_collector_success", &[("collector", "libvirt")]),
        1.0
    );
    // One state series per domain, carrying state and reason.
    assert_eq!(
        v(
            "vmwarden_domain_state",
            &[("domain", an), ("state", "running"), ("reason", "booted")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "vmwarden_domain_state",
            &[("domain", an), ("state", "shutoff")]
        ),
        None,
        "{text}"
    );
    assert_eq!(
        v(
            "vmwarden_domain_state",
            &[("domain", bn), ("state", "shutoff"), ("reason", "crashed")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "vmwarden_domain_state",
            &[("domain", bn), ("state", "running")]
        ),
        None,
        "{text}"
    );
    for (g, disk) in [(an, &a.disk), (bn, &b.disk)] {
        assert_eq!(
            v(
                "vmwarden_domain_disk_source_info",
                &[
                    ("domain", g),
                    ("device", "vda"),
                    ("source", disk.to_str().unwrap())
                ]
            ),
            1.0
        );
    }
    assert!(v("vmwarden_domain_cpu_seconds_total", &[("domain", an)]) > 0.0);
    v(
        "vmwarden_domain_block_read_bytes_total",
        &[("domain", an), ("device", "vda")],
    );
    v(
        "vmwarden_domain_block_written_bytes_total",
        &[("domain", an), ("device", "vda")],
    );
    v(
        "vmwarden_domain_network_receive_bytes_total",
        &[("domain", an)],
    );
    v(
        "vmwarden_domain_network_transmit_bytes_total",
        &[("domain", an)],
    );
    assert_eq!(
        v(
            "vmwarden_domain_memory_bytes",
            &[("domain", an), ("kind", "max")]
        ),
        (64u64 << 20) as f64
    );
    // No runtime counters for the crashed one.
    assert!(sample(
        &text,
        "vmwarden_domain_cpu_seconds_total",
        &[("domain", bn)]
    )
    .is_none());
    assert!(sample(
        &text,
        "vmwarden_domain_block_read_bytes_total",
        &[("domain", bn)]
    )
    .is_none());
}

/// Transient guests created and destroyed while probing: a domain that vanishes between the list
/// and its own calls is skipped with a note, one that is being torn down loses its counters with a
/// note; the probe never fails because of either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanishing_domains_never_fail_the_probe() {
    if !libvirtd_available("vanishing_domains_never_fail_the_probe") {
        return;
    }
    let g = Guest::define("vanish");
    let name = format!("{}-transient", g.name);
    let xml = guest::guest_xml(&name, &g.disk);
    let xml_path = g.disk.with_extension("xml");
    std::fs::write(&xml_path, xml).unwrap();
    let churn = std::thread::spawn(move || {
        for _ in 0..4 {
            let o = virsh(&["create", xml_path.to_str().unwrap()]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            std::thread::sleep(Duration::from_millis(300));
            let _ = virsh(&["destroy", &name]);
        }
    });
    let p = probe();
    let (mut probes, mut notes) = (0, Vec::new());
    while !churn.is_finished() {
        let snap = p.probe(Duration::from_secs(10)).await.unwrap();
        probes += 1;
        notes.extend(snap.errors.into_iter().filter(|e| e.contains("transient")));
    }
    churn.join().unwrap();
    for n in &notes {
        assert!(
            n.contains("vanished during the probe")
                || n.contains("stopped during the probe")
                || n.contains(": no stats for "),
            "{n}"
        );
    }
    eprintln!(
        "{probes} probes during churn, {} notes: {notes:?}",
        notes.len()
    );
    assert!(probes > 0);
}

/// libvirtd answers but cannot open the URI: a failure that quotes libvirt and names the setting.
#[tokio::test]
async fn unsupported_uri_is_a_failure_with_the_reason() {
    if !libvirtd_available("unsupported_uri_is_a_failure_with_the_reason") {
        return;
    }
    let p = LibvirtProbe::new(LibvirtConfig {
        enabled: true,
        uri: "bogus:///x".to_string(),
    });
    match p.probe(Duration::from_secs(10)).await {
        Err(vmwarden::probe::ProbeError::Failed(m)) => {
            assert!(m.contains("bogus:///x") && m.contains("libvirt.uri"), "{m}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}
