//! Parser benchmarks (criterion). Run: `cargo bench --bench parsers`.
//! Each group reports time per whole input and throughput in elements (minors / resources), so
//! the per-element cost is 1 / throughput.
//!
//! Every group runs twice: with wall-clock time (`drbd_*`) and with the thread's CPU time
//! (`cpu_drbd_*`). On a shared 2-vCPU machine the wall clock also counts other tenants' work;
//! the CPU-time figures are the parser's own cost.
//!
//! DRBD goal: `/proc/drbd` at 1,000 minors in at most 1 µs per minor.

use std::fmt::Write;
use std::hint::black_box;

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vmwarden::probe::drbd::{generate_proc_drbd, parse_proc_drbd, parse_status_json};

/// CPU time of the calling thread (excludes time the thread waited for a CPU).
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we own; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Same unit (nanoseconds) as the wall clock, so its formatter fits.
        WallTime.formatter()
    }
}

fn proc8_group<M: Measurement>(c: &mut Criterion<M>, name: &str) {
    let mut g = c.benchmark_group(name);
    for minors in [100usize, 1_000] {
        let text = generate_proc_drbd(minors);
        g.throughput(Throughput::Elements(minors as u64));
        g.bench_with_input(
            BenchmarkId::new("parse_proc_drbd", minors),
            &text,
            |b, t| {
                b.iter(|| {
                    let p = parse_proc_drbd(black_box(t));
                    debug_assert!(p.errors.is_empty());
                    p
                })
            },
        );
    }
    g.finish();
}

/// `drbdsetup status --json` as drbd-utils 9 prints it: `resources` resources with one volume
/// and two peers each, every tenth resyncing to one of them with full sync details.
fn status_json(resources: usize) -> String {
    let mut s = String::from("[\n");
    for i in 0..resources {
        if i > 0 {
            s.push_str(",\n");
        }
        let syncing = i % 10 == 3;
        let _ = write!(
            s,
            "{{\n  \"name\": \"vm-{i}-disk-0\",\n  \"node-id\": 0,\n  \"role\": \"Primary\",\n  \
             \"suspended\": false,\n  \"write-ordering\": \"flush\",\n  \"devices\": [\n    {{\n      \
             \"volume\": 0,\n      \"minor\": {minor},\n      \"disk-state\": \"UpToDate\",\n      \
             \"client\": false,\n      \"quorum\": true,\n      \"size\": 20971520,\n      \
             \"read\": {r},\n      \"written\": {w},\n      \"al-writes\": 12,\n      \
             \"bm-writes\": 3,\n      \"upper-pending\": 0,\n      \"lower-pending\": 0\n    }} ],\n  \
             \"connections\": [",
            minor = 1000 + i,
            r = i * 4096,
            w = i * 8192,
        );
        for (j, peer) in ["node-b", "node-c"].iter().enumerate() {
            let sync_here = syncing && j == 1;
            let _ = write!(
                s,
                "{sep}\n    {{\n      \"peer-node-id\": {id},\n      \"name\": \"{peer}\",\n      \
                 \"connection-state\": \"Connected\", \n      \"congested\": false,\n      \
                 \"peer-role\": \"Secondary\",\n      \"ap-in-flight\": 0,\n      \"rs-in-flight\": 0,\n      \
                 \"peer_devices\": [\n        {{\n          \"volume\": 0,\n          \
                 \"replication-state\": \"{repl}\",\n          \"peer-disk-state\": \"{pds}\",\n          \
                 \"peer-client\": false,\n          \"resync-suspended\": \"no\",\n          \
                 \"received\": 0,\n          \"sent\": {sent},\n          \"out-of-sync\": {oos},\n          \
                 \"pending\": 0,\n          \"unacked\": 0,\n          \"has-sync-details\": {det},\n          \
                 \"has-online-verify-details\": false,\n          \"percent-in-sync\": {pis}{comma}\n",
                sep = if j == 0 { "" } else { "," },
                id = j + 1,
                repl = if sync_here { "SyncSource" } else { "Established" },
                pds = if sync_here { "Inconsistent" } else { "UpToDate" },
                sent = i * 8192,
                oos = if sync_here { 10_485_760 } else { 0 },
                det = sync_here,
                pis = if sync_here { "50.00" } else { "100.00" },
                comma = if sync_here { "," } else { "" },
            );
            if sync_here {
                s.push_str(
                    "          \"rs-total\": 41943040,\n          \"rs-dt-start-ms\": 60000,\n          \
                     \"rs-paused-ms\": 0,\n          \"rs-dt0-ms\": 3000,\n          \"rs-db0-sectors\": 600000,\n          \
                     \"rs-dt1-ms\": 18000,\n          \"rs-db1-sectors\": 3600000,\n          \"rs-failed\": 0,\n          \
                     \"rs-same-csum\": 0,\n          \"want\": 0.00,\n          \"db0/dt0 [MiB/s]\": 97.66,\n          \
                     \"db1/dt1 [MiB/s]\": 97.66,\n          \"estimated-seconds-to-finish\": 210,\n          \
                     \"db/dt [MiB/s]\": 170.67,\n          \"percent-resync-done\": 50.00\n",
                );
            }
            s.push_str("        } ]\n    }");
        }
        s.push_str(" ]\n}");
    }
    s.push_str("\n]\n");
    s
}

fn json9_group<M: Measurement>(c: &mut Criterion<M>, name: &str) {
    let mut g = c.benchmark_group(name);
    for resources in [100usize, 1_000] {
        let text = status_json(resources);
        g.throughput(Throughput::Elements(resources as u64));
        g.bench_with_input(
            BenchmarkId::new("parse_status_json", resources),
            &text,
            |b, t| b.iter(|| parse_status_json(black_box(t))),
        );
    }
    g.finish();
}

fn drbd_proc8(c: &mut Criterion) {
    proc8_group(c, "drbd_proc8");
}

fn drbd_json9(c: &mut Criterion) {
    json9_group(c, "drbd_json9");
}

fn drbd_proc8_cpu(c: &mut Criterion<ThreadCpuTime>) {
    proc8_group(c, "cpu_drbd_proc8");
}

fn drbd_json9_cpu(c: &mut Criterion<ThreadCpuTime>) {
    json9_group(c, "cpu_drbd_json9");
}

/// The other parsers, on the real captured fixtures (one node's worth of output each).
fn other_parsers(c: &mut Criterion) {
    let fx = |p: &str| {
        std::fs::read_to_string(format!("{}/tests/fixtures/{p}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_default()
    };
    let report = fx("lvm/h1-fullreport.json");
    let lockctl = fx("lvm/h1-lvmlockctl-info.txt");
    let status = fx("sanlock/h1-status-D.txt");
    let gets = fx("sanlock/h1-gets-h1.txt");
    let xml = fx("libvirt/domain-running.xml");
    let mut g = c.benchmark_group("fixtures");
    g.bench_function("lvm_fullreport", |b| {
        b.iter(|| vmwarden::probe::lvm::parse_fullreport(black_box(&report)))
    });
    g.bench_function("lvmlockctl_info", |b| {
        b.iter(|| vmwarden::probe::lvm::parse_lockctl_info(black_box(&lockctl)))
    });
    g.bench_function("sanlock_status_d", |b| {
        b.iter(|| vmwarden::probe::sanlock::parse_status(black_box(&status)))
    });
    g.bench_function("sanlock_gets", |b| {
        b.iter(|| vmwarden::probe::sanlock::parse_gets(black_box(&gets)))
    });
    g.bench_function("libvirt_domain_xml", |b| {
        b.iter(|| vmwarden::probe::libvirt::parse_domain_xml(black_box(&xml)))
    });
    g.finish();
}

criterion_group!(benches, drbd_proc8, drbd_json9, other_parsers);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = drbd_proc8_cpu, drbd_json9_cpu
}
criterion_main!(benches, cpu);
