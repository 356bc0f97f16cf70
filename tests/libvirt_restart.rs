//! libvirtd restarts and outages, for real: the probe's kept connection must survive a restart
//! at the cost of at most one failed probe, and a stopped libvirtd must be a failure with a hint.
//! Its own test binary (cargo runs test binaries one after another), and one test function, so
//! restarting libvirtd disturbs no other test. Needs root and scripts/test-services.sh.

#[path = "support/libvirt-guest.rs"]
mod guest;

use std::process::Command;
use std::time::Duration;

use guest::{is_root, libvirtd_available, skip_or_fail, Guest, URI};
use vmwarden::config::LibvirtConfig;
use vmwarden::probe::libvirt::{DomainState, LibvirtProbe, RunningReason};
use vmwarden::probe::ProbeError;

fn services(arg: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-services.sh");
    let st = Command::new("bash").args([script, arg]).status().unwrap();
    assert!(st.success(), "test-services.sh {arg} failed");
}

/// Starts libvirtd again if the test fails while it is stopped.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        if std::thread::panicking() {
            services("ensure");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libvirtd_restart_costs_at_most_one_failed_probe() {
    let name = "libvirtd_restart_costs_at_most_one_failed_probe";
    if !libvirtd_available(name) {
        return;
    }
    if !is_root() {
        skip_or_fail(name, "restarting libvirtd needs root");
        return;
    }
    let g = Guest::define("restart");
    g.start();
    // Declared after the guest so it drops first: libvirtd is back before the guest's cleanup.
    let _restore = Restore;
    let p = LibvirtProbe::new(LibvirtConfig {
        enabled: true,
        uri: URI.to_string(),
    });
    let t = Duration::from_secs(10);
    let running = |s: &vmwarden::probe::libvirt::LibvirtSnapshot| {
        s.domains.iter().find(|d| d.name == g.name).map(|d| d.state)
    };
    let first = p.probe(t).await.unwrap();
    assert_eq!(
        running(&first.value),
        Some(DomainState::Running(RunningReason::Booted))
    );

    // 1. Restart between two scrapes: the kept connection is dead; at most one probe may fail.
    services("restart-libvirtd");
    let mut failures = Vec::new();
    let mut ok = None;
    for _ in 0..3 {
        match p.probe(t).await {
            Ok(s) => {
                ok = Some(s);
                break;
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    eprintln!("failed probes after the restart: {failures:?}");
    assert!(failures.len() <= 1, "{failures:?}");
    let ok = ok.expect("a probe succeeds after the restart");
    // The old connection was found dead and replaced (not silently kept).
    assert_eq!(ok.value.reconnects, first.value.reconnects + 1);
    // The guest's qemu outlived libvirtd; the new daemon reattached to it.
    assert_eq!(
        running(&ok.value),
        Some(DomainState::Running(RunningReason::Booted))
    );

    // 2. libvirtd down: a failure (not absent) that says what to check; back up: recovered.
    services("stop-libvirtd");
    match p.probe(t).await {
        Err(ProbeError::Failed(m)) => {
            assert!(m.contains("is libvirtd running?"), "{m}")
        }
        other => panic!("expected Failed while libvirtd is down, got {other:?}"),
    }
    services("ensure");
    let back = p.probe(t).await.unwrap();
    assert!(running(&back.value).is_some());
}
