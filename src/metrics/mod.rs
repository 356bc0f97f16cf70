//! Metrics: a node snapshot in, OpenMetrics text out. A fresh registry is built per scrape, so the
//! series of a vanished VM, LV or minor vanish with it. `docs/metrics.md` is the contract (tested).

pub mod drbd;
pub mod libvirt;
pub mod lvm;
pub mod sanlock;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::collect::{CollectorReport, Outcome, Snapshot};

pub type Labels = Vec<(String, String)>;

fn to_labels(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A gauge family: `set` one series per label set.
#[derive(Clone)]
pub struct GaugeFam(Family<Labels, Gauge<f64, AtomicU64>>);

impl GaugeFam {
    pub fn set(&self, labels: &[(&str, &str)], v: f64) {
        self.0.get_or_create(&to_labels(labels)).set(v);
    }

    /// StateSet style: one series per state in `all`, 1 for `current` and 0 for the rest. A
    /// `current` outside `all` (a state this build does not know) still gets its series at 1.
    pub fn set_state(&self, labels: &[(&str, &str)], all: &[&str], current: &str) {
        let mut l = to_labels(labels);
        l.push(("state".to_string(), String::new()));
        let last = l.len() - 1;
        for s in all {
            l[last].1 = s.to_string();
            self.0
                .get_or_create(&l)
                .set(if *s == current { 1.0 } else { 0.0 });
        }
        if !all.contains(&current) {
            l[last].1 = current.to_string();
            self.0.get_or_create(&l).set(1.0);
        }
    }
}

/// A counter family whose values come from outside (kernel counters): set, not incremented.
#[derive(Clone)]
pub struct CounterFam(Family<Labels, Counter<f64, AtomicU64>>);

impl CounterFam {
    pub fn set(&self, labels: &[(&str, &str)], v: f64) {
        if v.is_finite() && v >= 0.0 {
            self.0.get_or_create(&to_labels(labels)).inc_by(v);
        }
    }
}

/// Register a gauge family under its full exposed name.
pub fn gauge(reg: &mut Registry, name: &str, help: &str) -> GaugeFam {
    let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    reg.register(name, help, f.clone());
    GaugeFam(f)
}

/// Register a counter family; `name` is the exposed sample name and must end in `_total`
/// (prometheus-client appends it, so it is stripped for registration).
pub fn counter(reg: &mut Registry, name: &str, help: &str) -> CounterFam {
    debug_assert!(
        name.ends_with("_total"),
        "counter {name} must end in _total"
    );
    let base = name.strip_suffix("_total").unwrap_or(name);
    let f = Family::<Labels, Counter<f64, AtomicU64>>::default();
    reg.register(base, help, f.clone());
    CounterFam(f)
}

pub const COLLECTORS: [&str; 4] = ["drbd", "lvm", "sanlock", "libvirt"];

/// Cumulative per-collector counters kept by the agent across scrapes.
#[derive(Debug, Clone, Default)]
pub struct AgentCounters {
    /// (collector, skipped lines / odd fields so far)
    pub parse_errors: Vec<(&'static str, u64)>,
}

/// Render a snapshot as OpenMetrics text.
pub fn render(snap: &Snapshot, counters: &AgentCounters) -> String {
    let mut reg = Registry::default();

    let build = gauge(
        &mut reg,
        "vmwarden_build_info",
        "vmwarden build: value 1, version in labels",
    );
    build.set(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);

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

    let mut out = String::with_capacity(64 * 1024);
    // Writing into a String cannot fail; an error here would be a bug in the encoder.
    if let Err(e) = encode(&mut out, &reg) {
        tracing::error!("encoding metrics failed: {e}");
    }
    out
}

/// The same exposition in Prometheus' classic text format (0.0.4), for clients that do not ask for
/// OpenMetrics (curl, `promtool check metrics`, older scrapers). prometheus-client only writes
/// OpenMetrics; the two differ, for what we emit, only in counter HELP/TYPE names and `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        if let Some((kind, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(kind);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_renames_counter_metadata_and_drops_eof() {
        let om = "# HELP x_bytes Bytes.\n# TYPE x_bytes counter\nx_bytes_total{a=\"1\"} 5\n\
                  # HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        let t = to_prometheus_text(om);
        assert_eq!(
            t,
            "# HELP x_bytes_total Bytes.\n# TYPE x_bytes_total counter\nx_bytes_total{a=\"1\"} 5\n\
             # HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }

    #[test]
    fn state_sets_cover_unknown_states() {
        let mut reg = Registry::default();
        let g = gauge(&mut reg, "t_state", "t");
        g.set_state(&[("x", "1")], &["a", "b"], "zz");
        let mut out = String::new();
        encode(&mut out, &reg).unwrap();
        assert!(out.contains("t_state{x=\"1\",state=\"a\"} 0"), "{out}");
        assert!(out.contains("t_state{x=\"1\",state=\"b\"} 0"), "{out}");
        assert!(out.contains("t_state{x=\"1\",state=\"zz\"} 1"), "{out}");
    }
}
