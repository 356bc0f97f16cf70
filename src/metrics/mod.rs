//! Metrics: a node snapshot in, exposition text out (`exposition` writes it). A fresh registry
//! is built per scrape, so the series of a vanished VM, LV or minor vanish with it.
//! `docs/metrics.md` is the contract (tested).

pub mod drbd;
pub mod exposition;
pub mod invariants;
pub mod libvirt;
pub mod lvm;
pub mod sanlock;

pub use exposition::{
    counter, gauge, histogram, CounterFam, GaugeFam, HistogramFam, LabelSet, Registry,
};

use crate::collect::{CollectorReport, Observation, Outcome};

pub const COLLECTORS: [&str; 4] = ["drbd", "lvm", "sanlock", "libvirt"];

/// Cumulative per-collector counters kept by the agent across scrapes.
#[derive(Debug, Clone, Default)]
pub struct AgentCounters {
    /// (collector, skipped lines / odd fields so far)
    pub parse_errors: Vec<(&'static str, u64)>,
    /// The agent's action counters (absent in `vmwarden collect`).
    pub actions: Option<std::sync::Arc<crate::actions::stats::ActionStats>>,
    /// The agent's watchdog (absent in `vmwarden collect` and when disabled).
    pub watchdog: Option<std::sync::Arc<crate::watchdog::Watchdog>>,
}

/// The families of an observation (its snapshot and its judged invariants) and of the agent's
/// counters, ready to be written in either format (`Registry::write`).
pub fn render(obs: &Observation, counters: &AgentCounters) -> Registry {
    let snap = &obs.snapshot;
    let mut reg = Registry::default();

    let build = gauge(
        &mut reg,
        "vmwarden_build_info",
        "vmwarden build: value 1, version in labels",
    );
    build.set(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);

    // One family for the node's stack, one series per component: an alert compares each
    // component across nodes (`count by (component) (count by (component, version) (...))`).
    let versions = gauge(
        &mut reg,
        "vmwarden_node_version_info",
        "Always 1: the version of a component of this node's virtualisation stack (component = qemu, libvirt or drbd) in labels",
    );
    if let Outcome::Ok(l) = &snap.libvirt.outcome {
        for (c, v) in [
            ("libvirt", &l.libvirt_version),
            ("qemu", &l.hypervisor_version),
        ] {
            if let Some(v) = v {
                versions.set(&[("component", c), ("version", v.as_str())], 1.0);
            }
        }
    }
    if let Outcome::Ok(d) = &snap.drbd.outcome {
        if let Some(v) = &d.version {
            versions.set(&[("component", "drbd"), ("version", v.as_str())], 1.0);
        }
    }

    let success = gauge(
        &mut reg,
        "vmwarden_collector_success",
        "1 if the collector's last run succeeded, 0 if it failed, timed out, is absent or disabled",
    );
    let absent = gauge(
        &mut reg,
        "vmwarden_collector_absent",
        "1 if the collector's source does not exist on this node (e.g. no DRBD), else 0",
    );
    let duration = gauge(
        &mut reg,
        "vmwarden_collector_duration_seconds",
        "Wall time of the collector's last run, in seconds",
    );
    let parse_errors = counter(
        &mut reg,
        "vmwarden_parse_errors_total",
        "Lines or fields a collector skipped because they could not be parsed",
    );

    fn report<T>(
        name: &str,
        r: &CollectorReport<T>,
        success: &GaugeFam,
        absent: &GaugeFam,
        duration: &GaugeFam,
    ) -> Option<()> {
        let l = [("collector", name)];
        let (ok, ab) = match &r.outcome {
            Outcome::Ok(_) => (1.0, 0.0),
            Outcome::Absent(_) => (0.0, 1.0),
            Outcome::Failed(_) | Outcome::Disabled => (0.0, 0.0),
        };
        if matches!(r.outcome, Outcome::Disabled) {
            return None;
        }
        success.set(&l, ok);
        absent.set(&l, ab);
        duration.set(&l, r.duration.as_secs_f64());
        Some(())
    }
    report("drbd", &snap.drbd, &success, &absent, &duration);
    report("lvm", &snap.lvm, &success, &absent, &duration);
    report("sanlock", &snap.sanlock, &success, &absent, &duration);
    report("libvirt", &snap.libvirt, &success, &absent, &duration);
    for (c, n) in &counters.parse_errors {
        parse_errors.set(&[("collector", c)], *n as f64);
    }

    if let Outcome::Ok(s) = &snap.drbd.outcome {
        drbd::encode(&mut reg, s);
    }
    if let Outcome::Ok(s) = &snap.lvm.outcome {
        lvm::encode(&mut reg, s);
    }
    if let Outcome::Ok(s) = &snap.sanlock.outcome {
        sanlock::encode(&mut reg, s);
    }
    if let Outcome::Ok(s) = &snap.libvirt.outcome {
        libvirt::encode(&mut reg, s);
    }
    invariants::encode(&mut reg, &obs.invariants);
    // One series per configured peer, 0 when it could not be asked: an unreachable peer is
    // visible, and running_on_several_nodes is then not fully checked.
    let peer_up = gauge(
        &mut reg,
        "vmwarden_peer_up",
        "1 if the peer's agent answered with the VMs it runs on this scrape, 0 if it could not be reached or asked (running_on_several_nodes is then not fully checked)",
    );
    for p in &obs.peers {
        peer_up.set(
            &[("peer", p.node.as_str())],
            if p.active.is_ok() { 1.0 } else { 0.0 },
        );
    }
    if let Some(a) = &counters.actions {
        a.register(&mut reg);
    }
    if let Some(w) = &counters.watchdog {
        crate::watchdog::metrics::encode(&mut reg, w);
    }

    reg
}
