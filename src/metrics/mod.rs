//! Metrics: a node snapshot in, OpenMetrics text out. A fresh registry is built per scrape, so the
//! series of a vanished VM, LV or minor vanish with it. `docs/metrics.md` is the contract (tested).

pub mod drbd;
pub mod invariants;
pub mod libvirt;
pub mod lvm;
pub mod sanlock;

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::collect::{CollectorReport, Observation, Outcome};

/// The samples of one family for one scrape, stored flat: every label value lives in one string,
/// so a family of thousands of series costs a handful of allocations. Encoding is left to
/// prometheus-client (through its `Collector` interface), which writes the exposition format.
#[derive(Debug, Default)]
struct Samples {
    /// Label values, back to back.
    text: String,
    /// (label name, value range in `text`).
    pairs: Vec<(&'static str, Range<u32>)>,
    /// (range of `pairs` holding the series' labels, value).
    series: Vec<(Range<u32>, f64)>,
}

impl Samples {
    fn push_pair(&mut self, k: &'static str, v: &str) -> u32 {
        let start = self.text.len() as u32;
        self.text.push_str(v);
        self.pairs.push((k, start..self.text.len() as u32));
        (self.pairs.len() - 1) as u32
    }

    fn push_labels(&mut self, labels: &[(&'static str, &str)]) -> Range<u32> {
        let first = self.pairs.len() as u32;
        for (k, v) in labels {
            self.push_pair(k, v);
        }
        first..self.pairs.len() as u32
    }
}

#[derive(Debug)]
struct FamilyData {
    name: &'static str,
    help: String,
    kind: MetricType,
    samples: Mutex<Samples>,
}

impl FamilyData {
    fn lock(&self) -> MutexGuard<'_, Samples> {
        // A poisoned lock only means a panic elsewhere mid-push; the data is still usable.
        self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Hands one family to the registry (a local type, so it may implement prometheus-client's trait).
#[derive(Debug)]
struct FamilyCollector(Arc<FamilyData>);

impl Collector for FamilyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.lock();
        if s.series.is_empty() {
            // A family with no series (no resync running, no DRBD 9) is left out entirely.
            return Ok(());
        }
        // prometheus-client appends `_total` to counters itself.
        let f = &self.0;
        let name = match f.kind {
            MetricType::Counter => f.name.strip_suffix("_total").unwrap_or(f.name),
            _ => f.name,
        };
        let mut fam = encoder.encode_descriptor(name, &f.help, None, f.kind)?;
        fn encode_value(kind: MetricType, v: f64, m: MetricEncoder) -> Result<(), std::fmt::Error> {
            // Whole numbers (every state, byte and event counter) print as integers, as other
            // exporters do: shorter, and integer formatting is cheaper than float formatting.
            let whole = v.fract() == 0.0 && v.abs() < 9.0e15;
            match kind {
                MetricType::Counter if whole => ConstCounter::new(v as u64).encode(m),
                MetricType::Counter => ConstCounter::new(v).encode(m),
                _ if whole => ConstGauge::new(v as i64).encode(m),
                _ => ConstGauge::new(v).encode(m),
            }
        }
        // One series without labels: written bare (`name 1`), not as `name{} 1`.
        if let [(base, v)] = s.series.as_slice() {
            if base.is_empty() {
                return encode_value(f.kind, *v, fam);
            }
        }
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(8);
        let value_of = |r: &Range<u32>| s.text.get(r.start as usize..r.end as usize).unwrap_or("");
        for (base, v) in &s.series {
            labels.clear();
            for (k, r) in s
                .pairs
                .get(base.start as usize..base.end as usize)
                .unwrap_or(&[])
            {
                labels.push((k, value_of(r)));
            }
            let ls = labels.as_slice();
            encode_value(f.kind, *v, fam.encode_family(&ls)?)?;
        }
        Ok(())
    }
}

/// A gauge family: `set` one series per label set.
#[derive(Clone)]
pub struct GaugeFam(Arc<FamilyData>);

impl GaugeFam {
    pub fn set(&self, labels: &[(&'static str, &str)], v: f64) {
        let mut s = self.0.lock();
        let base = s.push_labels(labels);
        s.series.push((base, v));
    }
}

/// A counter family whose values come from outside (kernel counters): set, not incremented.
#[derive(Clone)]
pub struct CounterFam(Arc<FamilyData>);

impl CounterFam {
    pub fn set(&self, labels: &[(&'static str, &str)], v: f64) {
        if v.is_finite() && v >= 0.0 {
            let mut s = self.0.lock();
            let base = s.push_labels(labels);
            s.series.push((base, v));
        }
    }
}

fn family(
    reg: &mut Registry,
    name: &'static str,
    help: &'static str,
    kind: MetricType,
) -> Arc<FamilyData> {
    let f = Arc::new(FamilyData {
        name,
        // Same help text as Registry::register gives (it ends sentences with a period).
        help: format!("{help}."),
        kind,
        samples: Mutex::new(Samples::default()),
    });
    reg.register_collector(Box::new(FamilyCollector(f.clone())));
    f
}

/// Register a gauge family under its full exposed name.
pub fn gauge(reg: &mut Registry, name: &'static str, help: &'static str) -> GaugeFam {
    GaugeFam(family(reg, name, help, MetricType::Gauge))
}

/// Register a counter family; `name` is the exposed sample name and must end in `_total`.
pub fn counter(reg: &mut Registry, name: &'static str, help: &'static str) -> CounterFam {
    debug_assert!(
        name.ends_with("_total"),
        "counter {name} must end in _total"
    );
    CounterFam(family(reg, name, help, MetricType::Counter))
}

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

/// Render an observation (its snapshot and its judged invariants) as OpenMetrics text.
pub fn render(obs: &Observation, counters: &AgentCounters, capacity: usize) -> String {
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

    let mut out = String::with_capacity(capacity.max(16 * 1024));
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
    let mut out = Vec::with_capacity(openmetrics.len());
    // Writing into a Vec cannot fail.
    let _ = write_prometheus_text(openmetrics, &mut out);
    // Only whole lines of valid UTF-8 input are copied, and ASCII added.
    String::from_utf8(out).unwrap_or_default()
}

/// [`to_prometheus_text`] written to `out` (a gzip encoder, say) without building the whole
/// text first. The two formats differ only in metadata lines (a counter's HELP and TYPE name it
/// with `_total`; no UNIT, no EOF), about 60 of them among thousands of sample lines. So the
/// metadata lines are found with a SIMD search for "\n# " (a sample line cannot hold a newline:
/// label values are escaped) and the samples between them are copied in one piece each, instead
/// of line by line (the line-by-line copy cost 3-4 ms per 1,000-minor scrape).
pub fn write_prometheus_text(
    openmetrics: &str,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let om = openmetrics.as_bytes();
    // Start of every metadata line.
    let mut meta: Vec<usize> = Vec::with_capacity(128);
    if om.starts_with(b"# ") {
        meta.push(0);
    }
    meta.extend(memchr::memmem::find_iter(om, b"\n# ").map(|i| i + 1));
    let line_at = |start: usize| -> &str {
        let end = memchr::memchr(b'\n', &om[start..]).map_or(om.len(), |e| start + e);
        openmetrics.get(start..end).unwrap_or("")
    };
    let counters: std::collections::HashSet<&str> = meta
        .iter()
        .filter_map(|&m| line_at(m).strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut copied = 0;
    for &m in &meta {
        // Samples (and metadata needing no change) before this line, in one piece.
        out.write_all(&om[copied..m])?;
        let line = line_at(m);
        copied = (m + line.len() + 1).min(om.len());
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let kind = if line.starts_with("# HELP ") {
            "# HELP "
        } else if line.starts_with("# TYPE ") {
            "# TYPE "
        } else {
            ""
        };
        let rest = &line[kind.len()..];
        let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        if !kind.is_empty() && counters.contains(name) {
            for piece in [kind, name, "_total ", tail, "\n"] {
                out.write_all(piece.as_bytes())?;
            }
        } else {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.write_all(&om[copied..])?;
    if !om.is_empty() && !om.ends_with(b"\n") && copied < om.len() {
        // The line-by-line conversion ended every line with a newline, the last one too.
        out.write_all(b"\n")?;
    }
    Ok(())
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

    /// The chunked copy against the plain rule it replaces (each line on its own: UNIT and EOF
    /// dropped, a counter's HELP and TYPE renamed, every other line as it is), on odd texts.
    /// Real renders converted are checked by `promtool check metrics` in tests/metrics_contract.rs
    /// and by Prometheus itself in tests/prometheus_real.rs.
    #[test]
    fn classic_text_is_the_line_by_line_conversion() {
        fn by_lines(om: &str) -> String {
            let counters: std::collections::HashSet<&str> = om
                .lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| l.strip_suffix(" counter"))
                .collect();
            let mut out = String::new();
            for line in om.lines() {
                if line == "# EOF" || line.starts_with("# UNIT ") {
                    continue;
                }
                let meta = line
                    .strip_prefix("# HELP ")
                    .map(|r| ("# HELP ", r))
                    .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
                match meta {
                    Some((kind, rest))
                        if counters.contains(rest.split(' ').next().unwrap_or("")) =>
                    {
                        let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                        out.push_str(&format!("{kind}{name}_total {tail}\n"));
                    }
                    _ => {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
            out
        }
        let texts = [
            "",
            "# EOF\n",
            "# EOF",
            "g 1",
            "g 1\n",
            "# HELP c Events.\n# TYPE c counter\n# UNIT c seconds\nc_total 1\n# EOF\n",
            "# TYPE c counter\nc_total 1\n# HELP c Late help.\ng{a=\"# x\"} 2\n# EOF",
            "# HELP a\n# TYPE a counter\n# TYPE b gauge\nb 1\n#comment\n# \n",
            "x 1\n# TYPE x counter",
        ];
        for t in texts {
            assert_eq!(to_prometheus_text(t), by_lines(t), "{t:?}");
        }
    }
}
