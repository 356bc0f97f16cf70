//! The families of one scrape and their exposition text, written by us in either format.
//!
//! Hand-written rather than prometheus-client's encoder, which the agent used until issue 13:
//! profiled on a 1,000-minor scrape, its encoder (many small `write_str`s through `fmt::Write`)
//! was ≈ 37 % of the agent's CPU, it writes OpenMetrics only (classic text, the default answer,
//! was a second pass over megabytes), and it needs the whole text in memory before gzip sees any
//! of it. Here the samples are kept flat (every label value in one string) and written straight
//! into the requested format, in chunks, into whatever the caller gives (a gzip encoder). The
//! format is small: `# HELP`/`# TYPE` lines, `name{label="value",...} number`, and in OpenMetrics a
//! counter's metadata names it without `_total` and the text ends in `# EOF`. The output is
//! checked by `promtool check metrics` (tests/metrics_contract.rs), a real Prometheus
//! (tests/prometheus_real.rs) and the fuzz harnesses' strict parser.

use std::io::Write;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::negotiate::Format;

/// The samples of one family for one scrape, stored flat: each series' label set is written
/// once, escaped and in exposition syntax (`k="v",k2="v2"`), into one string, so a family of
/// thousands of series costs a handful of allocations and writing it is a copy per series.
#[derive(Debug, Default)]
struct Samples {
    /// Label sets, back to back.
    text: String,
    /// (range of `text` holding the series' label set, value).
    series: Vec<(Range<u32>, f64)>,
    /// Histograms only: (label set, sum, count, cumulative count per bucket of `Kind::Histogram`).
    hists: Vec<(Range<u32>, f64, u64, Vec<u64>)>,
}

impl Samples {
    /// Label values are escaped (`\\`, `\"`, `\n`): they come from the kernel, lvm, libvirt and
    /// operators.
    fn push_labels(&mut self, labels: &[(&'static str, &str)]) -> Range<u32> {
        let start = self.text.len() as u32;
        append_labels(&mut self.text, false, labels);
        start..self.text.len() as u32
    }

    /// A label set spelled once already (`LabelSet`): a copy.
    fn push_set(&mut self, labels: &LabelSet) -> Range<u32> {
        let start = self.text.len() as u32;
        self.text.push_str(&labels.0);
        start..self.text.len() as u32
    }

    fn is_empty(&self) -> bool {
        self.series.is_empty() && self.hists.is_empty()
    }
}

/// A label set escaped and spelled (`k="v",k2="v2"`) once, for the many families whose series
/// belong to one object: a DRBD volume is in 17. Escaping the same labels once per family was
/// ≈ 30 % of the instructions of a 1,000-minor scrape (callgrind, 2026-12-04).
#[derive(Debug, Clone, Default)]
pub struct LabelSet(String);

impl LabelSet {
    pub fn new(labels: &[(&'static str, &str)]) -> LabelSet {
        LabelSet::default().with(labels)
    }

    /// These labels followed by `more`.
    pub fn with(&self, more: &[(&'static str, &str)]) -> LabelSet {
        // Sized once: growing from a clone, pushes one piece at a time, cost a realloc per piece.
        let extra: usize = more.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut text = String::with_capacity(self.0.len() + extra);
        text.push_str(&self.0);
        append_labels(&mut text, !self.0.is_empty(), more);
        LabelSet(text)
    }
}

/// `k="v"` for each label, comma-separated, after a comma if `after_labels` (the text already
/// ends in a label of the same set).
fn append_labels(text: &mut String, after_labels: bool, labels: &[(&'static str, &str)]) {
    for (i, (k, v)) in labels.iter().enumerate() {
        if after_labels || i > 0 {
            text.push(',');
        }
        text.push_str(k);
        text.push_str("=\"");
        escape_into(text, v);
        text.push('"');
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Gauge,
    Counter,
    /// Upper bounds of the finite buckets, ascending; `+Inf` is added when written.
    Histogram(&'static [f64]),
}

#[derive(Debug)]
struct FamilyData {
    /// The exposed sample name (a counter's ends in `_total`).
    name: &'static str,
    /// Written with a period added, as prometheus-client's `Registry::register` did.
    help: &'static str,
    kind: Kind,
    samples: Mutex<Samples>,
}

impl FamilyData {
    fn lock(&self) -> MutexGuard<'_, Samples> {
        // A poisoned lock only means a panic elsewhere mid-push; the data is still usable.
        self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The families of one scrape, in the order they were registered (the order they are written).
#[derive(Debug, Default)]
pub struct Registry {
    families: Vec<Arc<FamilyData>>,
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

    /// `set` with a label set spelled once for several families.
    pub fn set_in(&self, labels: &LabelSet, v: f64) {
        let mut s = self.0.lock();
        let base = s.push_set(labels);
        s.series.push((base, v));
    }
}

/// A counter family whose values are kept elsewhere (kernel counters, the agent's own): set, not
/// incremented. A negative or non-finite value is not a counter value and is left out.
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

    /// `set` with a label set spelled once for several families.
    pub fn set_in(&self, labels: &LabelSet, v: f64) {
        if v.is_finite() && v >= 0.0 {
            let mut s = self.0.lock();
            let base = s.push_set(labels);
            s.series.push((base, v));
        }
    }
}

/// A histogram family whose observations are kept elsewhere.
#[derive(Clone)]
pub struct HistogramFam(Arc<FamilyData>);

impl HistogramFam {
    /// One series: `per_bucket[i]` observations fell in bucket `i` (not cumulative), one more
    /// entry than the family has bounds (the last is above every bound). Left out when the
    /// counts do not match the bounds.
    pub fn set(&self, labels: &[(&'static str, &str)], per_bucket: &[u64], sum: f64) {
        let Kind::Histogram(bounds) = self.0.kind else {
            return;
        };
        if per_bucket.len() != bounds.len() + 1 {
            return;
        }
        let mut total = 0u64;
        let cumulative: Vec<u64> = per_bucket
            .iter()
            .map(|n| {
                total = total.saturating_add(*n);
                total
            })
            .collect();
        let mut s = self.0.lock();
        let base = s.push_labels(labels);
        s.hists.push((base, sum, total, cumulative));
    }
}

impl Registry {
    fn family(&mut self, name: &'static str, help: &'static str, kind: Kind) -> Arc<FamilyData> {
        let f = Arc::new(FamilyData {
            name,
            help,
            kind,
            samples: Mutex::new(Samples::default()),
        });
        self.families.push(f.clone());
        f
    }

    /// The exposition in `format`, as a string.
    pub fn to_text(&self, format: Format) -> String {
        let mut out = Vec::with_capacity(self.size_hint());
        self.encode(format, &mut out, &mut |_| Ok(()))
            .unwrap_or_default();
        // Only `&'static str`s, label values (whole `&str`s) and ASCII were written.
        String::from_utf8(out).unwrap_or_default()
    }

    /// The OpenMetrics text (what tests and fuzz harnesses check).
    pub fn to_openmetrics(&self) -> String {
        self.to_text(Format::OpenMetrics)
    }

    /// The exposition in `format`, written to `out` (a gzip encoder, say) in chunks of about
    /// 64 KiB: neither the whole text is built first nor is `out` called per sample.
    pub fn write(&self, format: Format, out: &mut impl Write) -> std::io::Result<()> {
        const CHUNK: usize = 64 * 1024;
        let mut buf = Vec::with_capacity(CHUNK + 4096);
        self.encode(format, &mut buf, &mut |b: &mut Vec<u8>| {
            if b.len() >= CHUNK {
                out.write_all(b)?;
                b.clear();
            }
            Ok(())
        })?;
        out.write_all(&buf)
    }

    /// Roughly the length of the text, to size buffers: the label sets plus a line's other
    /// parts per sample.
    pub fn size_hint(&self) -> usize {
        let mut n = 64;
        for f in &self.families {
            let s = f.lock();
            let lines = s.series.len() + s.hists.iter().map(|h| h.3.len() + 2).sum::<usize>();
            n += f.help.len() + 3 * f.name.len() + 32;
            n += s.text.len() + lines * (f.name.len() + 16);
        }
        n
    }

    /// Every family into `buf`; `flush` is offered the buffer after each series and may drain it.
    fn encode(
        &self,
        format: Format,
        buf: &mut Vec<u8>,
        flush: &mut dyn FnMut(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        for f in &self.families {
            let s = f.lock();
            if s.is_empty() {
                // A family with no series (no resync running, no DRBD 9) is left out entirely.
                continue;
            }
            write_metadata(buf, f, format);
            let labels_of = |r: &Range<u32>| {
                s.text
                    .as_bytes()
                    .get(r.start as usize..r.end as usize)
                    .unwrap_or(b"")
            };
            for (base, v) in &s.series {
                let labels = labels_of(base);
                buf.extend_from_slice(f.name.as_bytes());
                if !labels.is_empty() {
                    buf.push(b'{');
                    buf.extend_from_slice(labels);
                    buf.push(b'}');
                }
                buf.push(b' ');
                write_value(buf, *v);
                buf.push(b'\n');
                flush(buf)?;
            }
            if let Kind::Histogram(bounds) = f.kind {
                let mut le = dtoa::Buffer::new();
                for (base, sum, count, cumulative) in &s.hists {
                    let labels = labels_of(base);
                    for (suffix, v) in [("_sum", *sum), ("_count", *count as f64)] {
                        buf.extend_from_slice(f.name.as_bytes());
                        buf.extend_from_slice(suffix.as_bytes());
                        if !labels.is_empty() {
                            buf.push(b'{');
                            buf.extend_from_slice(labels);
                            buf.push(b'}');
                        }
                        buf.push(b' ');
                        write_value(buf, v);
                        buf.push(b'\n');
                    }
                    for (i, n) in cumulative.iter().enumerate() {
                        let bound = bounds.get(i).map_or("+Inf", |b| le.format(*b));
                        buf.extend_from_slice(f.name.as_bytes());
                        buf.extend_from_slice(b"_bucket{");
                        buf.extend_from_slice(labels);
                        if !labels.is_empty() {
                            buf.push(b',');
                        }
                        for piece in ["le=\"", bound, "\"} "] {
                            buf.extend_from_slice(piece.as_bytes());
                        }
                        buf.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes());
                        buf.push(b'\n');
                    }
                    flush(buf)?;
                }
            }
        }
        if format == Format::OpenMetrics {
            buf.extend_from_slice(b"# EOF\n");
        }
        Ok(())
    }
}

/// `# HELP` and `# TYPE`. OpenMetrics names a counter family without `_total` (its samples have
/// it); classic text names it as its samples are named.
fn write_metadata(buf: &mut Vec<u8>, f: &FamilyData, format: Format) {
    let (name, kind) = match f.kind {
        Kind::Gauge => (f.name, "gauge"),
        Kind::Counter if format == Format::OpenMetrics => {
            (f.name.strip_suffix("_total").unwrap_or(f.name), "counter")
        }
        Kind::Counter => (f.name, "counter"),
        Kind::Histogram(_) => (f.name, "histogram"),
    };
    for piece in [
        "# HELP ",
        name,
        " ",
        f.help,
        ".\n# TYPE ",
        name,
        " ",
        kind,
        "\n",
    ] {
        buf.extend_from_slice(piece.as_bytes());
    }
}

fn escape_into(text: &mut String, v: &str) {
    // Label values are short (a resource, a minor, a VM's name) and almost never need escaping:
    // a plain scan is cheaper there than setting up memchr3's SIMD search.
    if !v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        text.push_str(v);
        return;
    }
    let mut last = 0;
    for i in memchr::memchr3_iter(b'\\', b'"', b'\n', v.as_bytes()) {
        // `i` is at an ASCII byte, so a char boundary: `get` never fails here.
        text.push_str(v.get(last..i).unwrap_or(""));
        text.push_str(match v.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        last = i + 1;
    }
    text.push_str(v.get(last..).unwrap_or(""));
}

/// Whole numbers (every state, byte and event counter) as integers, as other exporters write
/// them: shorter, and cheaper to format and to parse. Others as the shortest decimal that reads
/// back the same (`dtoa`), non-finite ones as both formats spell them.
fn write_value(buf: &mut Vec<u8>, v: f64) {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        buf.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
    } else if v.is_nan() {
        buf.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        buf.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else {
        buf.extend_from_slice(dtoa::Buffer::new().format(v).as_bytes());
    }
}

/// Register a gauge family under its full exposed name.
pub fn gauge(reg: &mut Registry, name: &'static str, help: &'static str) -> GaugeFam {
    GaugeFam(reg.family(name, help, Kind::Gauge))
}

/// Register a counter family; `name` is the exposed sample name and must end in `_total`.
pub fn counter(reg: &mut Registry, name: &'static str, help: &'static str) -> CounterFam {
    debug_assert!(
        name.ends_with("_total"),
        "counter {name} must end in _total"
    );
    CounterFam(reg.family(name, help, Kind::Counter))
}

/// Register a histogram family with these finite bucket bounds (ascending).
pub fn histogram(
    reg: &mut Registry,
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
) -> HistogramFam {
    debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
    HistogramFam(reg.family(name, help, Kind::Histogram(bounds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: &[f64] = &[0.5, 1.0, 2.5];

    fn sample() -> Registry {
        let mut reg = Registry::default();
        let g = gauge(&mut reg, "x_state", "A state");
        g.set(&[("a", "1"), ("b", "q\"u\\o\nte")], 1.0);
        g.set(&[("a", "")], 0.25);
        g.set(&[], -3.0);
        let c = counter(&mut reg, "x_bytes_total", "Bytes");
        c.set(&[("dev", "d0")], 5.0);
        c.set(&[("dev", "d1")], -1.0);
        c.set(&[("dev", "d2")], f64::NAN);
        c.set(&[("dev", "d3")], 1.5e16);
        let _empty = gauge(&mut reg, "x_empty", "Never set");
        let h = histogram(&mut reg, "x_seconds", "Durations", BOUNDS);
        h.set(&[("action", "start")], &[1, 0, 2, 1], 7.25);
        h.set(&[("action", "bad")], &[1, 2], 1.0);
        let bare = histogram(&mut reg, "y_seconds", "Bare", BOUNDS);
        bare.set(&[], &[0, 0, 0, 0], 0.0);
        let odd = gauge(&mut reg, "x_odd", "Odd values");
        odd.set(&[("v", "nan")], f64::NAN);
        odd.set(&[("v", "inf")], f64::INFINITY);
        odd.set(&[("v", "-inf")], f64::NEG_INFINITY);
        odd.set(&[("v", "big")], 1e20);
        reg
    }

    /// `sample()` in OpenMetrics.
    const OPENMETRICS: &str = "# HELP x_state A state.\n# TYPE x_state gauge\n\
             x_state{a=\"1\",b=\"q\\\"u\\\\o\\nte\"} 1\nx_state{a=\"\"} 0.25\nx_state -3\n\
             # HELP x_bytes Bytes.\n# TYPE x_bytes counter\n\
             x_bytes_total{dev=\"d0\"} 5\nx_bytes_total{dev=\"d3\"} 15000000000000000.0\n\
             # HELP x_seconds Durations.\n# TYPE x_seconds histogram\n\
             x_seconds_sum{action=\"start\"} 7.25\nx_seconds_count{action=\"start\"} 4\n\
             x_seconds_bucket{action=\"start\",le=\"0.5\"} 1\n\
             x_seconds_bucket{action=\"start\",le=\"1.0\"} 1\n\
             x_seconds_bucket{action=\"start\",le=\"2.5\"} 3\n\
             x_seconds_bucket{action=\"start\",le=\"+Inf\"} 4\n\
             # HELP y_seconds Bare.\n# TYPE y_seconds histogram\n\
             y_seconds_sum 0\ny_seconds_count 0\ny_seconds_bucket{le=\"0.5\"} 0\n\
             y_seconds_bucket{le=\"1.0\"} 0\ny_seconds_bucket{le=\"2.5\"} 0\n\
             y_seconds_bucket{le=\"+Inf\"} 0\n\
             # HELP x_odd Odd values.\n# TYPE x_odd gauge\n\
             x_odd{v=\"nan\"} NaN\nx_odd{v=\"inf\"} +Inf\nx_odd{v=\"-inf\"} -Inf\nx_odd{v=\"big\"} 100000000000000000000.0\n\
             # EOF\n";

    #[test]
    fn openmetrics_text() {
        assert_eq!(sample().to_openmetrics(), OPENMETRICS);
    }

    /// Classic text is the same text but for the two things the formats spell differently: a
    /// counter's HELP and TYPE carry the `_total` of its samples, and there is no `# EOF`.
    #[test]
    fn classic_text() {
        let want = OPENMETRICS
            .replace(
                "# HELP x_bytes Bytes.\n# TYPE x_bytes counter\n",
                "# HELP x_bytes_total Bytes.\n# TYPE x_bytes_total counter\n",
            )
            .replace("# EOF\n", "");
        assert_ne!(want, OPENMETRICS);
        assert_eq!(sample().to_text(Format::Classic), want);
    }

    /// Written in chunks to a writer, the text is the same as built whole, in either format,
    /// for a family large enough to need many chunks.
    #[test]
    fn chunked_write_is_the_whole_text() {
        let mut reg = sample();
        let g = gauge(&mut reg, "z_many", "Many series");
        for i in 0..20_000 {
            g.set(&[("minor", &i.to_string()), ("resource", "r")], i as f64);
        }
        for format in [Format::OpenMetrics, Format::Classic] {
            let mut out = Vec::new();
            reg.write(format, &mut out).unwrap();
            let whole = reg.to_text(format);
            assert!(whole.len() > 4 * 64 * 1024);
            assert_eq!(String::from_utf8(out).unwrap(), whole);
            assert!(reg.size_hint() > whole.len() / 2, "{}", reg.size_hint());
        }
    }

    /// A label set spelled once writes what the same labels given to `set` write, escaping
    /// included, for gauges and counters (a counter's negative value still left out).
    #[test]
    fn label_set_writes_what_set_writes() {
        let volume = [("resource", "r\"0\\x"), ("volume", "0"), ("minor", "7\n")];
        let peer = [("peer", "b")];
        let both: Vec<_> = volume.iter().chain(peer.iter()).copied().collect();
        let by_set = {
            let mut reg = Registry::default();
            let g = gauge(&mut reg, "v_g", "G");
            let c = counter(&mut reg, "v_bytes_total", "C");
            g.set(&volume, 1.0);
            g.set(&both, 2.0);
            g.set(&[], 3.0);
            c.set(&both, 4.0);
            c.set(&volume, -1.0);
            reg.to_openmetrics()
        };
        let by_set_in = {
            let mut reg = Registry::default();
            let g = gauge(&mut reg, "v_g", "G");
            let c = counter(&mut reg, "v_bytes_total", "C");
            let l = LabelSet::new(&volume);
            let pl = l.with(&peer);
            g.set_in(&l, 1.0);
            g.set_in(&pl, 2.0);
            g.set_in(&LabelSet::new(&[]), 3.0);
            c.set_in(&pl, 4.0);
            c.set_in(&l, -1.0);
            reg.to_openmetrics()
        };
        assert!(by_set.contains(r#"resource="r\"0\\x""#), "{by_set}");
        assert!(by_set.contains("\nv_g 3\n"), "{by_set}");
        assert!(!by_set.contains("-1"), "{by_set}");
        assert_eq!(by_set_in, by_set);
    }

    #[test]
    fn empty_registry() {
        let reg = Registry::default();
        assert_eq!(reg.to_openmetrics(), "# EOF\n");
        assert_eq!(reg.to_text(Format::Classic), "");
    }
}
